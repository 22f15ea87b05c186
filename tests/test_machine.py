"""The share of a machine a job gets: memory limited by control groups, as SLURM, Docker and
Kubernetes set them, in trees laid out as the kernel lays them out."""

from pathlib import Path

import psutil

from spars_ns.machine import free_memory

GB = 2**30


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_slurm_job_gets_the_memory_its_cgroup_v2_leaves_not_the_nodes(tmp_path):
    root = tmp_path / "cgroup"
    job = root / "system.slice/slurmstepd.scope/job_7"
    write(job / "memory.max", f"{16 * GB}\n")
    write(job / "memory.current", f"{5 * GB}\n")
    write(job / "step_0/memory.max", "max\n")  # no limit of its own: the job's holds
    write(job / "step_0/memory.current", f"{5 * GB}\n")
    proc = tmp_path / "proc_cgroup"
    write(proc, "0::/system.slice/slurmstepd.scope/job_7/step_0\n")
    assert free_memory(proc, root) == min(11 * GB, psutil.virtual_memory().available)


def test_the_tightest_cgroup_v1_memory_limit_on_the_way_up_holds(tmp_path):
    root = tmp_path / "cgroup"
    write(root / "memory/docker/memory.limit_in_bytes", f"{GB}\n")
    write(root / "memory/docker/memory.usage_in_bytes", f"{GB // 4}\n")
    write(root / "memory/docker/abc/memory.limit_in_bytes", f"{8 * GB}\n")
    write(root / "memory/docker/abc/memory.usage_in_bytes", f"{GB // 4}\n")
    proc = tmp_path / "proc_cgroup"
    write(proc, "5:cpuset:/docker/abc\n4:memory:/docker/abc\n0::/\n")
    assert free_memory(proc, root) == min(3 * GB // 4, psutil.virtual_memory().available)


def test_without_a_limit_the_machines_available_memory_is_free(tmp_path):
    root = tmp_path / "cgroup"
    write(root / "memory.max", "max\n")
    write(root / "memory.current", f"{GB}\n")
    proc = tmp_path / "proc_cgroup"
    write(proc, "0::/\n")
    free = free_memory(proc, root)
    assert 0.5 < free / psutil.virtual_memory().available < 2
    assert free_memory(tmp_path / "no_such_file", root) > 0  # no control groups at all (macOS)
