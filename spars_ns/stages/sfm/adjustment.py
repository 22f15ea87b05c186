"""The last bundle adjustment of the kept model: robust where its residuals show false matches,
with a second radial distortion term where they show a lens that one term cannot follow.

COLMAP's bundle adjustment weighs every observation fully, and its filter keeps observations up
to 4 px off: the few false matches a sparse capture keeps pull its cameras and its focal length.
A last adjustment with a Cauchy loss lets them go, at a scale that follows the model's own noise
(a median reprojection error of 0.1 px on the synthetic photos, 0.15-0.2 px on Strecha's, 0.6 px
on the fox's video frames). It is used only where the residuals are heavy-tailed, as false
matches make them: where a Gaussian explains them about as well (the fox, whose lens distortion
one k1 cannot follow, spreads every residual instead), it moved 3-view models off by 0.1-0.6
degrees. BENCHMARKS.md, "A robust last adjustment".

Residuals that a Gaussian explains but that are larger than keypoint noise (0.6 px on the fox's
frames) are a lens model's misfit: COLMAP's SIMPLE_RADIAL has one radial term, the fox's lens
needs two (k1 0.058, k2 -0.081). There a second term (RADIAL) is kept where an F-test says it
explains the residuals beyond chance, from 4 photos on: it halved the fox's focal length error
and lowered its median pair error at every K from 4 to 8. BENCHMARKS.md, "A second radial term".

Whether the photos fix the focal length at all is the same kind of test: the model adjusted with
the focal length held a tenth off, against the free fit (`focal_length_undetermined`).
"""

from __future__ import annotations

import numpy as np
import pycolmap

# Measured on 265 captures (BENCHMARKS.md): on synthetic and Strecha photos a Cauchy fits the
# residuals better than a Gaussian by 0.34-1.81 nats per observation, on the fox by -0.11-0.27.
ROBUST_SCALE_IN_MEDIANS = 3.0  # the Cauchy loss's scale, in median reprojection errors
HEAVY_TAIL_NATS = 0.3  # per observation, Cauchy over Gaussian log-likelihood, to adjust robustly
# The F statistic a second radial term must reach: F(1, inf) at the 1% level (conservative for several
# cameras). The fox reached 29-538 at 5-8 views, 0-208 at 3-4.
SECOND_RADIAL_TERM_MIN_F = 6.63
# Registered photos a second radial term needs: from 3 the fox's went either way, by up to 1 degree
# (F 7-71, no threshold between the better and the worse), from 4 on it helped (BENCHMARKS.md).
SECOND_RADIAL_TERM_MIN_VIEWS = 4
# Photos taken from nearly one place (video frames a degree or two apart) leave the focal length open:
# the adjustment drifts along a valley where focal length and depth trade, 2-77% off the truth on
# synthetic video frames, from any start (the true one too). Held a tenth shorter or longer than the
# fit, such a model explains its photos about as well (F 0.4-5), where photos that fix it resist by F
# 300-3,400 (BENCHMARKS.md, "Photos from nearly one place"). A quarter off missed models 7-10% off.
FOCAL_CHECK_FACTORS = (0.9, 1.11)
FOCAL_DETERMINED_MIN_F = 6.63  # F(1, inf) at the 1% level, as for the second radial term


def refine_robustly(model: pycolmap.Reconstruction) -> bool:
    """Bundle adjustment of poses, focal length, distortion and points with a Cauchy loss of
    `ROBUST_SCALE_IN_MEDIANS` median reprojection errors, where the residuals are heavy-tailed.
    Returns whether it adjusted."""
    residuals = reprojection_residuals(model)
    if not heavy_tailed(residuals):
        return False
    adjust(model, robust_options(model))
    return True


def robust_options(model: pycolmap.Reconstruction) -> pycolmap.BundleAdjustmentOptions:
    """A Cauchy loss of `ROBUST_SCALE_IN_MEDIANS` of the model's median reprojection error."""
    options = pycolmap.BundleAdjustmentOptions()
    options.ceres.loss_function_type = pycolmap.LossFunctionType.CAUCHY
    median = float(np.median(np.linalg.norm(reprojection_residuals(model), axis=1)))
    options.ceres.loss_function_scale = ROBUST_SCALE_IN_MEDIANS * median
    return options


def with_second_radial_term(model: pycolmap.Reconstruction) -> pycolmap.Reconstruction | None:
    """A copy of `model` whose one-term radial cameras (SIMPLE_RADIAL) have a second term (RADIAL),
    adjusted by least squares with everything else, where the F-test of the two fits reaches
    `SECOND_RADIAL_TERM_MIN_F` on `SECOND_RADIAL_TERM_MIN_VIEWS` photos or more; else None. Both fits
    are adjusted from `model` alike, so that the test weighs the term and not the mapper's last
    iterations."""
    simple = [c.camera_id for c in model.cameras.values() if c.model == pycolmap.CameraModelId.SIMPLE_RADIAL]
    if not simple or not len(model.points3D) or model.num_reg_images() < SECOND_RADIAL_TERM_MIN_VIEWS:
        return None
    one_term, two_terms = pycolmap.Reconstruction(model), pycolmap.Reconstruction(model)
    for camera_id in simple:
        camera = two_terms.camera(camera_id)
        focal, cx, cy, k1 = camera.params
        camera.model = pycolmap.CameraModelId.RADIAL
        camera.params = [focal, cx, cy, k1, 0.0]
    for fit in (one_term, two_terms):
        adjust(fit)
    restricted = float(np.sum(reprojection_residuals(one_term) ** 2))
    f = f_statistic(restricted, reprojection_residuals(two_terms), len(simple))
    return two_terms if f >= SECOND_RADIAL_TERM_MIN_F else None


def focal_length_undetermined(model: pycolmap.Reconstruction, camera_ids: set[int]) -> bool:
    """Whether the photos leave the focal length of `camera_ids` open: the model adjusted with those
    cameras' focal lengths held at one of FOCAL_CHECK_FACTORS times the least-squares fit's explains
    the observations within FOCAL_DETERMINED_MIN_F (an F statistic) of that fit."""
    if not camera_ids or not len(model.points3D):
        return False
    fit = pycolmap.Reconstruction(model)
    adjust(fit)
    residuals = reprojection_residuals(fit)
    held = pycolmap.BundleAdjustmentOptions()
    held.refine_focal_length = False
    for factor in FOCAL_CHECK_FACTORS:
        other = pycolmap.Reconstruction(fit)
        for camera_id in camera_ids:
            camera = other.camera(camera_id)
            params = camera.params.copy()
            params[list(camera.focal_length_idxs())] *= factor
            camera.params = params
        adjust(other, held)
        f = f_statistic(float(np.sum(reprojection_residuals(other) ** 2)), residuals, len(camera_ids))
        if not f >= FOCAL_DETERMINED_MIN_F:  # NaN too: an adjustment that diverged is no fit
            return True
    return False


def f_statistic(restricted: float, free: np.ndarray, parameters: int) -> float:
    """The F statistic of `parameters` more free parameters: a restricted fit's sum of squared
    residuals against the free fit's residuals (N, 2)."""
    least = float(np.sum(free**2))
    return (restricted - least) / parameters / max(least / (free.size - parameters), 1e-300)


def adjust(model: pycolmap.Reconstruction, options: pycolmap.BundleAdjustmentOptions | None = None) -> None:
    """Poses, intrinsics and points, by least squares unless `options` say otherwise, on one thread
    (the same sums in the same order every run)."""
    options = options or pycolmap.BundleAdjustmentOptions()
    options.print_summary = False
    options.ceres.solver_options.num_threads = 1
    options.ceres.solver_options.max_num_iterations = 500
    # What pycolmap.bundle_adjustment does, bit for bit, without its heading: that call also sets COLMAP's
    # log level to INFO and leaves it there, so every later COLMAP step's log reached the terminal.
    config = pycolmap.BundleAdjustmentConfig()
    for image_id in model.reg_image_ids():
        config.add_image(image_id)
    config.fix_gauge(pycolmap.BundleAdjustmentGauge.TWO_CAMS_FROM_WORLD)
    pycolmap.create_default_bundle_adjuster(options, config, model).solve()


def reprojection_residuals(model: pycolmap.Reconstruction) -> np.ndarray:
    """(N, 2) pixels from every observation's point projection to its keypoint: the residuals the
    adjustment minimises. Its cost projects a point behind a camera as well (x/z), and a false match can
    draw a point there; checked for cheirality, that one residual would be NaN and so would every sum
    and test made of them (10 of 60 fountain-P11 focal lengths read as open: BENCHMARKS.md, "A point
    behind a camera")."""
    residuals = [np.zeros((0, 2))]
    for image in model.images.values():
        if not image.has_pose:
            continue
        observed = [(p.xy, model.point3D(p.point3D_id).xyz) for p in image.points2D if p.has_point3D()]
        if observed:
            keypoints, points = (np.array(a) for a in zip(*observed))
            in_camera = image.cam_from_world() * points
            projected = model.camera(image.camera_id).img_from_cam(in_camera, check_cheirality=False)
            residuals.append(projected - keypoints)
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
