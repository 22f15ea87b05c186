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
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from spars_ns.errors import InputError

MANIFEST_VERSION = 1
WRITTEN_BY = "spars-ns"  # in every manifest: what makes a folder a scene of ours
LOCK_NAME = ".lock"
DEFLATED_AT_MOST = 0.7  # a record's array is deflated where a sample shrinks below this share


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


def temporary_path(path: Path, suffix: str = "") -> Path:
    """Where `path` is written before it is renamed into place: `.<name>.partial<suffix>` beside it.
    A scene removes leftovers of a killed run by these names only, next to the paths it owns."""
    return path.with_name(f".{path.name}.partial{suffix}")


def replaced_path(path: Path) -> Path:
    """Where the folder `path` is moved while its replacement is renamed into place."""
    return path.with_name(f".{path.name}.old")


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
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
    tmp = temporary_path(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = replaced_path(path)
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_files(paths: list[Path]) -> Iterator[list[Path]]:
    """Yields a temporary path for each of `paths`, which are written together: once the block
    succeeds, the old files are removed and the new ones renamed in, so that a kill at any point
    leaves some of the new files or none, never a mix of two runs. Temporaries of an earlier
    killed run, and of this one when the block fails, are removed (by their names only)."""

    def remove_temporaries():
        for tmp in temporaries:
            for path in (tmp, temporary_path(tmp), temporary_path(tmp, ".npz")):
                path.unlink(missing_ok=True)

    temporaries = [temporary_path(path, path.suffix) for path in paths]
    remove_temporaries()
    try:
        yield temporaries
    except BaseException:
        remove_temporaries()
        raise
    for path in paths:
        path.unlink(missing_ok=True)
    for tmp, path in zip(temporaries, paths):
        os.replace(tmp, path)


class NpzRecord:
    """Mixin of a dataclass of arrays kept as one `.npz` file (its field names are the keys),
    written under a temporary name and renamed in whole."""

    def save(self, path: Path) -> None:
        tmp = temporary_path(path, ".npz")
        with zipfile.ZipFile(tmp, "w", allowZip64=True) as archive:
            for field in fields(self):
                array = np.asanyarray(getattr(self, field.name))
                member = zipfile.ZipInfo(f"{field.name}.npy")
                member.compress_type = zipfile.ZIP_DEFLATED if deflates(array) else zipfile.ZIP_STORED
                with archive.open(member, "w", force_zip64=True) as stream:
                    np.lib.format.write_array(stream, array, allow_pickle=False)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path):
        with np.load(path) as data:
            return cls(**{f.name: data[f.name] for f in fields(cls)})


def deflates(array: np.ndarray, samples: int = 16, sample_bytes: int = 4096) -> bool:
    """Whether deflating `array` is worth its time, judged on a few samples spread over its bytes.
    Labels, masks, constant confidence and nan-filled maps deflate 50-700 times; a prior's points
    and depth by 15-25% only, at 5 ms a megabyte: a third of a prior run's time went to that."""
    data = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    starts = np.linspace(0, max(len(data) - sample_bytes, 0), samples).astype(int)
    sample = b"".join(data[start : start + sample_bytes].tobytes() for start in np.unique(starts))
    return len(zlib.compress(sample, 1)) < DEFLATED_AT_MOST * len(sample)


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


# The smaller copies a scene may hold for nerfstudio (`SceneFolder.downscaled_dir`): up to 1/32, a 51,200 px
# side within nerfstudio's 1,600.
DOWNSCALE_FACTORS = (2, 4, 8, 16, 32)


TRANSFORMS_PATH_KEYS = ("file_path", "depth_file_path", "mask_path", "ply_file_path")


def read_transforms(transforms_path: Path) -> dict:
    """A scene's nerfstudio `transforms.json`, refused with one line naming it when it cannot be
    read, or when a path in it leads outside the scene's folder (`../x.jpg`, an absolute path, a
    link out): a scene from someone else must not make us read other files of yours."""
    folder = transforms_path.parent.resolve()
    try:
        meta = json.loads(transforms_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{transforms_path}: cannot be read as JSON ({err})") from err
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not isinstance(frames, list) or not frames or not all(isinstance(f, dict) and "file_path" in f for f in frames):
        raise InputError(f'{transforms_path}: no "frames" list whose entries each have a "file_path"')
    for entry in [meta, *frames]:
        for key in TRANSFORMS_PATH_KEYS:
            if key in entry and not (folder / str(entry[key])).resolve().is_relative_to(folder):
                raise InputError(
                    f"{transforms_path}: {key} {entry[key]!r} leads outside the scene folder {folder}; refused"
                )
    return meta


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

    def cache_dir(self, owner: str) -> Path:
        """Where `owner` (a stage's backend) keeps work across runs; listed in the manifest by its stage."""
        return self.root / "cache" / owner

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

    def downscaled_dir(self, kind: str, factor: int) -> Path:
        """nerfstudio's folder of the photos (`images_<factor>`) or depth maps (`depths_<factor>`) at
        1/factor of their size, by file name."""
        return self.root / f"{kind}_{factor}"

    @property
    def transforms_path(self) -> Path:
        return self.root / "transforms.json"

    @property
    def points_path(self) -> Path:
        return self.root / "points.ply"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def layout(self) -> list[Path]:
        """Every path a scene writes at its top levels: the only places where it removes anything
        (with the outputs its manifest records)."""
        return [
            self.images_dir,
            self.images_json,
            self.sfm_dir,
            self.sparse_dir,
            self.sparse_with_test_dir,
            self.prior_dir,
            self.cameras_dir,
            self.align_dir,
            self.refine_dir,
            self.depth_dir,
            *(self.downscaled_dir(kind, factor) for kind in ("images", "depths") for factor in DOWNSCALE_FACTORS),
            self.transforms_path,
            self.points_path,
            self.manifest_path,
        ]

    def claim(self) -> None:
        """Check, before anything is written, that `root` may become or already is this scene: a
        folder that holds anything but a spars-ns scene, or lies inside one, is refused, because a
        scene replaces whole folders (images/, sfm/, depth/, ...) and removes its leftovers."""
        for parent in self.root.parents:
            if is_scene(parent):
                raise InputError(
                    f"--output {self.root} is inside {parent}, a spars-ns scene, which manages its folder as its own. "
                    f"Give an output folder outside it, e.g. --output {parent.parent / (self.root.name + '-spars')}."
                )
        if self.manifest_path.exists():
            self.read_manifest()  # refuses a manifest.json that is not ours
            return
        if self.root.exists() and not self.root.is_dir():
            raise InputError(f"--output {self.root} is a file; give a folder (new or empty).")
        held = sorted(p.name for p in self.root.iterdir() if p.name != LOCK_NAME) if self.root.exists() else []
        if held:
            shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
            raise InputError(
                f"--output {self.root} holds files ({shown}) and is not a spars-ns scene (it has no manifest.json). "
                "Processing writes and replaces folders there, so it never uses a folder of yours: give a new "
                "or empty "
                f"folder, e.g. --output {self.root / 'spars-scene'}."
            )

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Held while a process writes the scene: a second process on the same folder is refused
        (it would delete the first one's database). The OS releases it when the process ends.
        The folder is claimed first, and marked as a scene (an empty manifest) once locked."""
        self.claim()
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / LOCK_NAME
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
            if not self.manifest_path.exists():
                self._write_manifest(new_manifest())
            yield

    def read_manifest(self) -> dict:
        if not self.manifest_path.exists():
            return new_manifest()
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InputError(
                f"{self.manifest_path}: not valid JSON ({err}). Give a new --output, or move this folder aside "
                "and process again."
            ) from err
        problem = manifest_problem(manifest)
        if problem:
            raise InputError(
                f"{self.manifest_path}: not a spars-ns manifest ({problem}): this folder was not made by spars-ns or "
                f"the file was edited, so what it holds cannot be told apart from your files. Give a new --output, "
                f"or move this folder aside and process again."
            )
        if manifest.get("version") != MANIFEST_VERSION:
            return {
                **new_manifest(),
                "stages": {name: {"outputs": entry.get("outputs", [])} for name, entry in manifest["stages"].items()},
            }
        return manifest

    def _write_manifest(self, manifest: dict) -> None:
        atomic_write_text(self.manifest_path, json.dumps(manifest, indent=2))

    def _relative(self, paths: list[Path]) -> list[str]:
        return [str(path.relative_to(self.root)) for path in paths]  # a path outside the scene is a bug: ValueError

    def begin(self, stage: str, stage_fingerprint: str, outputs: list[Path], caches: list[Path] = ()) -> bool:
        """Whether `stage` must run. It need not when its recorded fingerprint matches and its
        outputs exist. When it must, its entry is replaced first by one that lists what it is
        about to write (outputs and caches) and has no fingerprint: until `record`, the outputs it
        replaces one by one are never taken for current by a later run, and are known to be ours.
        What its entry lists from before that it no longer writes (the export's smaller copies of
        other photos) is removed."""
        manifest = self.read_manifest()
        entry = manifest["stages"].get(stage)
        if entry and entry.get("fingerprint") == stage_fingerprint and all(p.exists() for p in outputs):
            return False
        current = set(self._relative([*outputs, *caches]))
        before = set((entry or {}).get("outputs", []))
        manifest["stages"][stage] = {"outputs": sorted(current | before)}
        self._write_manifest(manifest)
        self._remove(before - current)
        return True

    def remove_leftovers(self) -> None:
        """The temporary files and folders of a killed run (`temporary_path`, `replaced_path`), beside
        the paths the scene owns only: never a file of that name anywhere else."""
        recorded = [
            self.root / name for entry in self.read_manifest()["stages"].values() for name in entry.get("outputs", [])
        ]
        for owned in {*self.layout(), *recorded}:
            for path in (temporary_path(owned), temporary_path(owned, ".npz"), replaced_path(owned)):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)

    def record(
        self, stage: str, stage_fingerprint: str, config: Any, seconds: float, counts: dict, versions: dict
    ) -> None:
        manifest = self.read_manifest()
        manifest["stages"][stage] = {
            "fingerprint": stage_fingerprint,
            "outputs": manifest["stages"].get(stage, {}).get("outputs", []),
            "config": json.loads(json.dumps(config, default=str)),
            "versions": versions,
            "seconds": round(seconds, 3),
            "counts": counts,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        self._write_manifest(manifest)

    def clear(self, stage: str, outputs: list[Path]) -> None:
        """Forget a stage that is switched off and remove what its entry says it wrote: first its
        fingerprint, then its outputs, then its entry, so that a run killed in between leaves
        nothing that claims to be current. A stage with no entry wrote nothing here."""
        manifest = self.read_manifest()
        entry = manifest["stages"].get(stage)
        if entry is None:
            return
        written = (
            entry["outputs"] if "outputs" in entry else self._relative(outputs)
        )  # entries from before outputs were recorded
        manifest["stages"][stage] = {"outputs": written}
        self._write_manifest(manifest)
        self._remove(written)
        del manifest["stages"][stage]
        self._write_manifest(manifest)

    def _remove(self, written: Iterable[str]) -> None:
        """Outputs a manifest entry lists, by their names relative to the scene."""
        for path in (self.root / name for name in written):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def stage_entry(self, stage: str) -> dict | None:
        entry = self.read_manifest()["stages"].get(stage)
        return entry if entry and "fingerprint" in entry else None


def new_manifest() -> dict:
    return {"version": MANIFEST_VERSION, "written_by": WRITTEN_BY, "stages": {}}


def manifest_problem(manifest: Any) -> str | None:
    """Why a parsed manifest.json is not one of ours (None if it is). Manifests written before
    `written_by` was added are recognised by their shape."""
    if not isinstance(manifest, dict):
        return "not a JSON object"
    if manifest.get("written_by", WRITTEN_BY) != WRITTEN_BY:
        return f"written by {manifest['written_by']!r}"
    stages = manifest.get("stages")
    if not isinstance(stages, dict):
        return '"stages" is not an object'
    for name, entry in stages.items():
        if not isinstance(entry, dict):
            return f'the entry of stage "{name}" is not an object'
        outputs = entry.get("outputs", [])
        if not isinstance(outputs, list) or not all(isinstance(o, str) and is_inside(o) for o in outputs):
            return f'the outputs of stage "{name}" are not paths inside the scene'
    return None


def is_inside(relative: str) -> bool:
    """Whether a path recorded relative to a folder stays inside it."""
    path = Path(relative)
    return not path.is_absolute() and ".." not in path.parts and path.parts != ()


def is_scene(folder: Path) -> bool:
    """Whether `folder` holds a manifest.json of ours."""
    try:
        return manifest_problem(json.loads((folder / "manifest.json").read_text())) is None
    except (OSError, ValueError):
        return False
