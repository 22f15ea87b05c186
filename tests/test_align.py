"""Global and region Sim3 alignment against known transforms and per-object ground truth."""

import numpy as np
import pytest
from test_geometry import rotation_about

from spars_ns.stages.align import similarity as similarity_module
from spars_ns.stages.align.similarity import REGION_DROPPED, align_image, fit_sim3
from spars_ns.stages.prior.dense_prior import DensePrior
from spars_ns.synthetic import camera_points


def similarity(scale, axis, degrees, shift):
    return np.concatenate([scale * rotation_about(axis, degrees), np.asarray(shift, float)[:, None]], 1)


def apply(matrix, points):
    return points @ matrix[:, :3].T + matrix[:, 3]


def test_fit_sim3_recovers_a_known_transform_despite_outliers():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(200, 3))
    truth = similarity(2.5, [1, -1, 2], 35, [3.0, -1.0, 0.5])
    tgt = apply(truth, src)
    outliers = rng.random(200) < 0.3
    tgt[outliers] += rng.normal(scale=3.0, size=(outliers.sum(), 3))
    fit = fit_sim3(src, tgt, threshold=0.05, seed=0)
    np.testing.assert_allclose(fit.matrix, truth, atol=1e-9)
    assert np.array_equal(fit.inliers, ~outliers)


@pytest.fixture(scope="module")
def view(scene):
    """True camera-frame points of view 3, its object ids, and its true world points."""
    cam, rendered = camera_points(scene, 3)
    rot, trans = scene.cam_from_world[3][:, :3], scene.cam_from_world[3][:, 3]
    world = (cam - trans) @ rot
    return cam, rendered.object_ids, world


def distorted_prior(cam, object_ids, warped_object, garbage_object=None, seed=0):
    """The true pointmap in a foreign frame (one Sim3), with one object scaled about its centre."""
    rng = np.random.default_rng(seed)
    pts = cam.copy()
    box = object_ids == warped_object
    centre = pts[box].mean(0)
    pts[box] = (pts[box] - centre) * 1.25 + centre + np.array([0.1, -0.05, 0.3])
    if garbage_object is not None:
        garbage = object_ids == garbage_object
        pts[garbage] = rng.normal(scale=3.0, size=(garbage.sum(), 3)) + 5
    foreign = similarity(0.4, [0, 1, 0.3], 50, [1.0, 2.0, -1.0])
    pts = apply(foreign, pts.reshape(-1, 3)).reshape(pts.shape)
    conf = np.where(object_ids >= 0, 1.0, 0.0).astype(np.float32)
    pts[object_ids < 0] = 0
    return DensePrior(pts.astype(np.float32), conf, (1.0, 1.0), (0.0, 0.0))


def sample_correspondences(world, object_ids, count=1500, seed=0):
    rng = np.random.default_rng(seed)
    rows, cols = np.nonzero(object_ids >= 0)
    pick = rng.choice(len(rows), count, replace=False)
    xy = np.stack([cols[pick] + 0.5, rows[pick] + 0.5], 1)
    return xy, world[rows[pick], cols[pick]].astype(float)


def test_regions_fix_an_object_the_global_fit_cannot(view):
    cam, object_ids, world = view
    box = 4
    prior = distorted_prior(cam, object_ids, warped_object=box)
    xy, sfm_points = sample_correspondences(world, object_ids)
    prompts = []

    def object_regions(outliers):  # ground-truth regions: label k + 1 for object k
        prompts.append(outliers)
        return [object_ids + 1]

    threshold = 0.01 * 6.0
    global_only = align_image(prior, xy, sfm_points, None, threshold)
    two_stage = align_image(prior, xy, sfm_points, object_regions, threshold)
    # The proposer was prompted with the global fit's outliers, which lie on the warped box.
    assert np.mean(object_ids[prompts[0][:, 1].astype(int), prompts[0][:, 0].astype(int)] == box) > 0.9

    on_box = object_ids == box
    error_global = np.linalg.norm(global_only.points[on_box] - world[on_box], axis=1)
    error_two_stage = np.linalg.norm(two_stage.points[on_box] - world[on_box], axis=1)
    assert np.median(error_global) > 0.1
    assert np.median(error_two_stage) < 1e-4
    off_box = (object_ids >= 0) & ~on_box
    assert np.median(np.linalg.norm(two_stage.points[off_box] - world[off_box], axis=1)) < 1e-4
    assert two_stage.report["regions_accepted"] == 1 and (two_stage.region_ids[on_box] == 1).all()
    assert two_stage.report["residual_final_median"] <= two_stage.report["residual_global_median"]


def test_a_region_no_similarity_explains_is_rejected_and_dropped(view, monkeypatch):
    cam, object_ids, world = view
    prior = distorted_prior(cam, object_ids, warped_object=4, garbage_object=5)
    xy, sfm_points = sample_correspondences(world, object_ids)
    assert similarity_module.REJECTED_REGIONS == "drop"
    aligned = align_image(prior, xy, sfm_points, lambda _: [object_ids + 1], 0.06)
    garbage = object_ids == 5
    assert aligned.report["regions_rejected"] == 1
    assert (aligned.region_ids[garbage] == REGION_DROPPED).all() and np.isnan(aligned.points[garbage]).all()
    monkeypatch.setattr(similarity_module, "REJECTED_REGIONS", "global")
    kept = align_image(prior, xy, sfm_points, lambda _: [object_ids + 1], 0.06)
    assert (kept.region_ids[garbage] == 0).all() and np.isfinite(kept.points[garbage]).all()


def test_too_few_correspondences_give_no_alignment(view):
    cam, object_ids, world = view
    prior = distorted_prior(cam, object_ids, warped_object=4)
    xy, sfm_points = sample_correspondences(world, object_ids, count=5)
    assert align_image(prior, xy, sfm_points, None, 0.06) is None
