"""Stereo dense prior: two-view stereo on SfM's cameras, no learned weights.

Each registered training view is paired with its `partners` training views that share the
most SfM points with it. Each pair is rectified (cv2.stereoRectify), matched by OpenCV's
semi-global block matching (left-right checked), and the disparity is read back along the
view's own rays as depth. The disparity search is bounded by the disparities of the SfM
points both views see. A pixel is kept where at least `min_agreeing` partners give depths
within `agreement` of their median; its confidence is the share of partners that agree.

The depth is in SfM's units and camera frame, like a `files` depth prior, so alignment
fits close to the identity and drops what disagrees with SfM. COLMAP's own dense stereo
(pycolmap's `patch_match_stereo`) needs a CUDA build that the PyPI wheels are not, so
rectification and matching come from OpenCV and only the glue is ours.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from spars_ns.errors import InputError
from spars_ns.geometry import intrinsics_to_integer_centres, relative_pose, transform, working_intrinsics
from spars_ns.stages.prior.backend import PriorBackend, PriorInputs
from spars_ns.stages.prior.dense_prior import DensePrior


@dataclass
class StereoConfig:
    """Two-view stereo on SfM's cameras (`--prior stereo`)."""

    max_size: int = 640
    """Long side of the working resolution (the prior's and the matcher's)."""
    partners: int = 3
    """Views matched with each view: those sharing the most SfM points with it (others in reserve
    where none of those gives depth that passes the check against SfM's points)."""


# Measured with scripts/bench_stereo.py on fox and the Strecha scenes (BENCHMARKS.md, "Stereo prior"):
MIN_AGREEING = 1  # partners whose depths must agree for a pixel to be kept (a view with fewer: all of them)
AGREEMENT = 0.02  # relative depth difference within which partners agree
# A pair's depth is dropped when it places more than this share of the SfM points it has depth at
# over 5% off: a wrong rectification or a repeated pattern, wrong beyond those points.
MAX_PAIR_DISAGREEMENT = 0.2
# Views kept in reserve per partner, next in order of shared SfM points, for a view none of whose
# partners gives depth that passes the check (fox 12: 0089's three partners match the wallpaper
# wrongly, its fourth, its neighbour 0078, is right). Only then: reserve pairs added beside good
# ones cost fox 6 0.6 dB (BENCHMARKS.md, "Partners in reserve").
CANDIDATES_PER_PARTNER = 2
MIN_TEXTURE = 1.0  # grey-level standard deviation over 3x3 pixels below which a pixel is too flat to match
BLOCK_SIZE = 5  # matching window of semi-global block matching, in working pixels (odd)
# The search spans the SfM points' disparities (1st to 99th percentile), widened by this share of
# their spread (and 8 pixels) on each side, and is capped (pixels; also at most half the image
# width): a wider range is cut to the part around the SfM points' median disparity.
DISPARITY_MARGIN = 0.25
MAX_DISPARITIES = 256


def check_stereo(config: StereoConfig) -> None:
    """Refuse settings the matcher cannot take, before any work."""
    problems = [
        (config.partners < 1, f"partners must be at least 1, got {config.partners}"),
        (config.max_size < 64, f"max-size must be at least 64 pixels, got {config.max_size}"),
    ]
    for failed, message in problems:
        if failed:
            raise InputError(f"--prior-options.stereo.{message}.")


@dataclass
class StereoView:
    """A view as stereo needs it: its photo, its SfM camera (pycolmap.Camera) and pose, and
    the SfM points it sees (world frame) to bound the disparity search."""

    image: Path
    camera: object
    cam_from_world: np.ndarray  # (3, 4)
    point_ids: np.ndarray  # (N,) SfM point ids
    points: np.ndarray  # (N, 3) world frame

    def points_in_camera(self, keep: np.ndarray | slice = slice(None)) -> np.ndarray:
        """The SfM points (those `keep` selects) in this view's camera frame."""
        return transform(self.points[keep], self.cam_from_world)


def working_size(camera, max_size: int) -> tuple[int, int]:
    scale = min(1.0, max_size / max(camera.width, camera.height))
    return max(1, round(camera.width * scale)), max(1, round(camera.height * scale))


def load_gray(view: StereoView, size: tuple[int, int]) -> np.ndarray:
    with Image.open(view.image) as photo:
        if photo.size != (view.camera.width, view.camera.height):
            raise InputError(
                f"{view.image}: {photo.size[0]}x{photo.size[1]} pixels, but its SfM camera is "
                f"{view.camera.width}x{view.camera.height}; was the photo replaced after processing?"
            )
        gray = np.asarray(photo.convert("L"))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA)


def pinhole(camera, size: tuple[int, int]) -> np.ndarray:
    """The camera's pinhole part at working size, in OpenCV's pixel convention (centres at integers)."""
    scale = (camera.width / size[0], camera.height / size[1])
    return intrinsics_to_integer_centres(working_intrinsics(camera.calibration_matrix(), scale, (0.0, 0.0)))


def rays(camera, size: tuple[int, int]) -> np.ndarray:
    """(h, w, 3) camera-frame rays (z = 1) through the working pixel centres, distortion removed."""
    w, h = size
    cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    xy = np.stack([cols.ravel() * camera.width / w, rows.ravel() * camera.height / h], 1)
    normalised = camera.cam_from_img(xy)
    return np.concatenate([normalised, np.ones((len(xy), 1))], 1).reshape(h, w, 3)


def rectify_map(
    camera,
    source: tuple[int, int],
    rect_from_cam: np.ndarray,
    projection: np.ndarray,
    size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """cv2.remap maps from a rectified image of `size` to the working photo of size `source`,
    through the real (distorted) camera."""
    w, h = size
    cols, rows = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    rect = np.linalg.solve(projection[:, :3], np.stack([cols.ravel(), rows.ravel(), np.ones(w * h)]))
    cam = rect_from_cam.T @ rect
    in_front = cam[2] > 1e-9
    xy = np.full((w * h, 2), -1e6)
    xy[in_front] = camera.img_from_cam(cam[:, in_front].T)
    map_x = (xy[:, 0] * source[0] / camera.width - 0.5).reshape(h, w).astype(np.float32)
    map_y = (xy[:, 1] * source[1] / camera.height - 0.5).reshape(h, w).astype(np.float32)
    return map_x, map_y


def pair_depth(ref: StereoView, other: StereoView, config: StereoConfig) -> np.ndarray:
    """z-depth along the working pixels of `ref` from stereo with `other`; nan where unmatched."""
    size = working_size(ref.camera, config.max_size)
    other_size = working_size(other.camera, config.max_size)
    nothing = np.full(size[::-1], np.nan)
    rotation, translation = relative_pose(ref.cam_from_world, other.cam_from_world)
    translation = translation.reshape(3, 1)  # a column: OpenCV 5 rejects a translation of shape (3,)
    # flags=0: each rectified view keeps its own principal point, so that converging views
    # (around an object) keep their common part in frame.
    r1, r2, p1, p2, *_ = cv2.stereoRectify(
        pinhole(ref.camera, size),
        None,
        pinhole(other.camera, other_size),
        None,
        size,
        rotation,
        translation,
        flags=0,
        alpha=-1,
    )
    if not (np.isfinite(p1).all() and np.isfinite(p2).all()) or np.abs(p1[:2, 2]).max() > 10 * max(size):
        return nothing  # an epipole in the image (forward motion): no rectification
    axis = int(abs(p2[1, 3]) > abs(p2[0, 3]))  # OpenCV rectifies vertically where the baseline is mostly vertical
    focal_baseline, offset = (
        -p2[axis, 3],
        p1[axis, 2] - p2[axis, 2],
    )  # d = x_ref - x_other = focal_baseline / z + offset

    # The disparities of the SfM points both views see bound the search.
    rect_depth = (ref.points_in_camera(np.isin(ref.point_ids, other.point_ids)) @ r1.T)[:, 2]
    rect_depth = rect_depth[rect_depth > 0]
    if len(rect_depth) < 3:
        return nothing
    points_disparity = focal_baseline / rect_depth + offset
    sign = 1.0 if np.median(points_disparity) >= 0 else -1.0  # mirrored so that the search is positive
    low, high = np.percentile(sign * points_disparity, [1, 99])
    margin = 8 + DISPARITY_MARGIN * (high - low)
    low, high = low - margin, high + margin
    lowest = int(np.floor(low))
    count = int(np.ceil((high - lowest) / 16)) * 16

    def matching_frame(image: np.ndarray) -> np.ndarray:  # rectified -> baseline along rows, disparities positive
        image = image.T if axis else image
        return image[:, ::-1] if sign < 0 else image

    left = matching_frame(
        cv2.remap(load_gray(ref, size), *rectify_map(ref.camera, size, r1, p1, size), cv2.INTER_LINEAR)
    )
    right = matching_frame(
        cv2.remap(load_gray(other, other_size), *rectify_map(other.camera, other_size, r2, p2, size), cv2.INTER_LINEAR)
    )
    width = left.shape[1]
    # The matcher finds nothing in its first `count` columns: a wider range than half the width
    # is cut to the part around the points' median disparity.
    cap = min(MAX_DISPARITIES, width // 2) // 16 * 16
    if count > cap:
        lowest = int(np.clip(np.median(sign * points_disparity) - cap / 2, lowest, lowest + count - cap))
        count = cap
    if count < 16 or abs(lowest) >= width - count:
        return nothing
    # The other image shifted by the smallest disparity: the matcher searches from 0, which keeps
    # its search inside the image for wide baselines (and allows negative disparities).
    shifted = np.zeros_like(right)
    if lowest >= 0:
        shifted[:, lowest:] = right[:, : width - lowest]
    else:
        shifted[:, : width + lowest] = right[:, -lowest:]
    block = BLOCK_SIZE
    matcher = cv2.StereoSGBM_create(
        minDisparity=0,
        numDisparities=count,
        blockSize=block,
        P1=8 * block**2,
        P2=32 * block**2,
        disp12MaxDiff=1,
        uniquenessRatio=10,
        speckleWindowSize=100,
        speckleRange=2,
        mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY,
    )
    found = matcher.compute(np.ascontiguousarray(left), shifted).astype(np.float32) / 16
    found[found < 0] = np.nan  # unmatched
    disparity = sign * (matching_frame(found) + lowest)  # back to the rectified frame (mirror and transpose undone)
    disparity = np.ascontiguousarray(disparity.T if axis else disparity)

    # Back along ref's rays: each working pixel's rectified position, the disparity there.
    ray = rays(ref.camera, size) @ r1.T  # rectified frame
    projected = ray @ p1[:, :3].T
    u = (projected[..., 0] / projected[..., 2]).astype(np.float32)
    v = (projected[..., 1] / projected[..., 2]).astype(np.float32)
    sampled = cv2.remap(disparity, u, v, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        depth = focal_baseline / (sampled - offset) / ray[..., 2]  # rectified depth over the ray's rectified z
    depth[~(ray[..., 2] > 0) | ~(depth > 0)] = np.nan
    return depth


def fuse(depths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(k, h, w) depths from k partners (nan where unmatched) -> depth, the mean of those within
    `agreement` of the pixel's median, and conf, the share of partners among them; conf 0 where
    fewer than `min_agreeing` agree (depth 1 there, so that the record's points stay finite)."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # pixels that no partner matched
        median = np.nanmedian(depths, 0)
        agrees = np.abs(depths - median) <= AGREEMENT * median
    count = agrees.sum(0)
    depth = np.where(agrees, depths, 0).sum(0) / np.maximum(count, 1)
    needed = min(MIN_AGREEING, len(depths))
    conf = np.where(count >= max(needed, 1), count / max(len(depths), 1), 0.0)
    return np.where(conf > 0, depth, 1.0), conf


def textured(gray: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood varies by at least `min_texture` grey levels (standard
    deviation): in flat regions (sky, walls in shadow) the matcher's window only sees the
    edges around them, and it pulls their depth to the nearest textured surface."""
    values = gray.astype(np.float32)
    mean = cv2.blur(values, (3, 3))
    variance = cv2.blur(values * values, (3, 3)) - mean * mean
    return np.sqrt(np.maximum(variance, 0)) >= MIN_TEXTURE


def disagreement_with_points(depth: np.ndarray, view: StereoView, size: tuple[int, int]) -> float:
    """The share of the SfM points at which `depth` (working pixels) is known that it places more
    than 5% off their depth (0 where it knows none)."""
    cam = view.points_in_camera()
    ahead = cam[:, 2] > 0
    xy = view.camera.img_from_cam(cam[ahead]) * [size[0] / view.camera.width, size[1] / view.camera.height]
    cols, rows = np.floor(xy).astype(int).T
    inside = (cols >= 0) & (cols < size[0]) & (rows >= 0) & (rows < size[1])
    found = depth[rows[inside], cols[inside]]
    truth = cam[ahead][inside, 2]
    known = np.isfinite(found)
    return float((np.abs(found[known] - truth[known]) > 0.05 * truth[known]).mean()) if known.any() else 0.0


def checked_pair_depths(ref: StereoView, others: list[StereoView], config: StereoConfig) -> list[np.ndarray]:
    """Pair depths of `ref` with `others`, in order, that pass the check against SfM's points; at
    most `config.partners` of them."""
    size = working_size(ref.camera, config.max_size)
    depths = []
    for other in others:
        if len(depths) == config.partners:
            break
        pair = pair_depth(ref, other, config)
        # A pair that contradicts SfM's points is wrong in many more places.
        if np.isfinite(pair).any() and disagreement_with_points(pair, ref, size) <= MAX_PAIR_DISAGREEMENT:
            depths.append(pair)
    return depths


def stereo_prior(ref: StereoView, candidates: list[StereoView], config: StereoConfig) -> DensePrior:
    """The stereo prior of `ref` (camera-frame points at the working resolution) from its first
    `config.partners` candidates, or from the rest where none of those passes the check."""
    size = working_size(ref.camera, config.max_size)
    partners, reserve = candidates[: config.partners], candidates[config.partners :]
    depths = checked_pair_depths(ref, partners, config) or checked_pair_depths(ref, reserve, config)
    # Unmatched rows up to the partners asked for, so that conf stays the share of them that agree.
    depths += [np.full(size[::-1], np.nan)] * (min(config.partners, len(candidates)) - len(depths))
    depth, conf = fuse(np.stack(depths) if depths else np.empty((0, *size[::-1])))
    conf[~textured(load_gray(ref, size))] = 0.0
    points = rays(ref.camera, size) * depth[..., None]
    scale = (ref.camera.width / size[0], ref.camera.height / size[1])
    return DensePrior(points.astype(np.float32), conf.astype(np.float32), scale, (0.0, 0.0))


def partner_candidates(views: dict[str, StereoView], partners: int) -> dict[str, list[str]]:
    """Each view's `CANDIDATES_PER_PARTNER * partners` views with the most SfM points in common
    (ties by name), most first."""
    chosen = {}
    for name, view in views.items():
        shared = {other: int(np.isin(view.point_ids, v.point_ids).sum()) for other, v in views.items() if other != name}
        ranked = sorted((o for o in shared if shared[o] > 0), key=lambda o: (-shared[o], o))
        chosen[name] = ranked[: CANDIDATES_PER_PARTNER * partners]
    return chosen


def views_from_model(model, images, images_dir: Path) -> dict[str, StereoView]:
    """StereoViews of registered pycolmap `images` of `model`, their photos in `images_dir`."""
    views = {}
    for image in images:
        ids = np.array([p.point3D_id for p in image.points2D if p.has_point3D()], dtype=np.int64)
        points = np.array([model.points3D[i].xyz for i in ids]).reshape(-1, 3)
        views[image.name] = StereoView(
            images_dir / image.name,
            model.camera(image.camera_id),
            image.cam_from_world().matrix(),
            ids,
            points,
        )
    return views


class StereoPrior(PriorBackend):
    """Needs SfM's cameras: registered views only."""

    name = "stereo"
    Config = StereoConfig
    libraries = ("opencv-python",)

    def check(self) -> None:
        check_stereo(self.config)

    def predict(self, inputs: PriorInputs, bar) -> dict[str, DensePrior]:
        views = views_from_model(inputs.model, inputs.registered, inputs.scene.images_dir)
        candidates = partner_candidates(views, self.config.partners)
        task = bar.add_task(f"Stereo on {len(views)} views, {self.config.partners} partners each", total=len(views))
        priors = {}
        for name, view in views.items():
            priors[name] = stereo_prior(view, [views[p] for p in candidates[name]], self.config)
            bar.advance(task)
        return priors
