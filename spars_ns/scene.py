"""The processed-scene folder: its paths, its manifest, and writes that never leave half a file.

Every stage records in `manifest.json` a fingerprint of its inputs and config, the
library versions, its seconds and counts. A stage whose recorded fingerprint matches and
whose outputs exist is skipped. A stage that runs first removes its manifest entry, writes
its outputs under temporary names and renames them into place, and records its entry
last: a run killed anywhere in a stage leaves that stage without an entry, so the next run
redoes it instead of trusting half-replaced outputs.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, fields
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from spars_ns.errors import InputError

MANIFEST_VERSION = 1


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-serialisable parts (paths and dataclass values via str)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def library_versions(*names: str) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text)
    os.replace(tmp, path)


def require_free_space(folder: Path, needed: int, what: str) -> None:
    """Refuse, before any work, a step that would fill the disk under `folder`: pycolmap aborts
    the whole process (a failed check in C++, no Python error) when its database cannot be written."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise InputError(
            f"{folder}: {what} needs up to {needed / 2**20:.0f} MiB of disk and {free / 2**20:.1f} MiB are free. "
            f"Free some space, or give another --output; the stages that finished are kept."
        )


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yields an empty temporary folder that replaces `path` only if the block succeeds."""
    tmp = path.with_name(f".{path.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(f".{path.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


class NpzRecord:
    """Mixin of a dataclass of arrays kept as one `.npz` file (its field names are the keys),
    written under a temporary name and renamed in whole."""

    def save(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.partial.npz")
        np.savez_compressed(tmp, **{f.name: getattr(self, f.name) for f in fields(self)})
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path):
        with np.load(path) as data:
            return cls(**{f.name: data[f.name] for f in fields(cls)})


def depth_confidence_path(depth_path: Path) -> Path:
    """Where the confidence of a depth map `depth/<stem>.npy` is kept: beside it, `<stem>.confidence.npy`."""
    return depth_path.with_name(f"{depth_path.stem}.confidence.npy")


def read_depth_map(path: Path) -> np.ndarray:
    """A `depth/<stem>.npy` map or its confidence, (H, W) float32, with a clear error for anything else."""
    try:
        values = np.load(path)
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read it as a .npy array ({err})") from err
    if values.ndim == 3 and values.shape[-1] == 1:
        values = values[..., 0]
    if values.ndim != 2:
        raise InputError(f"{path}: expected an (H, W) array, found shape {values.shape}")
    return values.astype(np.float32)


@dataclass(frozen=True)
class SceneFolder:
    root: Path

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def images_json(self) -> Path:
        return self.root / "images.json"

    @property
    def sfm_dir(self) -> Path:
        return self.root / "sfm"

    @property
    def sparse_dir(self) -> Path:
        return self.root / "sparse" / "0"

    @property
    def sparse_with_test_dir(self) -> Path:
        return self.root / "sparse_with_test" / "0"

    @property
    def prior_dir(self) -> Path:
        return self.root / "prior"

    @property
    def mast3r_cache_dir(self) -> Path:
        return self.root / "cache" / "mast3r"

    @property
    def cameras_dir(self) -> Path:
        return self.root / "cameras"

    @property
    def align_dir(self) -> Path:
        return self.root / "align"

    @property
    def refine_dir(self) -> Path:
        return self.root / "refine"

    @property
    def depth_dir(self) -> Path:
        return self.root / "depth"

    @property
    def transforms_path(self) -> Path:
        return self.root / "transforms.json"

    @property
    def points_path(self) -> Path:
        return self.root / "points.ply"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Held while a process writes the scene: a second process on the same folder is refused
        (it would delete the first one's database). The OS releases it when the process ends."""
        path = self.root / ".lock"
        with open(path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                other = handle.read().strip() or "unknown"
                raise InputError(
                    f"{self.root} is being processed by another process (pid {other}); wait for it to finish, "
                    f"or give another --output."
                ) from None
            handle.truncate(0)
            handle.write(str(os.getpid()))
            handle.flush()
            yield

    def read_manifest(self) -> dict:
        if not self.manifest_path.exists():
            return {"version": MANIFEST_VERSION, "stages": {}}
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"{self.manifest_path}: not valid JSON ({err}); delete it to reprocess the scene.") from err
        if manifest.get("version") != MANIFEST_VERSION:
            return {"version": MANIFEST_VERSION, "stages": {}}
        return manifest

    def begin(self, stage: str, stage_fingerprint: str, outputs: list[Path]) -> bool:
        """Whether `stage` must run. It need not when its recorded fingerprint matches and its
        outputs exist. When it must, its manifest entry is removed first: until `record`, the
        outputs it replaces one by one are never taken for current by a later run."""
        entry = self.read_manifest()["stages"].get(stage)
        if entry and entry["fingerprint"] == stage_fingerprint and all(p.exists() for p in outputs):
            return False
        self.forget(stage)
        return True

    def forget(self, stage: str) -> None:
        manifest = self.read_manifest()
        if manifest["stages"].pop(stage, None) is not None:
            atomic_write_text(self.manifest_path, json.dumps(manifest, indent=2))

    def remove_leftovers(self) -> None:
        """Temporary files and folders (`.<name>.partial[.npz]`, `.<name>.old`) of a run that was killed."""
        for path in [p for pattern in (".*.partial", ".*.partial.*", ".*.old") for p in self.root.rglob(pattern)]:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def record(self, stage: str, stage_fingerprint: str, config: Any, seconds: float, counts: dict, versions: dict) -> None:
        manifest = self.read_manifest()
        manifest["stages"][stage] = {
            "fingerprint": stage_fingerprint,
            "config": json.loads(json.dumps(config, default=str)),
            "versions": versions,
            "seconds": round(seconds, 3),
            "counts": counts,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        atomic_write_text(self.manifest_path, json.dumps(manifest, indent=2))

    def clear(self, stage: str, outputs: list[Path]) -> None:
        """Forget a stage that is switched off: its manifest entry first, then its outputs, so
        that a run killed in between leaves nothing that claims to be current."""
        self.forget(stage)
        for path in outputs:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def stage_entry(self, stage: str) -> dict | None:
        return self.read_manifest()["stages"].get(stage)
