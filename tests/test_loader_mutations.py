"""Mutation test: damaged copies of the real files load or fail cleanly, each within 5 s.

Truncations at many offsets (header, mid-header, inside pixel data, one byte short) and
seeded random corruptions; the only acceptable outcomes are a Radiograph or a RadiographError.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from viewer.errors import RadiographError
from viewer.loader import load_radiograph
from viewer.radiograph import Radiograph

from conftest import SHARED_CXR

REAL_FILES = sorted(
    str(p.relative_to(SHARED_CXR)) for p in SHARED_CXR.glob("*/*") if p.parent.name != "LICENSES"
) if SHARED_CXR.is_dir() else []

TRUNCATE_AT = (0.002, 0.01, 0.03, 0.1, 0.3, 0.5, 0.8, 0.999)
CORRUPTIONS = 6            # seeded random damages per file
SECONDS_PER_VARIANT = 5.0  # the bound; a hang is caught by pytest-timeout as well


def _truncations(data: bytes) -> list[tuple[str, bytes]]:
    offsets = sorted({max(1, int(len(data) * f)) for f in TRUNCATE_AT} | {132, 300})
    return [(f"truncated@{n}", data[:n]) for n in offsets if n < len(data)]


def _corruptions(data: bytes, seed: int) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(seed)
    variants = []
    for k in range(CORRUPTIONS):
        damaged = bytearray(data)
        start = int(rng.integers(0, len(data) - 64))
        if k % 2:  # overwrite a block with noise
            damaged[start:start + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
        else:      # flip single bits in a short stretch
            for offset in rng.integers(start, start + 64, 8):
                damaged[int(offset)] ^= 1 << int(rng.integers(0, 8))
        variants.append((f"corrupt{k}@{start}", bytes(damaged)))
    return variants


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", REAL_FILES)
def test_damaged_copies_load_or_fail_cleanly(shared_cxr, tmp_path, name):
    data = (shared_cxr / name).read_bytes()
    variants = _truncations(data) + _corruptions(data, seed=sum(name.encode()))
    assert len(variants) >= 12
    outcomes = {"loaded": 0, "refused": 0}
    for label, content in variants:
        path = tmp_path / f"{label}.bin"
        path.write_bytes(content)
        started = time.monotonic()
        try:
            result = load_radiograph(path)
        except RadiographError as exc:
            assert str(exc) and "\n" not in str(exc), label
            outcomes["refused"] += 1
        else:
            assert isinstance(result, Radiograph), label
            assert result.pixels.ndim == 2
            outcomes["loaded"] += 1
        elapsed = time.monotonic() - started
        assert elapsed < SECONDS_PER_VARIANT, f"{label} took {elapsed:.1f} s"
        path.unlink()
    assert outcomes["refused"] >= 1  # a truncation inside the header can never load
