"""Frozen-depth refinement against true depth: exact global recovery, smooth warps, masking, bad inputs."""

import numpy as np
import pytest

from spars_ns.stages.refine.config import RefineConfig
from spars_ns.stages.refine.frozen_depth import Fit, RefineView, refine_depths
from spars_ns.synthetic import make_scene, sparse_observations


@pytest.fixture(scope="module")
def small_scene():
    scene = make_scene(num_views=4, width=128, height=96, arc_degrees=40, seed=1)
    renders = [scene.render(i) for i in range(scene.num_views)]
    return scene, renders, sparse_observations(scene, points_per_view=300, seed=1)


def views_from(scene, renders, observations, prior_of):
    views = []
    for i, (render, (uv, depth, ids)) in enumerate(zip(renders, observations)):
        prior = prior_of(i, np.where(render.object_ids >= 0, render.depth, np.nan))
        views.append(
            RefineView(prior, np.ones_like(render.depth), scene.intrinsics, scene.cam_from_world[i], uv, depth, ids)
        )
    return views


def abs_rel(depth, truth):
    ok = np.isfinite(depth) & np.isfinite(truth)
    return float(np.mean(np.abs(depth[ok] - truth[ok]) / truth[ok]))


@pytest.mark.parametrize("kind", ["depth", "disparity"])
def test_global_scale_and_shift_are_recovered_exactly_without_noise(small_scene, kind):
    scene, renders, observations = small_scene
    scales, shifts = [0.5, 2.0, 3.0, 0.8], [0.3, -0.2, 0.1, 0.05]

    def prior_of(i, depth):
        value = depth if kind == "depth" else 1.0 / depth
        return (value - shifts[i]) / scales[i]  # so that truth = scale * prior + shift

    views = views_from(scene, renders, observations, prior_of)
    for view, render in zip(views, renders):  # SfM points at pixel centres, where the prior is exact
        view.sfm_uv = np.floor(view.sfm_uv) + 0.5
        view.sfm_depth = render.depth[view.sfm_uv[:, 1].astype(int), view.sfm_uv[:, 0].astype(int)].astype(float)
    results = refine_depths(views, "global", kind, RefineConfig())
    for i, result in enumerate(results):
        assert result.fit is Fit.SFM
        assert result.scale == pytest.approx(scales[i], rel=1e-5) and result.shift == pytest.approx(shifts[i], abs=1e-5)
        assert abs_rel(result.depth, renders[i].depth) < 1e-5


def smooth_warp(h, w, amplitude, phase):
    ys, xs = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    return 1 + amplitude * np.sin(2.2 * xs + phase) * np.cos(1.7 * ys - phase)


def test_local_grid_recovers_a_smooth_warp(small_scene):
    scene, renders, observations = small_scene

    def prior_of(i, depth):
        return 1.7 * depth * smooth_warp(*depth.shape, amplitude=0.25, phase=i) + 0.2

    views = views_from(scene, renders, observations, prior_of)
    global_only = refine_depths(views, "global", "depth", RefineConfig())
    local = refine_depths(views, "local", "depth", RefineConfig())
    before = np.mean([abs_rel(r.depth, v.depth) for r, v in zip(global_only, renders)])
    after = np.mean([abs_rel(r.depth, v.depth) for r, v in zip(local, renders)])
    assert before > 0.03 and after < 0.01 and after < before / 5


def test_invalid_depth_is_masked_not_propagated(small_scene):
    scene, renders, observations = small_scene

    def prior_of(i, depth):
        prior = 2.0 * depth
        prior[5:10, 5:10] = np.nan
        prior[20:25, 20:25] = np.inf
        prior[30:35, 30:35] = 0.0
        prior[40:45, 40:45] = -3.0
        return prior

    results = refine_depths(views_from(scene, renders, observations, prior_of), "local", "depth", RefineConfig())
    for result, render in zip(results, renders):
        for block in (np.s_[5:10, 5:10], np.s_[20:25, 20:25], np.s_[30:35, 30:35], np.s_[40:45, 40:45]):
            assert np.isnan(result.depth[block]).all()
        assert np.isfinite(result.depth).sum() > 0.8 * (render.object_ids >= 0).sum()
        assert abs_rel(result.depth, render.depth) < 1e-3


def test_views_without_sfm_points_lean_on_neighbours_or_stay_unrefined(small_scene):
    scene, renders, observations = small_scene
    truth_scale = [2.0, 0.5, 1.5, 3.0]
    views = views_from(scene, renders, observations, lambda i, d: d / truth_scale[i])
    views[1].sfm_uv, views[1].sfm_depth = np.zeros((0, 2)), np.zeros(0)  # no SfM points, keeps its overlap ids
    views[3].sfm_uv, views[3].sfm_depth, views[3].sfm_ids = np.zeros((0, 2)), np.zeros(0), np.zeros(0, int)
    results = refine_depths(views, "global", "depth", RefineConfig())
    assert results[1].fit is Fit.NEIGHBOURS and abs_rel(results[1].depth, renders[1].depth) < 0.02
    assert results[3].fit is Fit.NONE and np.isnan(results[3].depth).all()


def test_pose_refinement_moves_a_perturbed_camera_toward_the_truth(small_scene):
    from test_geometry import rotation_about

    from spars_ns.geometry import rotation_angle_deg

    scene, renders, observations = small_scene
    views = views_from(scene, renders, observations, lambda i, d: 2.0 * d)
    k_inv = np.linalg.inv(scene.intrinsics)
    for view in views:
        cam = np.concatenate([view.sfm_uv, np.ones((len(view.sfm_uv), 1))], 1) @ k_inv.T * view.sfm_depth[:, None]
        view.sfm_world = (cam - view.cam_from_world[:, 3]) @ view.cam_from_world[:, :3]
    true_pose = views[1].cam_from_world.copy()
    tilt = rotation_about([0, 1, 0.3], 1.0)
    views[1].cam_from_world = tilt @ true_pose
    views[1].sfm_depth = views[1].sfm_world @ views[1].cam_from_world[2, :3] + views[1].cam_from_world[2, 3]

    fixed = refine_depths(views, "local", "depth", RefineConfig())
    refined = refine_depths(views, "local", "depth", RefineConfig(refine_poses=True, refine_focal=True))
    assert fixed[1].cam_from_world is None
    error = rotation_angle_deg(refined[1].cam_from_world[:, :3] @ true_pose[:, :3].T)
    assert error < 0.5  # from 1 degree
    assert abs(refined[1].focal_scale - 1) < 0.01
    assert abs_rel(refined[1].depth, renders[1].depth) < abs_rel(fixed[1].depth, renders[1].depth)


def test_the_global_fit_follows_the_confident_part_of_the_prior(small_scene):
    """Dust to Tower's confidence-aware alignment: the left half of each prior is wrong (1.5 times too
    deep) and says so by a low confidence; the fit follows the right half. With the confidence
    ignored, the same fit lands between the two."""
    scene, renders, observations = small_scene
    scale, shift = 2.0, 0.1

    def error_where_right(confidence_of_wrong: float) -> list[float]:
        views = views_from(scene, renders, observations, lambda i, depth: (depth - shift) / scale)
        for view in views:
            left = np.zeros(view.prior.shape, bool)
            left[:, : left.shape[1] // 2] = True
            view.prior = np.where(left, view.prior * 1.5, view.prior)
            view.conf = np.where(left, confidence_of_wrong, 1.0)
        results = refine_depths(views, "global", "depth", RefineConfig())
        half = renders[0].depth.shape[1] // 2
        return [abs_rel(r.depth[:, half:], render.depth[:, half:]) for r, render in zip(results, renders)]

    assert max(error_where_right(confidence_of_wrong=1e-3)) < 0.01
    assert min(error_where_right(confidence_of_wrong=1.0)) > 0.05
