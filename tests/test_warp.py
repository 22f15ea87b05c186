"""Forward warping of photos into other views with their depth, against the synthetic scene's truth."""

import numpy as np
import pytest
import torch

from spars_ns.ns.warp import consistent_target, forward_warp, interpolate_camera


def camera_to_world(cam_from_world: np.ndarray) -> torch.Tensor:
    rotation, translation = cam_from_world[:, :3], cam_from_world[:, 3]
    return torch.from_numpy(np.concatenate([rotation.T, (-rotation.T @ translation)[:, None]], 1))


@pytest.fixture(scope="module")
def views(scene):
    return {i: scene.render(i) for i in (1, 2, 3)}


def warp(scene, views, source: int, target: int):
    view = views[source]
    depth = torch.from_numpy(np.where(np.isfinite(view.depth), view.depth, 0.0)).double()
    intrinsics = torch.from_numpy(scene.intrinsics)
    return forward_warp(
        torch.from_numpy(view.image / 255.0),
        depth,
        intrinsics,
        camera_to_world(scene.cam_from_world[source]),
        intrinsics,
        camera_to_world(scene.cam_from_world[target]),
        scene.width,
        scene.height,
    )


def test_neighbours_warped_into_a_real_view_match_its_photo_where_the_mask_keeps_them(scene, views):
    """Views 1 and 3, with their true depth, warped into view 2: where both land at one depth, the
    target is view 2's photo (up to resampling: a pixel takes its nearest source pixel) and view
    2's true depth; what the mask drops includes what only one of them sees."""
    first, second = warp(scene, views, 1, 2), warp(scene, views, 3, 2)
    target, mask = consistent_target(first, second)
    truth = views[2]
    assert mask.float().mean() > 0.6  # measured 0.66: the rest are holes between splatted pixels, and disocclusions
    error = (target - torch.from_numpy(truth.image / 255.0)).abs().mean(-1)[mask]
    assert error.median() < 0.01 and (error < 0.15).float().mean() > 0.99
    true_depth = torch.from_numpy(truth.depth).double()[mask]
    hit = torch.isfinite(true_depth)  # a few silhouette pixels of view 2 see past the edge the warps land on
    assert (~hit).float().mean() < 1e-3
    relative = (first.depth[mask][hit] - true_depth[hit]).abs() / true_depth[hit]
    assert torch.quantile(relative, 0.99) < 0.01
    # A pixel that only one source reaches (a disocclusion, or off its frame) is out.
    assert not mask[first.landed != second.landed].any() and (first.landed != second.landed).any()


def test_the_nearest_surface_wins_where_two_land_on_one_pixel():
    """Two source pixels land on one target pixel, the far one brighter: the near one's colour and depth stay."""
    intrinsics = torch.tensor([[10.0, 0, 2], [0, 10.0, 2], [0, 0, 1]], dtype=torch.float64)
    image = torch.zeros(4, 4, 3, dtype=torch.float64)
    image[1, 1], image[1, 2] = 0.2, 0.9
    depth = torch.zeros(4, 4, dtype=torch.float64)
    depth[1, 1], depth[1, 2] = 1.0, 3.0
    source = torch.eye(4, dtype=torch.float64)[:3]
    # Both points of the source's row 1 lie on one ray from the target camera: put the target on that line.
    pixels = torch.tensor([[1.5, 1.5, 1.0], [2.5, 1.5, 1.0]], dtype=torch.float64) @ torch.linalg.inv(intrinsics).T
    near, far = pixels[0] * 1.0, pixels[1] * 3.0
    centre = near - 1.0 * (far - near) / (far - near).norm()
    forward = (far - near) / (far - near).norm()
    right = torch.linalg.cross(torch.tensor([0.0, 1, 0], dtype=torch.float64), forward)
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    target = torch.cat([torch.stack([right, down, forward], 1), centre[:, None]], 1)
    warped = forward_warp(image, depth, intrinsics, source, intrinsics, target, 4, 4)
    assert warped.landed.sum() == 1
    pixel = warped.landed.nonzero()[0]
    assert torch.allclose(warped.image[pixel[0], pixel[1]], torch.full((3,), 0.2, dtype=torch.float64))
    assert warped.depth[pixel[0], pixel[1]] == pytest.approx(1.0)


def test_interpolated_cameras_are_rigid_and_pass_through_both_ends(scene):
    first, second = camera_to_world(scene.cam_from_world[1]), camera_to_world(scene.cam_from_world[3])
    assert torch.allclose(interpolate_camera(first, second, 0.0), first, atol=1e-9)
    assert torch.allclose(interpolate_camera(first, second, 1.0), second, atol=1e-9)
    middle = interpolate_camera(first, second, 0.5)
    assert torch.allclose(middle[:, :3] @ middle[:, :3].T, torch.eye(3, dtype=middle.dtype), atol=1e-9)
    assert torch.allclose(middle[:, 3], 0.5 * (first[:, 3] + second[:, 3]))
    beyond = interpolate_camera(first, second, 1.25)
    assert torch.allclose(beyond[:, 3], second[:, 3] + 0.25 * (second[:, 3] - first[:, 3]))
