"""The import rules of DESIGN.md: inference/, pacs/, security/ and viewer/ outside viewer.widgets stay Qt-free."""

import subprocess
import sys
from pathlib import Path

from conftest import ROOT

QT = ("PySide6", "pyqtgraph", "shiboken6")


def test_import_linter_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache", "--no-logo"], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 5 kept, 0 broken" in done.stdout


def test_headless_modules_import_no_qt():
    """Import every module of inference/ and of viewer/ outside viewer.widgets, transitively.

    The import-linter contract ignores viewer.widgets' own Qt imports, so a headless module
    that imported a widget would slip past it; this catches that case too.
    """
    code = f"""
import importlib, pkgutil, sys
import inference, pacs, security, viewer
names = []
for package in (inference, viewer, pacs, security):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if not info.name.startswith("viewer.widgets"):
            names.append(info.name)
for name in names:
    importlib.import_module(name)
bad = sorted(m for m in sys.modules if m.split(".")[0] in {QT!r})
assert not bad, bad
print(len(names))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 5  # loader, display, voi, radiograph, errors, report, ...


def test_no_import_cycles_and_no_private_names_across_modules():
    """Issue 21: every import runs one way (none back, not even inside a function), and a module's private
    names (`_name`) stay in it."""
    import ast

    import grimp

    packages = ("app", "viewer", "inference", "pacs", "security")
    graph = grimp.build_graph(*packages)
    ours = {m for m in graph.modules if m.split(".")[0] in packages}
    cycles = sorted({tuple(sorted((a, b))) for a in ours for b in graph.find_modules_directly_imported_by(a)
                     if b in ours and graph.chain_exists(importer=b, imported=a)})
    assert not cycles, cycles
    crossing = []
    for path in sorted(p for package in packages for p in (ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in packages:
                crossing += [f"{path.relative_to(ROOT)}: {node.module}.{a.name}" for a in node.names
                             if a.name.startswith("_")]
    assert not crossing, crossing
