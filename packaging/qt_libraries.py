"""The system libraries the PySide6 wheel's Qt needs on Linux, derived from what it actually links.

The wheel bundles Qt itself, but its platform plugins and libraries link system libraries (X11/xcb, EGL/GL,
fontconfig, D-Bus, xkbcommon, Wayland …). Which ones is read from the installed wheel with `ldd`: the Python
modules the viewer imports, the platform plugins it may start with (xcb on X11, offscreen for tests and
screenshots, wayland), the xcb GL integrations and the compose input context xcb loads, and every Qt library
those pull in. `packaging/qt-libraries.tsv` holds the result, soname → Debian package; `linux-sysdeps.sh`
installs the packages whose sonames are missing, `make package` lists them for the bundle, and
`tests/test_sysdeps.py` fails when the wheel links a library the list lacks.

    .venv/bin/python packaging/qt_libraries.py            # what is linked, what is missing here
    .venv/bin/python packaging/qt_libraries.py --write    # regenerate the list (every library installed)
    .venv/bin/python packaging/qt_libraries.py --bundle dist/MedEdgeViewer/_internal/PySide6
                                                          # what the built desktop bundle takes from the system
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

LIST = Path(__file__).resolve().parent / "qt-libraries.tsv"
# What the viewer loads from the wheel (PySide6 modules by name, plugins by path below Qt/plugins).
MODULES = ("QtCore", "QtGui", "QtWidgets", "QtOpenGL", "QtOpenGLWidgets", "QtSvg", "QtTest")
PLUGINS = ("platforms/libqxcb.so", "platforms/libqoffscreen.so", "platforms/libqwayland.so",
           "xcbglintegrations/libqxcb-glx-integration.so", "xcbglintegrations/libqxcb-egl-integration.so",
           "platforminputcontexts/libcomposeplatforminputcontextplugin.so",
           "wayland-shell-integration/libxdg-shell.so")
_LINE = re.compile(r"^\s*(\S+)\s+=>\s+(not found|\S+)")


def wheel_files(root: Path | None = None) -> list[Path]:
    """The Qt files the viewer loads, in the installed PySide6 or in `root` (a bundle's PySide6 folder)."""
    bundle = root is not None
    if root is None:
        import PySide6

        root = Path(PySide6.__file__).resolve().parent
    modules = {name: next(root.glob(f"{name}.*so"), None) for name in MODULES}
    absent = [name for name, path in modules.items() if path is None]
    if absent and not bundle:  # a bundle leaves out what its app never imports (QtTest, for one)
        raise SystemExit(f"the PySide6 in {root} has no {', '.join(absent)}")
    plugins = [root / "Qt" / "plugins" / plugin for plugin in PLUGINS]
    return [path for path in modules.values() if path is not None] + [p for p in plugins if p.exists() or not bundle]


def linked(root: Path | None = None) -> dict[str, str | None]:
    """soname → where it resolves on this machine (None: not found) for every library outside the wheel (or
    outside the bundle whose PySide6 folder is `root`)."""
    files = wheel_files(root)
    inside = str(files[0].resolve().parent.parent)  # site-packages, or the bundle's _internal
    found: dict[str, str | None] = {}
    for file in files:
        # A PyInstaller bundle runs with LD_LIBRARY_PATH at its _internal folder (its bootloader sets it), where it
        # keeps the copies of system libraries it collected: resolve as the running app does.
        env = {**os.environ, "LD_LIBRARY_PATH": inside} if root is not None else None
        output = subprocess.run(["ldd", str(file)], capture_output=True, text=True, check=True, env=env).stdout
        for line in output.splitlines():
            match = _LINE.match(line)
            if not match:
                continue
            soname, target = match.groups()
            if target.startswith(inside):
                continue  # in the wheel (or the bundle) itself
            found[soname] = None if target == "not found" else (found.get(soname) or target)
    return dict(sorted(found.items()))


def read_list(path: Path = LIST) -> dict[str, str]:
    """soname → Debian package, from the list."""
    rows = [line.split("\t") for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return {soname: package for soname, package in rows}


def package_of(path: str) -> str:
    """The Debian package that installed the library file `path` (its real file, not a -dev symlink)."""
    output = subprocess.run(["dpkg", "-S", Path(path).name], capture_output=True, text=True).stdout
    for line in output.splitlines():
        package, installed = line.split(": ", 1)
        if Path(installed).name == Path(path).name and not package.endswith("-dev"):
            return package.split(":")[0]
    raise SystemExit(f"no Debian package owns {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {LIST.name} from this machine")
    parser.add_argument("--bundle", type=Path, metavar="PYSIDE6_DIR", help="a built bundle's PySide6 folder: "
                        "list the system libraries it needs, with their packages")
    args = parser.parse_args()
    libraries = linked(args.bundle)
    if args.bundle:
        for soname, target in libraries.items():
            print(f"{soname}\t{package_of(target) if target else 'NOT FOUND'}")
        return 1 if None in libraries.values() else 0
    missing = [soname for soname, target in libraries.items() if target is None]
    if args.write:
        if missing:
            print(f"install these first (ldd: not found): {' '.join(missing)}", file=sys.stderr)
            return 1
        rows = [f"{soname}\t{package_of(target)}" for soname, target in libraries.items()]
        LIST.write_text("# soname\tDebian package: generated by packaging/qt_libraries.py --write from the PySide6 "
                        "wheel's ldd; do not edit\n" + "\n".join(rows) + "\n")
        print(f"{LIST}: {len(rows)} libraries")
        return 0
    listed = read_list()
    for soname, target in libraries.items():
        print(f"{soname}\t{listed.get(soname, '(not in the list)')}\t{target or 'NOT FOUND'}")
    return 1 if missing or set(libraries) - set(listed) else 0


if __name__ == "__main__":
    sys.exit(main())
