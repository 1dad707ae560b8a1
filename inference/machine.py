"""What this machine lets the process use: for bounds that count its CPU (the benchmark's series bound)."""

from __future__ import annotations

import os
from pathlib import Path


def usable_cores() -> float:
    """The cores this process may use: its CPUs, fewer under a CPU quota of its cgroup (v1 `cpu` or v2)."""
    cores = float(len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else float(os.cpu_count() or 1)
    try:
        entries = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return cores
    for entry in entries:
        _, controllers, path = entry.split(":", 2)
        try:
            if "cpu" in controllers.split(","):  # v1: quota and period in µs, quota -1 when none
                folder = Path("/sys/fs/cgroup/cpu") / path.lstrip("/")
                quota = int((folder / "cpu.cfs_quota_us").read_text())
                period = int((folder / "cpu.cfs_period_us").read_text())
            elif not controllers:  # v2: "max 100000" when none
                limit, period_text = (Path("/sys/fs/cgroup") / path.lstrip("/") / "cpu.max").read_text().split()
                quota, period = (-1 if limit == "max" else int(limit)), int(period_text)
            else:
                continue
        except (OSError, ValueError):
            continue
        if quota > 0 and period > 0:
            cores = min(cores, quota / period)
    return cores
