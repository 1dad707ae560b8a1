#!/bin/sh
# Install the Debian packages the viewer needs at run time (and, with `test`, the tools the tests drive), only
# those that are missing; as a normal user, print the apt-get line instead.
#
#   sh packaging/linux-sysdeps.sh run     # make run: the system libraries PySide6's Qt links (xcb, EGL, fonts …)
#   sh packaging/linux-sysdeps.sh test    # make test: those, plus dcmtk, dicom3tools, Xvfb, xdotool, xwd, Weston, Orthanc and GNOME Keyring
#
# The libraries come from packaging/qt-libraries.tsv (soname → package), which packaging/qt_libraries.py derives
# from the wheel with ldd; a library counts as present when the dynamic linker knows its soname.
set -e
here=$(dirname "$0")
PATH="$PATH:/sbin:/usr/sbin"   # ldconfig, for a user whose PATH lacks them
missing=""
present=$(ldconfig -p)
while IFS="$(printf '\t')" read -r soname package; do
    case "$soname" in ''|'#'*) continue ;; esac
    printf '%s\n' "$present" | grep -q "^[[:space:]]*$soname " && continue
    case " $missing " in *" $package "*) ;; *) missing="$missing $package" ;; esac
done < "$here/qt-libraries.tsv"

# Qt draws text with the system's fonts (through fontconfig); a minimal system may have none.
fonts=$(find /usr/share/fonts /usr/local/share/fonts -type f \( -name '*.ttf' -o -name '*.otf' -o -name '*.pfb' \) \
    2>/dev/null | head -n 1)
[ -n "$fonts" ] || missing="$missing fonts-dejavu-core"

tools=""
if [ "${1:-run}" = test ]; then
    # dsrdump: the DICOM SR check; Xvfb, xdotool, xwd: the viewer on a real X server (tests/test_x11.py)
    command -v dsrdump >/dev/null 2>&1 || tools="$tools dcmtk"
    # dciodvfy, dcentvfy: what the product writes checked against the DICOM standard's IODs (tests/test_conformance.py)
    command -v dciodvfy >/dev/null 2>&1 || tools="$tools dicom3tools"
    command -v Xvfb >/dev/null 2>&1 || tools="$tools xvfb"
    command -v xdotool >/dev/null 2>&1 || tools="$tools xdotool"
    command -v xwd >/dev/null 2>&1 || tools="$tools x11-apps"
    # a real Wayland compositor (Weston, nested in Xvfb) for the viewer as a native Wayland client
    command -v weston >/dev/null 2>&1 || tools="$tools weston"
    # a real PACS for tests/test_listen.py (and the PACS client's tests): Orthanc and its DICOMweb plugin
    command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ] || tools="$tools orthanc"
    [ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || tools="$tools orthanc-dicomweb"
    # a real Secret Service for the keyring tests (tests/keyring_service.py): a D-Bus session bus and GNOME Keyring
    command -v dbus-daemon >/dev/null 2>&1 || tools="$tools dbus"
    command -v gnome-keyring-daemon >/dev/null 2>&1 || tools="$tools gnome-keyring"
fi
[ -z "$missing$tools" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages:$missing$tools — install them with: sudo apt-get install$missing$tools" >&2
    exit 1
fi
echo "installing Debian packages:$missing$tools"
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing $tools >/dev/null
