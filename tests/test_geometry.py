import numpy as np
import pytest

from spars_ns.geometry import (
    axis_angle_rotation,
    camera_center,
    fit_similarity,
    look_at,
    opencv_to_opengl_c2w,
    opengl_c2w_to_opencv,
    rotation_angle_deg,
)
from spars_ns.metrics import absolute_trajectory_error, mean_average_accuracy, pair_errors_deg


def rotation_about(axis, degrees):
    return axis_angle_rotation(np.asarray(axis, float), np.radians(degrees))


def test_axis_angle_rotation_is_a_rotation_of_that_angle_about_that_axis():
    axis = np.array([1.0, -2.0, 0.5])
    rotation = rotation_about(axis, 35)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(rotation @ axis, axis, atol=1e-12)
    assert rotation_angle_deg(rotation) == pytest.approx(35)


def test_look_at_puts_target_on_the_optical_axis_in_front():
    eye, target = np.array([1.0, -4.0, 2.0]), np.array([0.2, 0.5, 0.3])
    cam_from_world = look_at(eye, target, up=np.array([0, 0, 1.0]))
    in_cam = cam_from_world[:, :3] @ target + cam_from_world[:, 3]
    assert np.allclose(in_cam[:2], 0, atol=1e-12) and in_cam[2] == pytest.approx(np.linalg.norm(target - eye))
    np.testing.assert_allclose(camera_center(cam_from_world), eye, atol=1e-12)
    # World up projects to image "up", which is -y in OpenCV.
    up_in_cam = cam_from_world[:, :3] @ np.array([0, 0, 1.0])
    assert up_in_cam[1] < 0


def test_opengl_conversion_round_trips_and_flips_viewing_direction():
    cam_from_world = look_at(np.array([3.0, 1.0, 2.0]), np.zeros(3), up=np.array([0, 0, 1.0]))
    c2w = opencv_to_opengl_c2w(cam_from_world)
    np.testing.assert_allclose(opengl_c2w_to_opencv(c2w), cam_from_world, atol=1e-12)
    # OpenGL cameras look down their -z axis.
    forward = -c2w[:3, 2]
    np.testing.assert_allclose(forward, -np.array([3.0, 1.0, 2.0]) / np.linalg.norm([3.0, 1.0, 2.0]), atol=1e-12)


def _arc(n=4):
    return {
        f"{i}": look_at(np.array([5 * np.cos(a), 5 * np.sin(a), 1.0]), np.zeros(3), np.array([0, 0, 1.0]))
        for i, a in enumerate(np.linspace(0, 1.2, n))
    }


def test_pair_error_is_invariant_to_similarity_and_sees_a_known_rotation():
    truth = _arc()
    rot, scale, shift = rotation_about([1, 2, 3], 40), 2.5, np.array([1.0, -2.0, 0.5])
    # World points map as x' = s R x + t; cameras follow with the same relative poses.
    moved = {}
    for name, m in truth.items():
        r, t = m[:, :3], m[:, 3]
        moved[name] = np.concatenate([r @ rot.T, (scale * t - r @ rot.T @ shift)[:, None]], axis=1)
    assert max(pair_errors_deg(moved, truth).values()) < 1e-4
    assert absolute_trajectory_error(moved, truth) < 1e-9

    tilted = dict(truth)
    tilted["0"] = np.concatenate([rotation_about([0, 1, 0], 3.0) @ truth["0"][:, :3], truth["0"][:, 3:]], axis=1)
    errors = pair_errors_deg(tilted, truth)
    assert errors[("0", "1")] >= 3.0 - 1e-4
    assert errors[("1", "2")] < 1e-4


def test_missing_images_count_as_failed_pairs_and_maa_matches_its_definition():
    truth = _arc(3)
    estimated = {k: v for k, v in truth.items() if k != "2"}
    errors = pair_errors_deg(estimated, truth)
    assert errors[("0", "2")] == np.inf and errors[("0", "1")] < 1e-4
    # Under t for t = 1..10: 0.5 passes all ten, 5.0 passes t = 6..10, inf never.
    assert mean_average_accuracy([0.5, 5.0, np.inf]) == pytest.approx((10 + 5 + 0) / 30)


@pytest.mark.parametrize("count", [3, 50])
def test_fit_similarity_recovers_a_known_similarity(count):
    rng = np.random.default_rng(count)
    rotation = axis_angle_rotation(rng.normal(size=3), 2.0)
    source = rng.normal(size=(count, 3)) * [5.0, 1.0, 0.3]
    target = 0.37 * source @ rotation.T + [1.0, -2.0, 3.0]
    scale, found_rotation, translation = fit_similarity(source, target)
    assert (
        scale == pytest.approx(0.37)
        and np.allclose(found_rotation, rotation)
        and np.allclose(translation, [1.0, -2.0, 3.0])
    )
    assert np.linalg.det(found_rotation) == pytest.approx(1.0)
