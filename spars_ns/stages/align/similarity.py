"""SPARS3R's two-stage alignment of a dense prior onto the SfM frame.

Global fusion alignment: per image, the SfM keypoints that have a triangulated point are
paired with the prior point at that pixel, and one Sim3 maps the prior onto the SfM
points (LO-RANSAC, then a least-squares refit on the inliers). Semantic outlier
alignment: the correspondences that the global fit leaves as outliers seed regions
(SAM masks or superpixels); each region holding enough of them gets its own Sim3 from
the correspondences inside it, and is rejected when that fit is poor.

Thresholds are fractions of the scene depth (the median depth of SfM points in their
cameras), so they do not depend on the reconstruction's arbitrary scale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pycolmap

from spars_ns.geometry import transform
from spars_ns.stages.base import SEED
from spars_ns.stages.prior.dense_prior import DensePrior

# Measured with scripts/bench_align.py (BENCHMARKS.md, "Alignment"):
INLIER_THRESHOLD = 0.01  # RANSAC inlier distance, as a fraction of the scene depth
MIN_CORRESPONDENCES = 10  # fewer SfM correspondences than this: the image keeps its SfM points only
MIN_REGION_OUTLIERS = 5  # outliers a region must hold to get its own Sim3
MIN_REGION_INLIER_RATIO = 0.6  # a region's own fit must explain this share of its correspondences, or it is rejected
REJECTED_REGIONS = "drop"  # pixels of a rejected region are dropped ("global": kept with the global fit, worse)

REGION_GLOBAL, REGION_DROPPED = 0, -1


@dataclass
class Sim3Fit:
    matrix: np.ndarray  # (3, 4): scale * rotation | translation, tgt_from_src
    inliers: np.ndarray  # (N,) bool

    def apply(self, points: np.ndarray) -> np.ndarray:
        return transform(points, self.matrix)


@dataclass
class ImageAlignment:
    points: np.ndarray  # (h, w, 3) prior points in the SfM frame (nan where dropped or invalid)
    region_ids: np.ndarray  # (h, w) int32: 0 global, k > 0 the k-th accepted region, -1 dropped
    inlier_mask: np.ndarray  # (h, w) bool: pixels of correspondences that are global inliers
    correspondences_xy: np.ndarray  # (N, 2) original pixels
    residual_global: np.ndarray  # (N,) distance to the SfM point after the global fit
    residual_final: np.ndarray  # (N,) after region fits
    report: dict = field(default_factory=dict)


def fit_sim3(src: np.ndarray, tgt: np.ndarray, threshold: float, seed: int) -> Sim3Fit | None:
    """tgt_from_src by LO-RANSAC, refit by least squares on its inliers."""
    if len(src) < 3:
        return None
    options = pycolmap.RANSACOptions()
    options.max_error = threshold
    options.random_seed = seed
    estimate = pycolmap.estimate_sim3d_robust(src, tgt, options)
    if estimate is None:
        return None
    inliers = np.asarray(estimate["inlier_mask"], bool)
    refit = pycolmap.estimate_sim3d(src[inliers], tgt[inliers]) if inliers.sum() >= 3 else None
    matrix = (refit or estimate["tgt_from_src"]).matrix()
    residual = np.linalg.norm(transform(src, matrix) - tgt, axis=1)
    return Sim3Fit(matrix, residual < threshold)


def correspondences(model: pycolmap.Reconstruction, image: pycolmap.Image) -> tuple[np.ndarray, np.ndarray]:
    """(original pixel xy (N, 2), SfM point (N, 3)) of the image's triangulated keypoints."""
    xy, world = [], []
    for point2d in image.points2D:
        if point2d.has_point3D():
            xy.append(point2d.xy)
            world.append(model.point3D(point2d.point3D_id).xyz)
    return np.asarray(xy, float).reshape(-1, 2), np.asarray(world, float).reshape(-1, 3)


def scene_depth(model: pycolmap.Reconstruction) -> float:
    """Median depth of the SfM points in the cameras that see them."""
    depths = []
    for image in model.images.values():
        if not image.has_pose:
            continue
        cam_from_world = image.cam_from_world().matrix()
        ids = [p.point3D_id for p in image.points2D if p.has_point3D()]
        if ids:
            xyz = np.array([model.point3D(i).xyz for i in ids])
            depths.append(depth_in_camera(xyz, cam_from_world))
    return float(np.median(np.concatenate(depths))) if depths else 1.0


RegionProposer = Callable[[np.ndarray], list[np.ndarray]]
"""Outlier positions (N, 2) in working pixels -> label maps (h, w), coarse to fine: 0 none,
k > 0 region k. A region rejected at one level is tried again as the finer level's regions;
rejection at the finest level drops (or keeps globally aligned) its pixels."""


def align_image(
    prior: DensePrior,
    xy: np.ndarray,
    world: np.ndarray,
    propose_regions: RegionProposer | None,
    threshold: float,
) -> ImageAlignment | None:
    """Align one image's prior given its SfM correspondences (original pixels `xy`, SfM
    points `world`): the global fit, then, with `propose_regions`, the region fits.

    Returns None when there are too few correspondences for a fit.
    """
    prior_points, conf = prior.sample(xy)
    xy, world, prior_points = xy[conf > 0], world[conf > 0], prior_points[conf > 0]
    report = {"correspondences": len(xy)}
    if len(xy) < MIN_CORRESPONDENCES:
        return None
    global_fit = fit_sim3(prior_points, world, threshold, SEED)
    if global_fit is None:
        return None
    residual_global = np.linalg.norm(global_fit.apply(prior_points) - world, axis=1)
    report.update(
        inlier_ratio=float(global_fit.inliers.mean()), residual_global_median=float(np.median(residual_global))
    )

    h, w = prior.shape
    flat = prior.pts3d.reshape(-1, 3).astype(np.float64)
    aligned = global_fit.apply(flat)
    region_ids = np.zeros(h * w, np.int32)
    residual_final = residual_global.copy()
    accepted, rejected = [], []

    cols_rows = np.clip(np.floor(prior.to_working(xy)).astype(int), 0, [w - 1, h - 1])
    corr_pixel = cols_rows[:, 1] * w + cols_rows[:, 0]
    if propose_regions is not None and not global_fit.inliers.all():
        levels = propose_regions(cols_rows[~global_fit.inliers] + 0.5)
        claimed = np.zeros(h * w, bool)  # pixels of accepted regions, coarser levels first
        for level, regions in enumerate(levels):
            finest = level == len(levels) - 1
            labels = regions.ravel()
            corr_region = np.where(claimed[corr_pixel], 0, labels[corr_pixel])
            outlier_regions, counts = np.unique(corr_region[~global_fit.inliers], return_counts=True)
            for label, count in zip(outlier_regions, counts):
                if label <= 0 or count < MIN_REGION_OUTLIERS:
                    continue
                inside = corr_region == label
                fit = fit_sim3(prior_points[inside], world[inside], threshold, SEED)
                pixels = (labels == label) & ~claimed
                if fit is None or fit.inliers.mean() < MIN_REGION_INLIER_RATIO:
                    if finest:  # a coarser rejected region is left to the finer levels
                        rejected.append(int(label))
                        if REJECTED_REGIONS == "drop":
                            region_ids[pixels] = REGION_DROPPED
                    continue
                accepted.append(int(label))
                region_ids[pixels] = len(accepted)
                claimed |= pixels
                aligned[pixels] = fit.apply(flat[pixels])
                residual_final[inside] = np.linalg.norm(fit.apply(prior_points[inside]) - world[inside], axis=1)
    report.update(
        regions_accepted=len(accepted),
        regions_rejected=len(rejected),
        residual_final_median=float(np.median(residual_final)),
    )
    aligned[region_ids == REGION_DROPPED] = np.nan
    aligned[~prior.valid().ravel()] = np.nan

    inlier_mask = np.zeros(h * w, bool)
    inlier_mask[corr_pixel[global_fit.inliers]] = True
    return ImageAlignment(
        aligned.reshape(h, w, 3).astype(np.float32),
        region_ids.reshape(h, w),
        inlier_mask.reshape(h, w),
        xy,
        residual_global,
        residual_final,
        report,
    )


@dataclass
class SceneAlignment:
    images: dict[str, ImageAlignment]
    skipped: dict[str, str]
    """Image name -> why it keeps its SfM points only."""
    threshold: float


def align_scene(
    model: pycolmap.Reconstruction,
    priors: dict[str, DensePrior],
    proposer_for: Callable[[str, DensePrior], RegionProposer] | None,
) -> SceneAlignment:
    """Align every image that has a prior; `proposer_for` gives each image's region proposer."""
    threshold = INLIER_THRESHOLD * scene_depth(model)
    aligned, skipped = {}, {}
    for image in sorted(model.images.values(), key=lambda im: im.name):
        if image.name not in priors or not image.has_pose:
            continue
        prior = priors[image.name]
        xy, world = correspondences(model, image)
        proposer = proposer_for(image.name, prior) if proposer_for else None
        result = align_image(prior, xy, world, proposer, threshold)
        if result is None:
            covered = int((prior.sample(xy)[1] > 0).sum())
            skipped[image.name] = (
                f"the prior has depth at {covered} of its {len(xy)} SfM points, a fit needs {MIN_CORRESPONDENCES}"
                if covered < MIN_CORRESPONDENCES
                else f"no similarity fits its {covered} SfM points with prior depth"
            )
        else:
            aligned[image.name] = result
    return SceneAlignment(aligned, skipped, threshold)


def depth_in_camera(points: np.ndarray, cam_from_world: np.ndarray) -> np.ndarray:
    """SfM-frame points (..., 3) -> their z-depth in the camera (nan stays nan)."""
    return points @ cam_from_world[2, :3] + cam_from_world[2, 3]
