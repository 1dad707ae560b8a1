#!/bin/sh
# Install the Debian libraries PySide6 needs at run time, only those that are missing.
# The PyPI wheels bundle Qt itself but link these system libraries.
set -e
missing=""
need() { ldconfig -p | grep -q "$1" || missing="$missing $2"; }
need 'libEGL.so.1'          libegl1
need 'libGL.so.1'           libgl1
need 'libfontconfig.so.1'   libfontconfig1
need 'libxkbcommon.so.0'    libxkbcommon0
need 'libdbus-1.so.3'       libdbus-1-3
need 'libxkbcommon-x11.so.0' libxkbcommon-x11-0
need 'libxcb-cursor.so.0'   libxcb-cursor0
# A test tool, not a run-time need: tests/test_structured_report.py checks the DICOM SR with dcmtk's dsrdump.
tools=""
command -v dsrdump >/dev/null 2>&1 || tools=" dcmtk"
[ -z "$missing$tools" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    [ -n "$tools" ] && echo "the tests need dcmtk (dsrdump) — install it with: sudo apt-get install$tools" >&2
    [ -z "$missing" ] && exit 0
    echo "Qt needs these Debian packages:$missing — install them with: sudo apt-get install$missing" >&2
    exit 1
fi
echo "installing Debian packages:$missing$tools"
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing $tools >/dev/null
