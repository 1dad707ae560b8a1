"""The project as a user installs it (non-editable): the wheel carries its packages and their data (the model
settings, the Triton model template), and `inspect` and `infer` run from a fresh environment without the
source tree."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from conftest import ROOT


@pytest.mark.timeout(900)
def test_the_wheel_runs_inspect_and_infer_from_a_fresh_environment(tmp_path, shared_cxr):
    source = tmp_path / "source"  # built from a copy: the build leaves nothing in the checkout
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__",
                                                                "tests", "bench", "docs", "shared"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                            "--wheel-dir", str(tmp_path / "wheels"), str(source)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "wheels").glob("mededge_viewer-*.whl"))

    # A fresh environment; its dependencies (torch, Qt, …) are this one's, added by path — which does not run
    # this environment's editable-install hook, so the project itself comes only from the wheel.
    fresh = tmp_path / "fresh"
    venv.create(fresh, with_pip=False)
    python = fresh / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["MEDEDGE_DATA_DIR"] = str(tmp_path / "data")
    installed = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)],
                               capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert installed.returncode == 0, installed.stderr

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)

    where = run(str(python), "-c", "import app, inference, viewer.widgets; from inference.edge.repository import "
                "PYTHON_MODEL; from inference.models.settings import RESOURCES; print(inference.__file__); "
                "print(PYTHON_MODEL.is_file() and (RESOURCES / 'models.yaml').is_file())")
    assert where.returncode == 0, where.stderr
    assert where.stdout.split() == [str(site / "inference" / "__init__.py"), "True"]  # not the checkout's

    inspected = run(str(fresh / "bin" / "mededge"), "inspect", str(shared_cxr / "dicom/CR-MONO1-10-chest"))
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["modality"] == "CR"
    inferred = run(str(fresh / "bin" / "mededge"), "infer", "--runtime", "torch",
                   str(shared_cxr / "raster/txv_nih_00027426_000_512px.png"))
    assert inferred.returncode == 0, inferred.stderr
    findings = json.loads(inferred.stdout)
    assert findings["mode"] == "local" and len(findings["probabilities"]) == 14
