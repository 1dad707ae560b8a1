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
