"""What the machine lends this process: the cores it may run on and the memory it has free.

On a cluster node a job gets a share: its cores by CPU affinity, its memory by a control group
(SLURM, Docker, Kubernetes). `os.cpu_count()` and psutil's free memory are the whole node's, so
work sized by them can outgrow the share and be killed; here each is the smaller of the node's and
the share's.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil


def cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def free_memory(proc_cgroup: Path = Path("/proc/self/cgroup"), cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """Bytes this process can still take: the machine's available memory, or less where its control
    group or one above it has a limit (cgroup v2 `memory.max`, v1 `memory.limit_in_bytes`)."""
    free = psutil.virtual_memory().available
    for limit in cgroup_headroom(proc_cgroup, cgroup_root):
        free = min(free, limit)
    return free


def cgroup_headroom(proc_cgroup: Path, cgroup_root: Path) -> list[int]:
    """Limit minus usage of each memory-limited control group from this process's up to the root."""
    if not proc_cgroup.exists():
        return []
    headroom = []
    for line in proc_cgroup.read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one hierarchy
            folder, limit_file, usage_file = cgroup_root, "memory.max", "memory.current"
        elif "memory" in controllers.split(","):
            folder, limit_file, usage_file = cgroup_root / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes"
        else:
            continue
        group = folder / path.lstrip("/")
        for level in [group, *group.parents]:
            if not level.is_relative_to(folder):
                break
            limit, usage = level / limit_file, level / usage_file
            if limit.exists() and usage.exists() and limit.read_text().strip().isdigit():
                headroom.append(max(0, int(limit.read_text()) - int(usage.read_text())))
    return headroom
