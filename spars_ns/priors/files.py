"""User-supplied priors: per-image depth or pointmaps from any external model.

For an image `<stem>.<ext>` the folder holds `<stem>.npy` (an (h, w) depth map or an
(h, w, 3) pointmap) or `<stem>.npz` with `depth` or `pts3d` and an optional `conf`. The
map may be smaller than the image; it is taken to cover the whole image. Depth is
unprojected with the image's SfM camera (distortion included), so its points are in the
camera frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pycolmap

from spars_ns.errors import InputError
from spars_ns.priors import DensePrior


def _read(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        if path.suffix == ".npy":
            return np.load(path), None
        with np.load(path) as data:
            keys = [k for k in ("pts3d", "depth") if k in data]
            if not keys:
                raise InputError(f"{path}: has neither 'depth' nor 'pts3d' (found {', '.join(data.files) or 'nothing'}).")
            return data[keys[0]], (data["conf"] if "conf" in data else None)
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read this prior file ({err}).") from err


def load_file_prior(folder: Path, image_name: str, camera: pycolmap.Camera) -> DensePrior:
    stem = Path(image_name).stem
    candidates = [folder / f"{stem}.npz", folder / f"{stem}.npy"]
    found = [p for p in candidates if p.exists()]
    if not found:
        raise InputError(f"No prior for {image_name}: expected {candidates[0]} or {candidates[1]}.")
    if len(found) == 2:
        raise InputError(f"Both {found[0]} and {found[1]} exist for {image_name}; keep the one to use.")
    path = found[0]
    values, conf = _read(path)
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
    check_covers_photo(path, (h, w), camera)
    if values.ndim == 2 and not (values > 0).any():  # pointmaps may be in any frame: only depth has a sign to check
        raise InputError(f"{path}: no pixel has a positive depth (from {values.min():g} to {values.max():g}); depth is the "
                         "distance in front of the camera.")
    scale = (camera.width / w, camera.height / h)
    if values.ndim == 2:
        conf = np.where(values > 0, conf, 0.0)
        values = unproject_depth(values, camera, scale)
    return DensePrior(values.astype(np.float32), conf.astype(np.float32), scale, (0.0, 0.0))


def check_covers_photo(path: Path, shape: tuple[int, int], camera: pycolmap.Camera) -> None:
    """A prior may be smaller than its photo but must have its proportions (within 2%)."""
    h, w = shape
    photo, prior = camera.width / camera.height, w / h
    if abs(prior / photo - 1) <= 0.02:
        return
    hint = " only transposed: save it as (height, width)" if abs(h / w / photo - 1) <= 0.02 else ""
    raise InputError(
        f"{path}: the prior is {w}x{h} (width x height) and its photo {camera.width}x{camera.height}; "
        f"the proportions match{hint or ' neither way'}."
    )


def unproject_depth(depth: np.ndarray, camera: pycolmap.Camera, scale: tuple[float, float]) -> np.ndarray:
    """(h, w) z-depth at working pixels -> (h, w, 3) points in the camera frame."""
    h, w = depth.shape
    cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    xy = np.stack([cols.ravel() * scale[0], rows.ravel() * scale[1]], 1)
    rays = camera.cam_from_img(xy)  # normalised (x/z, y/z), distortion removed
    rays = np.concatenate([rays, np.ones((len(rays), 1))], 1).reshape(h, w, 3)
    return rays * depth[..., None]
