"""Shared test set-up: headless Qt, the real radiographs in ../shared/data/cxr."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parent.parent
SHARED_CXR = ROOT.parent / "shared" / "data" / "cxr"


@pytest.fixture(scope="session")
def shared_cxr() -> Path:
    """The real radiographs; CI always has them, a developer without ../shared skips those tests."""
    if not SHARED_CXR.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{SHARED_CXR} is missing: CI runs with ../shared beside the checkout")
        pytest.skip(f"{SHARED_CXR} not present")
    return SHARED_CXR


@pytest.fixture(scope="session", autouse=True)
def _demo_weights_cache(tmp_path_factory):
    """One data folder for the session: demo weights are generated once and reused by every test."""
    folder = tmp_path_factory.mktemp("mededge-data")
    previous = os.environ.get("MEDEDGE_DATA_DIR")
    os.environ["MEDEDGE_DATA_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("MEDEDGE_DATA_DIR", None)
    else:
        os.environ["MEDEDGE_DATA_DIR"] = previous


# How each model of a result ran, as plain text by model name: what the tests compare against.
def cuts(findings) -> dict[str, int]:
    return {kind.value: run.cut for kind, run in findings.models.items()}


def wires(findings) -> dict[str, str]:
    return {kind.value: run.wire.value for kind, run in findings.models.items() if run.wire is not None}


def runtimes(findings) -> dict[str, str]:
    return {kind.value: run.runtime.value for kind, run in findings.models.items()}


def measured(findings) -> dict:
    return {kind: run.measured_ms for kind, run in findings.models.items()}
