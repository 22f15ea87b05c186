"""Real photos with surveyed cameras (../shared/data); skipped where that folder is absent."""

import numpy as np
import pytest

from spars_ns.images import file_sha1, ingest_image
from spars_ns.metrics import evenly_spaced, load_true_poses, mean_average_accuracy, pair_errors_deg
from spars_ns.sfm import SfMConfig, run_sfm

from conftest import SHARED_DATA


@pytest.mark.slow
@pytest.mark.parametrize("scene_name", ["fountain-P11", "Herz-Jesus-P8"])
def test_three_strecha_views_register_accurately(scene_name, tmp_path):
    scene = SHARED_DATA / "strecha" / scene_name
    if not (scene / "transforms.json").exists():
        pytest.skip(f"{scene} not present")
    truth = load_true_poses(scene / "transforms.json")
    names = evenly_spaced(list(truth), 3)
    records = [ingest_image(scene / "images" / n, tmp_path, file_sha1(scene / "images" / n)) for n in names]
    result = run_sfm(tmp_path, records, names, [], tmp_path / "sfm", SfMConfig())
    estimated = {im.name: im.cam_from_world().matrix() for im in result.train.images.values() if im.has_pose}
    errors = list(pair_errors_deg(estimated, {n: truth[n] for n in names}).values())
    assert len(estimated) == 3
    assert np.median(errors) < 1.0 and mean_average_accuracy(errors) >= 0.9
