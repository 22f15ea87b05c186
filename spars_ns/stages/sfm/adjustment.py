"""The last bundle adjustment of the kept model: robust where its residuals show false matches.

COLMAP's bundle adjustment weighs every observation fully, and its filter keeps observations up
to 4 px off: the few false matches a sparse capture keeps pull its cameras and its focal length.
A last adjustment with a Cauchy loss lets them go, at a scale that follows the model's own noise
(a median reprojection error of 0.1 px on the synthetic photos, 0.15-0.2 px on Strecha's, 0.6 px
on the fox's video frames). It is used only where the residuals are heavy-tailed, as false
matches make them: where a Gaussian explains them about as well (the fox, whose lens distortion
one k1 cannot follow, spreads every residual instead), it moved 3-view models off by 0.1-0.6
degrees. BENCHMARKS.md, "A robust last adjustment".
"""

from __future__ import annotations

import numpy as np
import pycolmap

# Measured on 265 captures (BENCHMARKS.md): on synthetic and Strecha photos a Cauchy fits the
# residuals better than a Gaussian by 0.34-1.81 nats per observation, on the fox by -0.11-0.27.
ROBUST_SCALE_IN_MEDIANS = 3.0  # the Cauchy loss's scale, in median reprojection errors
HEAVY_TAIL_NATS = 0.3  # per observation, Cauchy over Gaussian log-likelihood, to adjust robustly


def refine_robustly(model: pycolmap.Reconstruction) -> bool:
    """Bundle adjustment of poses, focal length, distortion and points with a Cauchy loss of
    `ROBUST_SCALE_IN_MEDIANS` median reprojection errors, on one thread (the same sums in the
    same order every run), where the residuals are heavy-tailed. Returns whether it adjusted."""
    residuals = reprojection_residuals(model)
    if not heavy_tailed(residuals):
        return False
    options = pycolmap.BundleAdjustmentOptions()
    options.print_summary = False
    options.ceres.loss_function_type = pycolmap.LossFunctionType.CAUCHY
    options.ceres.loss_function_scale = ROBUST_SCALE_IN_MEDIANS * float(np.median(np.linalg.norm(residuals, axis=1)))
    options.ceres.solver_options.num_threads = 1
    options.ceres.solver_options.max_num_iterations = 500
    pycolmap.bundle_adjustment(model, options)
    return True


def reprojection_residuals(model: pycolmap.Reconstruction) -> np.ndarray:
    """(N, 2) pixels from every observation's point projection to its keypoint."""
    residuals = [np.zeros((0, 2))]
    for image in model.images.values():
        if not image.has_pose:
            continue
        observed = [(p.xy, model.point3D(p.point3D_id).xyz) for p in image.points2D if p.has_point3D()]
        if observed:
            keypoints, points = (np.array(a) for a in zip(*observed))
            residuals.append(model.camera(image.camera_id).img_from_cam(image.cam_from_world() * points) - keypoints)
    return np.concatenate(residuals)


def heavy_tailed(residuals: np.ndarray) -> bool:
    """Whether a 2D Cauchy explains the residuals (N, 2) better than a 2D Gaussian by
    HEAVY_TAIL_NATS per observation, each at its maximum-likelihood scale."""
    if len(residuals) == 0:
        return False
    return cauchy_log_likelihood(residuals) - gaussian_log_likelihood(residuals) > HEAVY_TAIL_NATS


def gaussian_log_likelihood(residuals: np.ndarray) -> float:
    """Mean log-density of an isotropic 2D Gaussian at its maximum-likelihood variance."""
    variance = max(float(np.mean(residuals**2)), 1e-300)
    return -np.log(2 * np.pi * variance) - 1.0


def cauchy_log_likelihood(residuals: np.ndarray) -> float:
    """Mean log-density of the isotropic 2D Cauchy s / (2 pi (|r|^2 + s^2)^1.5) at its
    maximum-likelihood scale s, where mean(s^2 / (|r|^2 + s^2)) = 1/3 (bisection on log s^2)."""
    squared = np.sum(residuals**2, axis=1)
    low, high = np.log(1e-12), np.log(max(float(squared.max()), 1e-12) * 1e6)
    for _ in range(100):
        middle = (low + high) / 2
        scale2 = np.exp(middle)
        if np.mean(scale2 / (squared + scale2)) < 1 / 3:
            low = middle
        else:
            high = middle
    scale2 = np.exp((low + high) / 2)
    return float(np.mean(0.5 * np.log(scale2) - np.log(2 * np.pi) - 1.5 * np.log(squared + scale2)))
