"""User-supplied priors: per-image depth or pointmaps from any external model.

For an image `<stem>.<ext>` the folder holds `<stem>.npy` (an (h, w) depth map or an
(h, w, 3) pointmap) or `<stem>.npz` with `depth` or `pts3d` and an optional `conf`. The
map may be smaller than the image; it is taken to cover the whole image. Depth is
unprojected with the image's SfM camera (distortion included), so its points are in the
camera frame.

An `.npz` may also pose its view in a frame shared by every file that carries a pose, as
DUSt3R-style global alignments write them: `cam_from_world` (3x4, that frame to the OpenCV
camera) and `intrinsics` (3x3 at the map's resolution, OpenCV's pixel convention: pixel
centres at integers). Pointmaps of posed files are then in that frame. Some files may carry
a pose and others not. A view SfM did not register is read only when its file carries a
pose (its depth is then unprojected with the file's intrinsics); the cameras stage places it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spars_ns.errors import InputError
from spars_ns.geometry import intrinsics_from_integer_centres, pixel_centres, unproject
from spars_ns.stages.ingest.images import file_sha1
from spars_ns.stages.ingest.stage import load_records
from spars_ns.stages.prior.backend import PriorBackend, PriorInputs
from spars_ns.stages.prior.dense_prior import DensePrior

if TYPE_CHECKING:
    import pycolmap

POSE_KEYS = ("cam_from_world", "intrinsics")


@dataclass
class FilesConfig:
    """Depth or pointmaps from any model, one file per photo (`--prior files`)."""

    dir: Path | None = None
    """Folder of <stem>.npy / <stem>.npz depth or pointmaps."""


class FilesPrior(PriorBackend):
    name = "files"
    Config = FilesConfig

    def check(self) -> None:
        if self.config.dir is None or not Path(self.config.dir).is_dir():
            raise InputError(
                f"--prior files needs --prior-options.files.dir pointing at a folder (got {self.config.dir})."
            )

    def settings(self) -> dict:
        sources = sorted(p for p in Path(self.config.dir).iterdir() if p.suffix in (".npy", ".npz"))
        return {"files": [(p.name, file_sha1(p)) for p in sources]}  # by content, not by folder

    def predict(self, inputs: PriorInputs, bar) -> dict[str, DensePrior]:
        folder = Path(self.config.dir)
        sizes = {r.name: (r.width, r.height) for r in load_records(inputs.scene)}
        task = bar.add_task("Reading prior files", total=len(inputs.registered) + len(inputs.unregistered))
        priors = {}
        for image in inputs.registered:
            priors[image.name] = load_file_prior(folder, image.name, inputs.model.camera(image.camera_id))
            bar.advance(task)
        for name in inputs.unregistered:  # placed by the cameras stage when their files pose them
            prior = load_file_prior(folder, name, None, sizes[name])
            if prior is not None:
                priors[name] = prior
            bar.advance(task)
        return priors


def _read(path: Path) -> tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray]]:
    """(depth or pts3d, conf or None, the pose arrays present) of a prior file."""
    try:
        if path.suffix == ".npy":
            return np.load(path), None, {}
        with np.load(path) as data:
            keys = [k for k in ("pts3d", "depth") if k in data]
            if not keys:
                raise InputError(
                    f"{path}: has neither 'depth' nor 'pts3d' (found {', '.join(data.files) or 'nothing'})."
                )
            pose = {k: np.asarray(data[k], np.float64) for k in POSE_KEYS if k in data}
            return data[keys[0]], (data.get("conf", None)), pose
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read this prior file ({err}).") from err


def prior_file(folder: Path, image_name: str) -> Path | None:
    """`<stem>.npz` or `<stem>.npy` of an image in `folder` (None when neither exists)."""
    stem = Path(image_name).stem
    found = [p for p in (folder / f"{stem}.npz", folder / f"{stem}.npy") if p.exists()]
    if len(found) == 2:
        raise InputError(f"Both {found[0]} and {found[1]} exist for {image_name}; keep the one to use.")
    return found[0] if found else None


def load_file_prior(
    folder: Path,
    image_name: str,
    camera: pycolmap.Camera | None,
    photo_size: tuple[int, int] | None = None,
) -> DensePrior | None:
    """The prior of `image_name` from `folder`.

    `camera` is the view's SfM camera: it gives the photo's size and unprojects depth. A view
    SfM did not register has none: give its photo's `photo_size` (width, height); it gets a
    prior only when its file exists and carries a pose (None otherwise).
    """
    path = prior_file(folder, image_name)
    if path is None:
        if camera is None:
            return None
        stem = Path(image_name).stem
        raise InputError(f"No prior for {image_name}: expected {folder / f'{stem}.npz'} or {folder / f'{stem}.npy'}.")
    values, conf, pose = _read(path)
    if camera is None and not pose:
        return None
    values = np.asarray(values, np.float64)
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[..., 0]
    if not (values.ndim == 2 or (values.ndim == 3 and values.shape[2] == 3)):
        raise InputError(f"{path}: shape {values.shape} is neither a depth map (h, w) nor a pointmap (h, w, 3).")
    h, w = values.shape[:2]
    if conf is None:
        conf = np.ones((h, w))
    conf = np.asarray(conf, np.float64)
    if conf.shape != (h, w):
        raise InputError(f"{path}: conf has shape {conf.shape}, expected {(h, w)} to match the prior.")
    for name, array in (("prior", values), ("conf", conf)):
        if not np.isfinite(array).all():
            raise InputError(f"{path}: {name} contains {int((~np.isfinite(array)).sum())} NaN or infinite values.")
    width, height = (camera.width, camera.height) if camera is not None else photo_size
    check_covers_photo(path, (h, w), (width, height))
    if values.ndim == 2 and not (values > 0).any():  # pointmaps may be in any frame: only depth has a sign to check
        raise InputError(
            f"{path}: no pixel has a positive depth (from {values.min():g} to {values.max():g}); depth is the "
            "distance in front of the camera."
        )
    cam_from_world, intrinsics = check_pose(path, pose) if pose else (np.full((3, 4), np.nan), np.full((3, 3), np.nan))
    scale = (width / w, height / h)
    if values.ndim == 2:
        conf = np.where(values > 0, conf, 0.0)
        values = unproject_depth(values, camera, scale) if camera is not None else unproject_pinhole(values, intrinsics)
    return DensePrior(values.astype(np.float32), conf.astype(np.float32), scale, (0.0, 0.0), cam_from_world, intrinsics)


def check_pose(path: Path, pose: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A file's (cam_from_world, intrinsics), refused with what is wrong; intrinsics in the DensePrior's pixel
    convention."""
    missing = [k for k in POSE_KEYS if k not in pose]
    if missing:
        present = next(k for k in POSE_KEYS if k in pose)
        raise InputError(f"{path}: has '{present}' but no '{missing[0]}'; a pose needs both (or neither).")
    cam_from_world, intrinsics = pose["cam_from_world"], pose["intrinsics"]
    if cam_from_world.shape != (3, 4):
        four_by_four = cam_from_world.shape == (4, 4)
        hint = (
            " (a 4x4 camera-to-world, as DUSt3R's get_im_poses() gives, must be inverted and cut to 3x4)"
            if four_by_four
            else ""
        )
        raise InputError(
            f"{path}: cam_from_world has shape {cam_from_world.shape}, expected (3, 4): world to OpenCV camera{hint}."
        )
    if intrinsics.shape != (3, 3):
        raise InputError(f"{path}: intrinsics has shape {intrinsics.shape}, expected (3, 3) at the map's resolution.")
    for name, array in (("cam_from_world", cam_from_world), ("intrinsics", intrinsics)):
        if not np.isfinite(array).all():
            raise InputError(f"{path}: {name} contains NaN or infinite values.")
    rotation = cam_from_world[:, :3]
    deviation = np.abs(rotation @ rotation.T - np.eye(3)).max()
    if deviation > 1e-3 or np.linalg.det(rotation) < 0:
        raise InputError(
            f"{path}: the rotation of cam_from_world is not a rotation (|R R^T - I| up to {deviation:.2g}, "
            f"det {np.linalg.det(rotation):.3g}); scale belongs in the points, not in the pose."
        )
    if not (intrinsics[0, 0] > 0 and intrinsics[1, 1] > 0 and np.allclose(intrinsics[2], [0, 0, 1])):
        raise InputError(
            f"{path}: intrinsics must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0; got "
            f"{intrinsics.tolist()}."
        )
    return cam_from_world, intrinsics_from_integer_centres(intrinsics)


def check_covers_photo(path: Path, shape: tuple[int, int], photo_size: tuple[int, int]) -> None:
    """A prior may be smaller than its photo but must have its proportions (within 2%)."""
    h, w = shape
    width, height = photo_size
    photo, prior = width / height, w / h
    if abs(prior / photo - 1) <= 0.02:
        return
    hint = " only transposed: save it as (height, width)" if abs(h / w / photo - 1) <= 0.02 else ""
    raise InputError(
        f"{path}: the prior is {w}x{h} (width x height) and its photo {width}x{height}; "
        f"the proportions match{hint or ' neither way'}."
    )


def unproject_depth(depth: np.ndarray, camera: pycolmap.Camera, scale: tuple[float, float]) -> np.ndarray:
    """(h, w) z-depth at working pixels -> (h, w, 3) points in the camera frame."""
    h, w = depth.shape
    rays = camera.cam_from_img(
        pixel_centres(h, w)[..., :2].reshape(-1, 2) * np.asarray(scale)
    )  # normalised (x/z, y/z), distortion removed
    rays = np.concatenate([rays, np.ones((len(rays), 1))], 1).reshape(h, w, 3)
    return rays * depth[..., None]


def unproject_pinhole(depth: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """(h, w) z-depth at working pixels -> (h, w, 3) camera-frame points, with working-pixel intrinsics (centres at
    +0.5)."""
    h, w = depth.shape
    return unproject(pixel_centres(h, w).reshape(-1, 3), depth.reshape(-1), intrinsics).reshape(h, w, 3)
