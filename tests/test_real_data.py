"""Real photos with surveyed cameras (../shared/data); skipped where that folder is absent."""

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA

from spars_ns.metrics import evenly_spaced, load_true_poses, mean_average_accuracy, pair_errors_deg
from spars_ns.stages.ingest.images import file_sha1, ingest_image
from spars_ns.stages.sfm.mapping import SfMConfig, run_sfm


def sfm_of(scene: Path, names: tuple[str, ...] | int, tmp_path):
    """SfM of a real scene's photos `names` (or that many evenly spaced) as training views: (the result,
    pair errors against the truth in degrees); skipped where the scene is absent."""
    if not (scene / "transforms.json").exists():
        pytest.skip(f"{scene} not present")
    truth = load_true_poses(scene / "transforms.json")
    names = evenly_spaced(list(truth), names) if isinstance(names, int) else names
    records = [ingest_image(scene / "images" / n, tmp_path, file_sha1(scene / "images" / n)) for n in names]
    result = run_sfm(tmp_path, records, list(names), [], tmp_path / "sfm", SfMConfig())
    estimated = {im.name: im.cam_from_world().matrix() for im in result.train.images.values() if im.has_pose}
    return result, pair_errors_deg(estimated, {n: truth[n] for n in estimated})


@pytest.mark.slow
@pytest.mark.parametrize("scene_name", ["fountain-P11", "Herz-Jesus-P8"])
def test_three_strecha_views_register_accurately(scene_name, tmp_path):
    result, errors = sfm_of(SHARED_DATA / "strecha" / scene_name, 3, tmp_path)
    assert result.train.num_reg_images() == 3
    assert np.median(list(errors.values())) < 1.0 and mean_average_accuracy(list(errors.values())) >= 0.9


@pytest.mark.slow
def test_three_wide_photos_of_one_wall_get_cameras_from_the_plane(tmp_path):
    """Three fox photos 30-90 frames apart, filled by its flat wallpaper: every start of the mapper gave
    intrinsics no lens has, so nothing registered. The focal length where two pairs sharing a photo agree
    on the wall's normal (686 px for a true 688) is the calibrated pairs' prior, and they map."""
    result, errors = sfm_of(SHARED_DATA / "fox", ("0018.jpg", "0049.jpg", "0108.jpg"), tmp_path)
    (camera,) = result.train.cameras.values()
    assert result.train.num_reg_images() == 3 and not result.doubtful_images
    assert result.focal_from_pairs and camera.mean_focal_length() == pytest.approx(687.76, rel=0.03)
    assert max(errors.values()) < 2.0


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("SPARS_NS_LONG_CHECKS"), reason="2 min 15 s: set SPARS_NS_LONG_CHECKS=1 (README)"
)
def test_three_neighbouring_video_frames_get_cameras_and_seed_points(tmp_path):
    """Frames taken steps apart: thousands of verified matches per pair, too little parallax for
    COLMAP's points (this triple had 3 cameras, 4.8-15.7 degrees off, and 0 points; 0001-0003
    registered nothing, BENCHMARKS.md: 3 minutes, so it is not run here)."""
    result, errors = sfm_of(SHARED_DATA / "fox", ("0002.jpg", "0003.jpg", "0004.jpg"), tmp_path)
    assert len(result.train.reg_image_ids()) == 3 and result.train.num_points3D() >= 1000 and result.low_parallax
    assert max(errors.values()) < 3.5


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("SPARS_NS_LONG_CHECKS"), reason="1 min: set SPARS_NS_LONG_CHECKS=1 (README)")
def test_three_far_apart_photos_give_no_camera_that_no_lens_has(tmp_path):
    """Three fox photos far apart around it gave a model at 16,763 px (true: 688) with k1 = -85,
    100 degrees off and not flagged; COLMAP's bounds on intrinsics now discard such models."""
    result, errors = sfm_of(SHARED_DATA / "fox", ("0007.jpg", "0039.jpg", "0115.jpg"), tmp_path)
    (camera,) = result.train.cameras.values()
    assert 0.5 < camera.mean_focal_length() / 687.76 < 2.0
    assert max(errors.values()) < 20


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("SPARS_NS_LONG_CHECKS"), reason="1 min: set SPARS_NS_LONG_CHECKS=1 (README)")
def test_a_silent_wrong_model_doubted_by_the_calibrated_pairs_is_mapped_again_from_them(tmp_path):
    """Five fox photos far apart, without EXIF: mapped from COLMAP's start (1,152 px), a model 46.8 degrees
    off that its own pairs explain, nothing in doubt. The pairs verified with the focal length their
    fundamental matrices give (690 px, true 688) put its photos in doubt; mapped from those pairs they
    come out under a degree off."""
    names = ("0001.jpg", "0007.jpg", "0076.jpg", "0089.jpg", "0105.jpg")
    result, errors = sfm_of(SHARED_DATA / "fox", names, tmp_path)
    assert sorted(result.focal_from_pairs) == sorted(names)
    assert all(abs(focal / 687.76 - 1) < 0.02 for focal in result.focal_from_pairs.values())
    assert len(errors) == 10 and np.median(list(errors.values())) < 1.0 and not result.doubtful_images


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("SPARS_NS_LONG_CHECKS"), reason="1 min: set SPARS_NS_LONG_CHECKS=1 (README)")
def test_a_model_held_by_copies_of_the_wallpaper_is_refitted_on_distinctive_matches(tmp_path):
    """Four fox photos far apart: the mapper's model, 6.3 degrees off with nothing in doubt, rests on its
    wallpaper's roses matched to other copies of themselves. Refitted on the tracks that no look-alike in
    the same photo could have made, it is under 3 degrees off (BENCHMARKS.md, "Matches no look-alike
    could have made")."""
    result, errors = sfm_of(SHARED_DATA / "fox", ("0034.jpg", "0046.jpg", "0076.jpg", "0090.jpg"), tmp_path)
    assert result.distinctive_refit and len(errors) == 6 and np.median(list(errors.values())) < 3.0
