import numpy as np

from spars_ns.geometry import camera_center, centred_pinhole, inverse_transform, look_at
from spars_ns.synthetic import WALL_REPEATS, camera_points, make_walkaround, render_view


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


def test_a_walkaround_spreads_its_views_round_the_boxes_and_each_sees_them():
    """Six views all round: neighbouring cameras 60 degrees apart about the middle (give or take
    their jitter of a tenth of a step), each aimed at the boxes, which every view sees in front
    of the yard's walls (x or y at +-8)."""
    scene = make_walkaround(num_views=6, width=192, height=144, arc_degrees=360, seed=3)
    centres = np.stack([camera_center(c) for c in scene.cam_from_world])
    azimuths = np.rad2deg(np.arctan2(centres[:, 1], centres[:, 0]))
    steps = (np.diff(np.r_[azimuths, azimuths[0] + 360]) + 360) % 360
    np.testing.assert_allclose(steps, 60, atol=12.1)
    for index in range(scene.num_views):
        points, view = camera_points(scene, index)
        world = inverse_transform(points[np.isfinite(view.depth)], scene.cam_from_world[index])
        ids = view.object_ids[np.isfinite(view.depth)]
        walls = (ids >= 1) & (ids <= 4)
        np.testing.assert_allclose(np.abs(world[walls][:, :2]).max(axis=1), 8.0, atol=1e-3)
        np.testing.assert_allclose(world[ids == 0][:, 2], 0.0, atol=1e-3)
        assert len(np.unique(ids[ids >= 5])) >= 2
        assert (ids >= 5).mean() > 0.05


def test_a_camera_moved_one_tile_along_a_repeated_wall_sees_the_same_picture():
    """With `repeated`, a camera facing a wall sees the same picture one tile (16 / WALL_REPEATS units)
    further along it, where the plain yard's wall looks different: the repetition SfM can mistake for
    the wrong place. Cameras, ground and boxes are the plain scene's, so the two compare capture by
    capture."""
    plain = make_walkaround(num_views=4, arc_degrees=180, seed=1)
    repeated = make_walkaround(num_views=4, arc_degrees=180, seed=1, repeated=True)
    np.testing.assert_array_equal(repeated.cam_from_world, plain.cam_from_world)
    assert np.array_equal(repeated.quads[0].texture, plain.quads[0].texture)  # the ground
    intrinsics = centred_pinhole(200.0, 96, 64)  # a narrow view that sees only the wall at y = -8
    period = 16.0 / WALL_REPEATS

    def picture(scene, x):
        eye = np.array([x, -5.0, 2.5])
        view = render_view(scene.quads, intrinsics, look_at(eye, eye - [0, 1, 0], up=np.array([0, 0, 1.0])), 96, 64)
        assert (view.object_ids == 1).all()
        return view.image.astype(float)

    assert np.abs(picture(repeated, -2.0) - picture(repeated, -2.0 + period)).mean() < 1  # texel rounding
    assert np.abs(picture(plain, -2.0) - picture(plain, -2.0 + period)).mean() > 10
