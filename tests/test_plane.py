"""The focal length from photos of one plane (stages/sfm/plane.py), against cameras of known intrinsics."""

import numpy as np
import pycolmap
import pytest

from spars_ns.geometry import centred_pinhole, look_at, project, rotation_angle_deg
from spars_ns.stages.sfm.plane import PlanePair, calibrate_star, decompositions

WIDTH, HEIGHT, FOCAL = 540, 960, 688.0
WIDE = [np.array([0.0, 0.0, -8.0]), np.array([4.0, 1.0, -7.0]), np.array([-3.0, -2.0, -7.5])]


def wall_photos(cams_from_world: list[np.ndarray], seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each camera (cam_from_world, 3x4) and its keypoints, 0.3 px of noise, of 400 points on the wall
    z = 0, seen by all."""
    rng = np.random.default_rng(seed)
    wall = np.c_[rng.uniform(-3, 3, 400), rng.uniform(-4, 4, 400), np.zeros(400)]
    intrinsics = centred_pinhole(FOCAL, WIDTH, HEIGHT)
    photos = []
    for cam_from_world in cams_from_world:
        in_camera = wall @ cam_from_world[:, :3].T + cam_from_world[:, 3]
        photos.append((cam_from_world, project(in_camera, intrinsics)[0] + rng.normal(0, 0.3, (len(wall), 2))))
    return photos


def facing_the_wall(eyes: list[np.ndarray]) -> list[np.ndarray]:
    return [look_at(eye, np.zeros(3), np.array([0.0, -1.0, 0.0])) for eye in eyes]


def pair(photos, i: int, j: int) -> PlanePair:
    ransac = pycolmap.RANSACOptions()
    ransac.max_error = 2.0
    ransac.random_seed = 0
    fit = pycolmap.estimate_homography_matrix(photos[i][1], photos[j][1], ransac)
    return PlanePair(i, j, fit["H"], photos[i][1], photos[j][1])


def test_two_pairs_seen_from_one_photo_agree_on_the_wall_only_at_the_true_focal_length():
    photos = wall_photos(facing_the_wall(WIDE))
    found = calibrate_star(pair(photos, 0, 1), pair(photos, 0, 2), WIDTH, HEIGHT)
    assert found is not None
    focal, disagreement = found
    assert focal == pytest.approx(FOCAL, rel=0.02)
    assert disagreement < 1.0


def test_one_decomposition_at_the_true_focal_length_is_the_true_relative_pose():
    photos = wall_photos(facing_the_wall(WIDE))
    (cam0, _), (cam1, _) = photos[0], photos[1]
    true_rotation = cam1[:, :3] @ cam0[:, :3].T
    found = decompositions(pair(photos, 0, 1), centred_pinhole(FOCAL, WIDTH, HEIGHT))
    assert min(rotation_angle_deg(rotation @ true_rotation.T) for rotation, _, _ in found) < 0.5


def test_photos_that_only_slide_along_the_wall_leave_the_focal_length_open():
    """Cameras facing the wall square on and moving in its plane: every focal length explains the
    homographies (pure translations of the image), so no focal length is claimed."""
    sliding = [np.c_[np.eye(3), -np.array([x, 0.0, -8.0])] for x in (0.0, 0.8, -0.7)]
    photos = wall_photos(sliding, seed=1)
    assert calibrate_star(pair(photos, 0, 1), pair(photos, 0, 2), WIDTH, HEIGHT) is None
