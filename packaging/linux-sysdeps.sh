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
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "Qt needs these Debian packages:$missing — install them with: sudo apt-get install$missing" >&2
    exit 1
fi
echo "installing Debian packages Qt needs:$missing"
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
