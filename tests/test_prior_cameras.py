"""Cameras from the prior: training views SfM did not register, placed by a prior that poses its
views in one shared frame (files with cam_from_world and intrinsics, MASt3R's global alignment)."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pycolmap
import pytest
from conftest import sfm_from_true
from PIL import Image

import spars_ns.stages.sfm.mapping as sfm
from spars_ns.errors import InputError
from spars_ns.geometry import axis_angle_rotation, camera_center, rotation_angle_deg
from spars_ns.options import PriorConfig
from spars_ns.process import ProcessConfig, process
from spars_ns.stages.cameras.stage import fit_prior_frame, refine_by_absolute_pose
from spars_ns.stages.prior.files import FilesConfig, load_file_prior
from spars_ns.synthetic import shared_frame_prior

# SfM cannot register these two training views: view_002 keeps 14 verified matches per pair (the
# mapper ignores pairs under 15), view_006 none; view_006 is also shrunk to 240x180, so SfM has no
# camera of its size and its focal length must come from the prior.
THINNED = {"view_002.png": 14, "view_006.png": 0}
SHRUNK = "view_006.png"
TEST_EVERY = 4  # test views 0 and 4; training views 1, 2, 3, 5, 6, 7


@pytest.fixture(scope="module")
def photos_with_a_small_view(photos, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos_small_view")
    shutil.copytree(photos, folder, dirs_exist_ok=True)
    with Image.open(photos / SHRUNK) as image:
        image.resize((240, 180), Image.Resampling.BILINEAR).save(folder / SHRUNK)
    return folder


def thin_matches(database: Path) -> None:
    """Keep only THINNED[name] verified matches per pair of each view in THINNED."""
    db = pycolmap.Database.open(database)
    try:
        ids = {image.name: image.image_id for image in db.read_all_images()}
        pair_ids, geometries = db.read_two_view_geometries()
        for pair_id, geometry in zip(pair_ids, geometries):
            pair = pycolmap.pair_id_to_image_pair(pair_id)
            for name, keep in THINNED.items():
                if ids[name] in pair:
                    geometry.inlier_matches = np.asarray(geometry.inlier_matches)[:keep]
                    db.update_two_view_geometry(*pair, geometry)
    finally:
        db.close()


@pytest.fixture(scope="module")
def sfm_only(photos_with_a_small_view, tmp_path_factory):
    """The photos processed without a prior, SfM's databases thinned before mapping (the first, and
    the copy whose pairs are matched again with the focal length from the pairs)."""
    real_first, real_calibrated = sfm.extract_and_match, sfm.calibrated_matches

    def extract_match_and_thin(database, *args, **kwargs):
        real_first(database, *args, **kwargs)
        thin_matches(database)

    def calibrated_and_thinned(database, calibrated, *args, **kwargs):
        focal_lengths = real_calibrated(database, calibrated, *args, **kwargs)
        if focal_lengths:
            thin_matches(calibrated)
        return focal_lengths

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sfm, "extract_and_match", extract_match_and_thin)
        patch.setattr(sfm, "calibrated_matches", calibrated_and_thinned)
        return process(
            ProcessConfig(
                images=photos_with_a_small_view,
                output=tmp_path_factory.mktemp("sfm_only") / "scene",
                test_every=TEST_EVERY,
            )
        )


@pytest.fixture(scope="module")
def shared_prior(scene, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("shared_prior")
    for index, view in enumerate(shared_frame_prior(scene, seed=0)):
        np.savez(folder / f"{Path(scene.image_name(index)).stem}.npz", **view)
    return folder


def with_prior(source, photos: Path, prior: Path, folder: Path, **options):
    """A copy of the scene `source` processed with `prior` (its SfM reused)."""
    shutil.copytree(source.root, folder)
    options = {"align": "none", **options}
    return process(
        ProcessConfig(
            images=photos,
            output=folder,
            test_every=TEST_EVERY,
            prior="files",
            prior_options=PriorConfig(files=FilesConfig(dir=prior)),
            **options,
        )
    )


@pytest.fixture(scope="module")
def placed(sfm_only, photos_with_a_small_view, shared_prior, tmp_path_factory):
    return with_prior(sfm_only, photos_with_a_small_view, shared_prior, tmp_path_factory.mktemp("placed") / "scene")


def report(scene) -> dict:
    return json.loads((scene.cameras_dir / "report.json").read_text())


def frames(scene) -> dict[str, dict]:
    return {Path(f["file_path"]).name: f for f in json.loads(scene.transforms_path.read_text())["frames"]}


def test_sfm_leaves_out_the_thinned_views(sfm_only):
    unregistered = json.loads((sfm_only.sfm_dir / "report.json").read_text())["unregistered"]
    assert sorted(unregistered) == sorted(THINNED)
    assert sorted(frames(sfm_only)) == [
        "view_000.png",
        "view_001.png",
        "view_003.png",
        "view_004.png",
        "view_005.png",
        "view_007.png",
    ]


def test_unregistered_views_get_cameras_near_the_truth(placed, scene):
    model = pycolmap.Reconstruction(placed.sparse_dir)
    sfm_from_world = sfm_from_true(scene, model)
    scale = np.linalg.norm(sfm_from_world[:, 0])
    extent = scale * extent_of(scene.cam_from_world)  # SfM units

    cameras = report(placed)["cameras"]
    assert sorted(cameras) == sorted(THINNED) and report(placed)["not_placed"] == {}
    for name, (max_angle, max_shift) in {"view_002.png": (1.5, 0.015), "view_006.png": (2.5, 0.02)}.items():
        truth = scene.cam_from_world[int(name[5:8])]
        recovered = np.array(cameras[name]["cam_from_world"])
        # The true rotation seen from SfM's frame: world_from_sfm's rotation is the transpose of sfm_from_world's.
        angle = rotation_angle_deg(recovered[:, :3] @ (truth[:, :3] @ sfm_from_world[:, :3].T / scale).T)
        shift = np.linalg.norm(camera_center(recovered) - sfm_from_world @ np.append(camera_center(truth), 1)) / extent
        assert angle < max_angle and shift < max_shift, (name, angle, shift)
    # view_002 shares SfM's camera and is refined on its few matches; view_006 has no match, and the prior's
    # focal length.
    assert cameras["view_002.png"]["pose"].startswith("refined by absolute pose")
    shared = model.camera(model.find_image_with_name("view_001.png").camera_id)
    assert cameras["view_002.png"]["camera"]["params"] == list(shared.params)
    assert cameras["view_006.png"]["pose"].startswith("the prior's, mapped: 0 matches")
    small = cameras["view_006.png"]["camera"]
    assert (small["model"], small["width"], small["height"]) == ("PINHOLE", 240, 180)
    true_focal = 0.75 * scene.intrinsics[0, 0]
    assert abs(small["params"][0] / true_focal - 1) < 0.025  # shared_frame_prior errs by up to 2%
    np.testing.assert_allclose(small["params"][2:], [120, 90], atol=1e-9)  # pixel convention: centres at +0.5

    fit = report(placed)["fit"]
    assert fit["inliers"] == ["view_001.png", "view_003.png", "view_005.png", "view_007.png"]
    assert placed.stage_entry("cameras")["counts"] == {"unregistered": 2, "placed": 2, "refined": 1, "fit_inliers": 4}


def test_prior_cameras_join_transforms_as_marked_training_views(placed):
    meta = json.loads(placed.transforms_path.read_text())
    by_name = frames(placed)
    assert {n for n, f in by_name.items() if f["camera_source"] == "prior"} == set(THINNED)
    assert all(f["camera_source"] == "sfm" for n, f in by_name.items() if n not in THINNED)
    assert meta["train_filenames"] == [f"images/view_00{i}.png" for i in (1, 2, 3, 5, 6, 7)]
    assert meta["test_filenames"] == ["images/view_000.png", "images/view_004.png"]
    assert (by_name[SHRUNK]["w"], by_name[SHRUNK]["h"]) == (240, 180)
    assert placed.stage_entry("export")["counts"]["prior_cameras"] == 2


def test_sfm_cameras_stay_bit_identical(sfm_only, placed):
    for folder in ("sparse/0", "sparse_with_test/0"):
        for path in sorted((sfm_only.root / folder).iterdir()):
            assert path.read_bytes() == (placed.root / folder / path.name).read_bytes(), path
    before, after = frames(sfm_only), frames(placed)
    assert all(after[name] == frame for name, frame in before.items())


def test_prior_cameras_reach_nerfstudio_with_depth_for_every_frame(
    sfm_only, photos_with_a_small_view, shared_prior, tmp_path
):
    scene = with_prior(
        sfm_only, photos_with_a_small_view, shared_prior, tmp_path / "scene", align="global", refine="global"
    )
    by_name = frames(scene)
    for name in THINNED:
        depth = np.load(scene.root / by_name[name]["depth_file_path"])  # camera only: depth unknown (0) everywhere
        assert depth.shape == (by_name[name]["h"], by_name[name]["w"]) and not depth.any()
    assert all((scene.root / f["depth_file_path"]).exists() for f in by_name.values())

    from spars_ns.ns.dataparser import SparsDataParserConfig

    outputs = SparsDataParserConfig(data=scene.root).setup().get_dataparser_outputs("train")
    assert [p.name for p in outputs.image_filenames] == [f"view_00{i}.png" for i in (1, 2, 3, 5, 6, 7)]


def test_too_few_posed_registered_views_say_why(sfm_only, photos_with_a_small_view, shared_prior, tmp_path):
    """Only some files pose their view: allowed, but two posed registered views cannot fit the frame."""
    folder = tmp_path / "prior"
    shutil.copytree(shared_prior, folder)
    for name in ("view_001", "view_003"):
        with np.load(folder / f"{name}.npz") as data:
            np.savez(folder / f"{name}.npz", pts3d=data["pts3d"], conf=data["conf"])
    scene = with_prior(sfm_only, photos_with_a_small_view, folder, tmp_path / "scene")
    not_placed = report(scene)["not_placed"]
    assert sorted(not_placed) == sorted(THINNED) and report(scene)["cameras"] == {}
    assert (
        "poses 2 registered view(s) (view_005.png, view_007.png); fitting its frame onto SfM's needs 3"
        in not_placed["view_002.png"]
    )
    assert set(frames(scene)) == set(frames(sfm_only))


def test_switched_off_the_cameras_go(placed, photos_with_a_small_view, tmp_path):
    output = tmp_path / "scene"
    shutil.copytree(placed.root, output)
    scene = process(ProcessConfig(images=photos_with_a_small_view, output=output, test_every=TEST_EVERY))
    assert scene.stage_entry("cameras") is None and not scene.cameras_dir.exists()
    assert not any(f["camera_source"] == "prior" for f in frames(scene).values())


def extent_of(cameras) -> float:
    centres = np.stack([camera_center(c) for c in cameras])
    return float(np.linalg.norm(centres[:, None] - centres[None], axis=-1).max())


def rigid(rng, centre_scale=1.0) -> np.ndarray:
    rotation = axis_angle_rotation(rng.normal(size=3), rng.uniform(0, np.pi))
    return np.concatenate([rotation, (-rotation @ rng.normal(size=3) * centre_scale)[:, None]], 1)


def prior_views(sfm_cameras: list[np.ndarray], sfm_from_prior: pycolmap.Sim3d) -> list[np.ndarray]:
    """The cameras as a prior in the frame `sfm_from_prior` maps to SfM's would give them."""
    prior_from_sfm = sfm_from_prior.inverse()
    return [prior_from_sfm.transform_camera_world(pycolmap.Rigid3d(c)).matrix() for c in sfm_cameras]


def test_the_frame_fit_drops_a_wrong_prior_camera_and_refuses_a_line():
    rng = np.random.default_rng(1)
    sfm_cameras = [rigid(rng, 3.0) for _ in range(6)]
    truth = pycolmap.Sim3d(
        1.7, pycolmap.Rotation3d(axis_angle_rotation(np.array([1.0, 2, 3]), 0.8)), np.array([1.0, -2, 0.5])
    )
    priors = prior_views(sfm_cameras, truth)
    priors[2] = priors[2].copy()
    priors[2][:, 3] += 5.0  # one prior camera far off
    views = {f"v{i}": (p, s) for i, (p, s) in enumerate(zip(priors, sfm_cameras))}
    sim, fit = fit_prior_frame(views, extent_of(sfm_cameras), seed=0)
    assert "v2" not in fit["inliers"] and len(fit["inliers"]) == 5
    np.testing.assert_allclose(sim.matrix(), truth.matrix(), atol=1e-6)

    on_a_line = [c.copy() for c in sfm_cameras[:4]]
    for k, camera in enumerate(on_a_line):
        camera[:, 3] = -camera[:, :3] @ np.array([k, 0.0, 0.0])
    views = {f"v{i}": v for i, v in enumerate(zip(prior_views(on_a_line, truth), on_a_line))}
    sim, fit = fit_prior_frame(views, extent_of(on_a_line), seed=0)
    assert sim is None and "nearly on a line" in fit["why_not"]


def test_a_prior_whose_orientations_disagree_is_refused():
    rng = np.random.default_rng(2)
    sfm_cameras = [rigid(rng, 3.0) for _ in range(4)]
    priors = [turned(camera, 20.0) for camera in sfm_cameras]  # the same frame and centres, each view turned
    sim, fit = fit_prior_frame(
        {f"v{i}": v for i, v in enumerate(zip(priors, sfm_cameras))}, extent_of(sfm_cameras), seed=0
    )
    assert sim is None and "look 20.0 degrees away" in fit["why_not"]


def turned(cam_from_world: np.ndarray, degrees: float) -> np.ndarray:
    """The camera turned about its own centre."""
    rotation = axis_angle_rotation(np.array([0.3, 1.0, 0.2]), np.radians(degrees)) @ cam_from_world[:, :3]
    return np.concatenate([rotation, (-rotation @ camera_center(cam_from_world))[:, None]], 1)


@pytest.mark.parametrize(
    "mapped_off_by, points, how",
    [
        (3.0, 40, "refined by absolute pose: 40 of 40 matches to SfM points"),
        (20.0, 40, "the prior's, mapped: the absolute pose (40 inliers) lies 20.0 degrees"),
        (3.0, 8, "the prior's, mapped: 8 matches to SfM points (refining needs 10)"),
    ],
)
def test_absolute_pose_refines_a_mapped_camera_only_near_it_and_with_enough_matches(mapped_off_by, points, how):
    rng = np.random.default_rng(3)
    camera = _camera()
    truth = rigid(rng)
    in_camera = np.concatenate([rng.uniform(-2, 2, (points, 2)), rng.uniform(4, 8, (points, 1))], 1)
    world = (in_camera - truth[:, 3]) @ truth[:, :3]
    mapped = turned(truth, mapped_off_by)
    pose, said = refine_by_absolute_pose(mapped, camera, camera.img_from_cam(in_camera), world, extent=10.0, seed=0)
    assert said.startswith(how)
    if said.startswith("refined"):
        assert rotation_angle_deg(pose[:, :3] @ truth[:, :3].T) < 1e-3
    else:
        assert np.array_equal(pose, mapped)


def _camera(width=320, height=240):
    return pycolmap.Camera.create_from_model_name(1, "PINHOLE", 300.0, width, height)


POSE = np.concatenate([np.eye(3), [[0.0], [0.0], [1.0]]], 1)
INTRINSICS = np.array([[100.0, 0, 79.5], [0, 100.0, 59.5], [0, 0, 1]])  # a 160x120 map, OpenCV's convention


def test_depth_of_an_unregistered_view_unprojects_with_the_file_intrinsics(tmp_path):
    np.savez(tmp_path / "a.npz", depth=np.full((120, 160), 2.0), cam_from_world=POSE, intrinsics=INTRINSICS)
    prior = load_file_prior(tmp_path, "a.jpg", None, (320, 240))
    assert prior.has_pose and prior.scale == (2.0, 2.0)
    np.testing.assert_allclose(
        prior.pts3d[60, 80], [0.5 / 100 * 2, 0.5 / 100 * 2, 2.0]
    )  # pixel (80, 60) is 0.5 right of (79.5, 59.5)
    np.testing.assert_allclose(prior.original_intrinsics(), [[200, 0, 160], [0, 200, 120], [0, 0, 1]])


def test_an_unregistered_view_without_a_posed_file_gets_no_prior(tmp_path):
    assert load_file_prior(tmp_path, "a.jpg", None, (320, 240)) is None
    np.savez(tmp_path / "a.npz", depth=np.ones((120, 160)))
    assert load_file_prior(tmp_path, "a.jpg", None, (320, 240)) is None
    assert not load_file_prior(tmp_path, "a.jpg", _camera()).has_pose  # registered: read as before


@pytest.mark.parametrize(
    "pose, message",
    [
        ({"cam_from_world": POSE}, "has 'cam_from_world' but no 'intrinsics'"),
        ({"intrinsics": INTRINSICS}, "has 'intrinsics' but no 'cam_from_world'"),
        (
            {"cam_from_world": np.eye(4), "intrinsics": INTRINSICS},
            r"shape \(4, 4\), expected \(3, 4\).*must be inverted",
        ),
        ({"cam_from_world": POSE, "intrinsics": np.eye(4)}, r"intrinsics has shape \(4, 4\)"),
        (
            {"cam_from_world": np.where(POSE == 1.0, np.nan, POSE), "intrinsics": INTRINSICS},
            "cam_from_world contains NaN",
        ),
        ({"cam_from_world": 2 * POSE, "intrinsics": INTRINSICS}, "is not a rotation"),
        ({"cam_from_world": np.diag([1.0, 1, -1, 0])[:3], "intrinsics": INTRINSICS}, r"is not a rotation .*det -1"),
        ({"cam_from_world": POSE, "intrinsics": -INTRINSICS}, "fx, fy > 0"),
    ],
)
def test_bad_poses_name_the_file(tmp_path, pose, message):
    np.savez(tmp_path / "a.npz", pts3d=np.ones((120, 160, 3)), **pose)
    with pytest.raises(InputError, match=f"{re.escape(str(tmp_path / 'a.npz'))}: .*{message}"):
        load_file_prior(tmp_path, "a.jpg", _camera())


def test_mast3r_priors_carry_cameras_that_project_their_points_to_their_pixels(scene, photos, tmp_path):
    pytest.importorskip("mast3r", reason="MASt3R is installed with the mast3r extra")
    import torch
    from test_mast3r import TINY, TINY_CONFIG

    from spars_ns.stages.prior.mast3r import Mast3rConfig, import_mast3r, predict_priors

    torch.manual_seed(0)
    model = import_mast3r().AsymmetricMASt3R(**TINY, landscape_only=False).eval()
    paths = [photos / scene.image_name(i) for i in (0, 3, 6)]
    priors = predict_priors(
        paths, model, Mast3rConfig(**TINY_CONFIG), tmp_path / "cache", tmp_path / "work", [(0, 1), (0, 2), (1, 2)]
    )
    for prior in priors:
        assert prior.has_pose
        h, w = prior.shape
        cam = prior.pts3d.reshape(-1, 3).astype(float) @ prior.cam_from_world[:, :3].T + prior.cam_from_world[:, 3]
        pixels = cam @ prior.intrinsics.T
        cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
        np.testing.assert_allclose(pixels[:, :2] / pixels[:, 2:], np.stack([cols.ravel(), rows.ravel()], 1), atol=1e-3)
