"""Pose metrics in the style of the Image Matching Challenge.

The error of an image pair is the larger of the relative rotation error and the angle
between the relative translation directions; mAA@10 is the mean over thresholds 1..10
degrees of the fraction of pairs under the threshold, a pair with an unregistered image
counting as failed. ATE is the RMS camera-centre error after a least-squares Sim3 fit,
as a fraction of the ground-truth scene extent.
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pycolmap

from spars_ns.geometry import (
    angle_between_deg,
    camera_center,
    opengl_c2w_to_opencv,
    relative_pose,
    rotation_angle_deg,
    transform,
)


def load_true_poses(transforms_path: Path) -> dict[str, np.ndarray]:
    """Image name -> OpenCV cam_from_world from a nerfstudio `transforms.json`."""
    meta = json.loads(Path(transforms_path).read_text())
    return {Path(f["file_path"]).name: opengl_c2w_to_opencv(np.array(f["transform_matrix"])) for f in meta["frames"]}


def model_poses(model: pycolmap.Reconstruction) -> dict[str, np.ndarray]:
    """Name -> cam_from_world (3x4) of every posed image of a model."""
    return {im.name: im.cam_from_world().matrix() for im in model.images.values() if im.has_pose}


def evenly_spaced(names: list[str], k: int) -> list[str]:
    """K names evenly spaced in sorted order, first and last included."""
    names = sorted(names)
    return [names[i] for i in np.round(np.linspace(0, len(names) - 1, k)).astype(int)]


def pair_errors_deg(estimated: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> dict[tuple[str, str], float]:
    """Pair error in degrees for every pair of ground-truth images; inf where either is missing."""
    errors = {}
    for a, b in combinations(sorted(truth), 2):
        if a not in estimated or b not in estimated:
            errors[(a, b)] = float("inf")
            continue
        rot_est, t_est = relative_pose(estimated[a], estimated[b])
        rot_gt, t_gt = relative_pose(truth[a], truth[b])
        rot_err = rotation_angle_deg(rot_est @ rot_gt.T)
        errors[(a, b)] = max(rot_err, angle_between_deg(t_est, t_gt))
    return errors


def mean_average_accuracy(errors: list[float], max_threshold_deg: int = 10) -> float:
    errors_arr = np.asarray(errors, float)
    if errors_arr.size == 0:
        return 0.0
    thresholds = np.arange(1, max_threshold_deg + 1)
    return float(np.mean([(errors_arr < t).mean() for t in thresholds]))


def absolute_trajectory_error(estimated: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> float:
    """RMS centre error after a Sim3 fit of estimated onto true centres, over the truth's extent.

    NaN when fewer than three images are registered (a Sim3 is not determined).
    """
    names = sorted(set(estimated) & set(truth))
    if len(names) < 3:
        return float("nan")
    est = np.stack([camera_center(estimated[n]) for n in names])
    gt = np.stack([camera_center(truth[n]) for n in names])
    gt_from_est = pycolmap.estimate_sim3d(est, gt)
    if gt_from_est is None:
        return float("nan")
    aligned = transform(est, gt_from_est.matrix())
    rms = np.sqrt(np.mean(np.sum((aligned - gt) ** 2, axis=1)))
    all_gt = np.stack([camera_center(c) for c in truth.values()])
    extent = np.linalg.norm(all_gt.max(axis=0) - all_gt.min(axis=0))
    return float(rms / extent)
