"""The stereo prior against the synthetic scene's true depth."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pycolmap
import pytest
from conftest import sfm_from_true

from spars_ns.geometry import axis_angle_rotation
from spars_ns.process import ProcessConfig, process
from spars_ns.stages.prior import stereo
from spars_ns.stages.prior.stereo import (
    StereoConfig,
    pair_depth,
    partner_candidates,
    rays,
    rectify_map,
    stereo_prior,
    views_from_model,
)
from spars_ns.stages.sfm.stage import registered_train
from spars_ns.synthetic import camera_points


@pytest.fixture(scope="module")
def stereo_views(processed, scene):
    """The processed scene's training views for stereo, and the scale from true units to SfM's."""
    model, images = registered_train(processed)
    scale = np.linalg.norm(sfm_from_true(scene, model)[:, 0])
    return views_from_model(model, images, processed.images_dir), scale


def true_depth(scene, name: str, scale: float) -> np.ndarray:
    return scene.render(int(name[5:8])).depth * scale  # view_00N.png; inf where nothing is hit


def test_stereo_depth_matches_the_true_depth_in_every_training_view(stereo_views, scene):
    views, scale = stereo_views
    candidates = partner_candidates(views, StereoConfig().partners)
    for name, view in views.items():
        prior = stereo_prior(view, [views[p] for p in candidates[name]], StereoConfig())
        truth = prior.resample(true_depth(scene, name, scale))
        kept = prior.conf > 0
        on_surface = kept & np.isfinite(truth)
        error = np.abs(prior.pts3d[..., 2][on_surface] - truth[on_surface]) / truth[on_surface]
        assert kept.mean() > 0.5, f"{name}: only {kept.mean():.0%} of the pixels have depth"
        assert on_surface.sum() / kept.sum() > 0.98, (
            f"{name}: {(kept & ~np.isfinite(truth)).sum()} points where nothing is"
        )
        wrong = (error > 0.05).mean()
        assert np.median(error) < 0.01 and wrong < 0.05, (
            f"{name}: {np.median(error):.2%} median error, {wrong:.1%} off by 5%"
        )
        # The points are the depth along the camera's own rays.
        rays_z1 = prior.pts3d[kept] / prior.pts3d[kept][:, 2:]
        np.testing.assert_allclose(rays_z1, rays(view.camera, prior.shape[::-1])[kept], atol=1e-5)


def test_a_wide_baseline_pair_gives_right_depth_or_none(stereo_views, scene):
    """Partners 4 views (about 35 degrees) apart: the disparity search starts far from zero,
    which the matcher only reaches by shifting the other image."""
    views, scale = stereo_views
    depth = pair_depth(views["view_001.png"], views["view_005.png"], StereoConfig())
    truth = true_depth(scene, "view_001.png", scale)
    found = np.isfinite(depth) & np.isfinite(truth)
    assert found.mean() > 0.2  # without the shift, 16%: the search misses the far half of the range
    assert np.median(np.abs(depth[found] - truth[found]) / truth[found]) < 0.01


def test_rectification_goes_through_the_distorted_camera_both_ways():
    """A working pixel's ray, taken into the rectified image, lands where the rectified image
    samples that same pixel: the two directions of rectification agree under strong distortion."""
    camera = pycolmap.Camera.create_from_model_name(1, "RADIAL", 500.0, 640, 480)
    camera.params = [500.0, 330.0, 230.0, -0.2, 0.05]
    size = (320, 240)
    rect_from_cam = axis_angle_rotation(np.array([0, 1, 0]), np.deg2rad(10))
    projection = np.array([[260.0, 0, 150, 0], [0, 260.0, 110, 0], [0, 0, 1, 0]])
    map_x, map_y = rectify_map(camera, size, rect_from_cam, projection, size)
    ray = rays(camera, size)[60:180:20, 60:260:20] @ rect_from_cam.T
    uv = ray @ projection[:, :3].T
    u, v = uv[..., 0] / uv[..., 2], uv[..., 1] / uv[..., 2]
    rows, cols = np.mgrid[60:180:20, 60:260:20]
    # bilinear read of the maps at (u, v): OpenCV's convention, pixel centres at integers
    sampled_x = np.array([np.interp(x, np.arange(size[0]), map_x[round(y)]) for x, y in zip(u.ravel(), v.ravel())])
    sampled_y = np.array([np.interp(y, np.arange(size[1]), map_y[:, round(x)]) for x, y in zip(u.ravel(), v.ravel())])
    np.testing.assert_allclose(sampled_x, cols.ravel(), atol=0.6)
    np.testing.assert_allclose(sampled_y, rows.ravel(), atol=0.6)


@pytest.mark.slow
def test_compressed_writes_survive_opencv_loaded_after_pycolmap(tmp_path):
    """pycolmap exports the zlib it links statically; a libz.so.1 loaded after it (OpenCV's
    libraries load one) binds to that copy and the next np.savez_compressed corrupted the heap.
    spars_ns loads zlib first. A fresh process: this one has long loaded both. Both writes deflate:
    numpy's, and a scene record's (its labels and masks)."""
    code = (
        "import spars_ns, pycolmap, cv2, numpy as np, sys; from pathlib import Path; "
        "from spars_ns.stages.align.stage import AlignedPrior; r = np.random.default_rng(0); "
        "np.savez_compressed(sys.argv[1], a=r.random((300, 400, 3))); "
        "maps = [r.random((300, 400)) for _ in range(3)]; "
        "AlignedPrior(*maps, r.integers(0, 9, (300, 400)), r.random((300, 400)) < 0.5).save(Path(sys.argv[2]))"
    )
    paths = [str(tmp_path / "a.npz"), str(tmp_path / "record.npz")]
    result = subprocess.run(
        [sys.executable, "-c", code, *paths], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert np.load(tmp_path / "a.npz")["a"].shape == (300, 400, 3)
    assert np.load(tmp_path / "record.npz")["region_ids"].shape == (300, 400)


def test_process_with_the_stereo_prior_seeds_dense_points_on_the_true_surfaces(processed, photos, scene, tmp_path):
    output = tmp_path / "scene"
    shutil.copytree(processed.root, output)  # SfM is reused: only the prior and what follows run
    stereo = process(ProcessConfig(images=photos, output=output, test_every=4, prior="stereo", align="global"))
    assert sorted(p.name for p in stereo.prior_dir.iterdir()) == [
        f"view_00{i}.npz" for i in (1, 2, 3, 5, 6, 7)
    ]  # no test view
    counts = stereo.stage_entry("export")["counts"]
    assert counts["global_points"] > 50_000

    model = pycolmap.Reconstruction(stereo.sparse_dir)
    sfm_from_world = sfm_from_true(scene, model)
    with np.load(stereo.align_dir / "view_002.npz") as data:
        points = data["points"]
    cam_points, truth = camera_points(scene, 2)
    rot, trans = scene.cam_from_world[2][:, :3], scene.cam_from_world[2][:, 3]
    kept = np.isfinite(points).all(-1) & (truth.object_ids >= 0)
    true_in_sfm = ((cam_points[kept] - trans) @ rot) @ sfm_from_world[:, :3].T + sfm_from_world[:, 3]
    scale = np.linalg.norm(sfm_from_world[:, 0])
    error = np.linalg.norm(points[kept] - true_in_sfm, axis=1) / (scale * truth.depth[kept])
    assert kept.mean() > 0.5 and np.median(error) < 0.01 and (error > 0.05).mean() < 0.05


def turned(view, degrees: float):
    """`view` with its camera turned about its y axis: a pose error that still rectifies."""
    turn = axis_angle_rotation(np.array([0, 1, 0]), np.deg2rad(degrees))
    return replace(view, cam_from_world=turn @ view.cam_from_world)


def share_off(prior, truth) -> float:
    """The share of the prior's kept pixels on a surface whose depth is over 5% off."""
    kept = (prior.conf > 0) & np.isfinite(truth)
    return float((np.abs(prior.pts3d[..., 2][kept] - truth[kept]) > 0.05 * truth[kept]).mean())


def test_a_pair_that_contradicts_the_sfm_points_is_dropped(stereo_views, scene, monkeypatch):
    """A partner whose pose is 1.5 degrees off matches well (its images still rectify) but every
    depth from it is wrong; SfM's points show it, and the view keeps what its other partners give."""
    views, scale = stereo_views
    partners = [views["view_001.png"], turned(views["view_003.png"], 1.5)]
    truth = true_depth(scene, "view_002.png", scale)
    assert share_off(stereo_prior(views["view_002.png"], partners, StereoConfig()), truth) < 0.05
    monkeypatch.setattr(stereo, "MAX_PAIR_DISAGREEMENT", 1.0)
    # Unchecked, the wrong pair's depth is kept.
    assert share_off(stereo_prior(views["view_002.png"], partners, StereoConfig()), truth) > 0.2


def test_the_reserve_serves_a_view_none_of_whose_partners_passes(stereo_views, scene):
    """One partner asked for, and it is wrong (a pose 1.5 degrees off): the view's depth is what
    the first right view of its reserve gives alone; with no right view anywhere, no depth."""
    views, scale = stereo_views
    ref, right = views["view_002.png"], views["view_001.png"]
    one = StereoConfig(partners=1)
    wrong = [turned(views["view_003.png"], 1.5), turned(views["view_003.png"], -1.5)]
    prior = stereo_prior(ref, [*wrong, right], one)
    assert (prior.conf > 0).mean() > 0.3
    assert share_off(prior, true_depth(scene, "view_002.png", scale)) < 0.05
    np.testing.assert_array_equal(prior.conf, stereo_prior(ref, [right], one).conf)
    assert (stereo_prior(ref, wrong, one).conf == 0).all()


def test_the_reserve_stays_unused_where_a_partner_passes(stereo_views):
    """Two partners asked for, one right and one wrong: the reserve (a right view) is not drawn
    on, so that weaker, wider pairs never stand beside good ones."""
    views, _ = stereo_views
    ref, right, reserve = views["view_002.png"], views["view_001.png"], views["view_003.png"]
    two = StereoConfig(partners=2)
    partners = [right, turned(reserve, 1.5)]
    with_reserve = stereo_prior(ref, [*partners, reserve], two)
    np.testing.assert_array_equal(with_reserve.conf, stereo_prior(ref, partners, two).conf)
    assert with_reserve.conf.max() == 0.5  # the one right partner of two
    assert not np.array_equal(with_reserve.conf, stereo_prior(ref, [right, reserve], two).conf)
