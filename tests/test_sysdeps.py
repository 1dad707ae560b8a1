"""The Debian libraries `make run` installs for Qt are exactly what the installed PySide6 wheel links.

packaging/qt-libraries.tsv is derived from the wheel with ldd (packaging/qt_libraries.py); if a PySide6 update
links another system library, or one is missing on this machine, this test fails and says which.
"""

from __future__ import annotations

import importlib.util

from conftest import ROOT

spec = importlib.util.spec_from_file_location("qt_libraries", ROOT / "packaging" / "qt_libraries.py")
qt_libraries = importlib.util.module_from_spec(spec)
spec.loader.exec_module(qt_libraries)


def test_the_list_names_every_system_library_the_wheel_links_and_each_is_installed():
    linked = qt_libraries.linked()
    listed = qt_libraries.read_list()
    assert "libxcb-icccm.so.4" in linked and "libxcb-keysyms.so.1" in linked  # what issue 18's machine lacked
    unlisted = sorted(set(linked) - set(listed))
    assert not unlisted, f"linked by the wheel, not in {qt_libraries.LIST.name}: {unlisted} " \
                         "(run packaging/qt_libraries.py --write)"
    missing = sorted(soname for soname, where in linked.items() if where is None)
    assert not missing, f"not installed here: {missing} (packaging/linux-sysdeps.sh should have installed " \
                        f"{sorted({listed[s] for s in missing})})"
    assert all(package and " " not in package for package in listed.values())
