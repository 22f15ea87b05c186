import numpy as np
import pytest

from spars_ns.stages.sfm.distinctive import look_alike_distances


def test_a_copy_elsewhere_in_the_photo_is_a_look_alike_and_the_same_blob_turned_is_not():
    descriptors = np.random.default_rng(0).uniform(0, 100, (4, 128))
    descriptors[1] = descriptors[0]  # a rose and its copy 50 px along the wall
    descriptors[3] = descriptors[2]  # one blob described at two orientations, 1 px apart
    keypoints = np.array([[0.0, 0.0], [50.0, 0.0], [200.0, 0.0], [201.0, 0.0]])
    nearest = look_alike_distances(descriptors, keypoints)
    assert nearest[:2] == pytest.approx(0, abs=1e-3)  # the expanded square loses digits, not 0.1
    others = np.linalg.norm(descriptors[2] - descriptors[:2], axis=1).min()
    assert nearest[2] == pytest.approx(others) and nearest[3] == pytest.approx(others)
