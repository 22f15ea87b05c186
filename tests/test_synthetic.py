import numpy as np


def test_depth_and_ids_agree_with_the_scene_geometry(scene):
    """Unprojected depth lands on the plane of each object id (ground z=0, back wall y=3)."""
    view = scene.render(2)
    k_inv = np.linalg.inv(scene.intrinsics)
    rot, trans = scene.cam_from_world[2][:, :3], scene.cam_from_world[2][:, 3]
    ys, xs = np.mgrid[0 : scene.height, 0 : scene.width] + 0.5
    rays = np.stack([xs, ys, np.ones_like(xs)], -1) @ k_inv.T
    points = (rays * view.depth[..., None] - trans) @ rot  # world = R^T (X_cam - t)
    ground, wall = view.object_ids == 0, view.object_ids == 1
    assert ground.sum() > 1000 and wall.sum() > 1000
    np.testing.assert_allclose(points[ground][:, 2], 0.0, atol=1e-4)
    np.testing.assert_allclose(points[wall][:, 1], 3.0, atol=1e-4)
    assert np.isinf(view.depth[view.object_ids < 0]).all()
    assert len(np.unique(view.object_ids[view.object_ids >= 3])) >= 3  # boxes are visible


def test_views_are_textured_enough_for_features(scene):
    image = scene.render(0).image.astype(float)
    grad = np.abs(np.diff(image, axis=1)).mean()
    assert grad > 2.0
