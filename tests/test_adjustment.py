"""The robust last bundle adjustment (spars_ns/stages/sfm/adjustment.py) against known truth."""

import numpy as np
import pycolmap
from conftest import true_poses

from spars_ns.metrics import model_poses, pair_errors_deg
from spars_ns.stages.sfm import adjustment


def test_false_matches_make_residuals_heavy_tailed_and_gaussian_noise_does_not():
    rng = np.random.default_rng(0)
    assert not adjustment.heavy_tailed(rng.normal(0, 0.6, (5000, 2)))  # the fox's spread
    assert not adjustment.heavy_tailed(rng.normal(0, 0.15, (5000, 2)))  # Strecha's: the scale does not matter
    with_false_matches = rng.normal(0, 0.15, (5000, 2))
    with_false_matches[:100] = rng.uniform(-4, 4, (100, 2))  # one in fifty anywhere in COLMAP's 4 px
    assert adjustment.heavy_tailed(with_false_matches)
    assert not adjustment.heavy_tailed(np.zeros((0, 2)))


def test_the_robust_last_adjustment_lets_false_observations_go(processed, scene):
    """One observation in twenty moved 3 px (false matches that COLMAP's 4 px filter keeps): a plain
    adjustment follows them, the robust one stays near the model made without them."""
    rng = np.random.default_rng(0)
    corrupted = pycolmap.Reconstruction(processed.sparse_dir)
    for image in corrupted.images.values():
        for point in image.points2D:
            if point.has_point3D() and rng.random() < 0.05:
                point.xy = point.xy + 3.0 * np.array([np.cos(angle := rng.uniform(0, 2 * np.pi)), np.sin(angle)])
    plain = pycolmap.Reconstruction(corrupted)
    adjustment.adjust(plain)
    robust = pycolmap.Reconstruction(corrupted)
    assert adjustment.refine_robustly(robust)

    def errors(model):
        pairs = pair_errors_deg(model_poses(model), true_poses(scene))
        return np.median(list(pairs.values())), abs(model.cameras[1].params[0] / scene.intrinsics[0, 0] - 1)

    clean_error, clean_focal = errors(pycolmap.Reconstruction(processed.sparse_dir))
    (plain_error, plain_focal), (robust_error, robust_focal) = errors(plain), errors(robust)
    assert robust_error - clean_error < 0.5 * (plain_error - clean_error)  # measured: 0.04 against 0.17 degrees
    assert robust_focal - clean_focal < 0.25 * (plain_focal - clean_focal)  # 0.02% against 0.45%

    pointless = pycolmap.Reconstruction(processed.sparse_dir)  # low parallax can leave a model no points
    for point_id in list(pointless.point3D_ids()):
        pointless.delete_point3D(point_id)
    assert not adjustment.refine_robustly(pointless)
    before = model_poses(pycolmap.Reconstruction(processed.sparse_dir))
    assert all(np.array_equal(pose, before[name]) for name, pose in model_poses(pointless).items())


def test_a_model_whose_residuals_are_gaussian_is_left_as_colmap_adjusted_it(processed):
    """Every keypoint at its point's projection plus Gaussian noise of 0.6 px (as the fox's frames,
    whose residuals a Gaussian explains): no robust adjustment, the model bit-identical."""
    model = pycolmap.Reconstruction(processed.sparse_dir)
    noisy = reprojected(model, next(iter(model.cameras.values())), 0.6, seed=0)
    before = model_poses(noisy)
    assert not adjustment.refine_robustly(noisy)
    assert all(np.array_equal(pose, before[name]) for name, pose in model_poses(noisy).items())


def reprojected(model: pycolmap.Reconstruction, lens: pycolmap.Camera, noise_px: float, seed: int):
    """A copy of `model` whose every keypoint is its point's projection through `lens` plus
    Gaussian noise of `noise_px`."""
    rng = np.random.default_rng(seed)
    copy = pycolmap.Reconstruction(model)
    for image in copy.images.values():
        for point in image.points2D:
            if point.has_point3D():
                xyz = copy.point3D(point.point3D_id).xyz
                point.xy = lens.img_from_cam(image.cam_from_world() * xyz) + rng.normal(0, noise_px, 2)
    return copy


def observed_through(model: pycolmap.Reconstruction, lens: pycolmap.Camera, noise_px: float, seed: int):
    """`reprojected` through `lens`, adjusted with a one-term radial camera (SIMPLE_RADIAL) as
    COLMAP's mapper leaves it: the model's own poses and focal length are the truth to measure against."""
    observed = reprojected(model, lens, noise_px, seed)
    for camera in observed.cameras.values():
        camera.model = pycolmap.CameraModelId.SIMPLE_RADIAL
        camera.params = [lens.mean_focal_length(), lens.principal_point_x, lens.principal_point_y, 0.0]
    adjustment.adjust(observed)
    return observed


def test_a_lens_one_radial_term_cannot_follow_gets_a_second(processed):
    """Keypoints seen through a two-term lens (k1 0.04, k2 -0.06: a few pixels at the corners, as
    the fox's) with 0.1 px of noise: the second term is kept and estimated, and the poses and focal
    length come closer to the truth than the one-term fit's (over three draws of the noise: one
    draw can go either way). Through a one-term lens the F-test leaves the model as it is, and so
    does a model of three photos, too few to tell the second term from the focal length."""
    truth = pycolmap.Reconstruction(processed.sparse_dir)
    camera = next(iter(truth.cameras.values()))
    true_focal = camera.mean_focal_length()

    def lens(model: str, distortion: list[float]) -> pycolmap.Camera:
        params = [true_focal, camera.principal_point_x, camera.principal_point_y, *distortion]
        return pycolmap.Camera(model=model, width=camera.width, height=camera.height, params=params)

    def errors(model: pycolmap.Reconstruction) -> tuple[float, float]:
        pairs = pair_errors_deg(model_poses(model), model_poses(truth))
        return np.median(list(pairs.values())), abs(
            next(iter(model.cameras.values())).mean_focal_length() / true_focal - 1
        )

    one_term_errors, two_term_errors = [], []
    for seed in range(3):
        one_term = observed_through(truth, lens("RADIAL", [0.04, -0.06]), 0.1, seed)
        two_terms = adjustment.with_second_radial_term(one_term)
        assert two_terms is not None
        fitted = next(iter(two_terms.cameras.values()))
        assert fitted.model == pycolmap.CameraModelId.RADIAL and abs(fitted.params[4] + 0.06) < 0.01
        one_term_errors.append(errors(one_term))
        two_term_errors.append(errors(two_terms))
    (one_pose, one_focal), (two_pose, two_focal) = np.mean(one_term_errors, 0), np.mean(two_term_errors, 0)
    assert two_pose < 0.75 * one_pose and two_focal < 0.5 * one_focal  # measured: 0.041 / 0.080 deg, 0.17 / 0.47%

    for seed in range(3):
        one_term = observed_through(truth, lens("SIMPLE_RADIAL", [0.04]), 0.1, seed)
        assert adjustment.with_second_radial_term(one_term) is None

    three_photos = observed_through(truth, lens("RADIAL", [0.04, -0.06]), 0.1, 0)
    for image in list(three_photos.images.values())[3:]:
        three_photos.deregister_frame(image.frame_id)
    assert three_photos.num_reg_images() == 3 and adjustment.with_second_radial_term(three_photos) is None


def sliding(model: pycolmap.Reconstruction, baseline: float) -> pycolmap.Reconstruction:
    """A copy of `model` whose photos all look the first one's way, from `baseline` (scene units)
    apart along the line to the second photo's centre: a camera on a slider."""
    copy = pycolmap.Reconstruction(model)
    images = [copy.image(i) for i in sorted(copy.reg_image_ids())]
    rotation = images[0].cam_from_world().rotation.matrix()
    origin = images[0].projection_center()
    step = images[1].projection_center() - origin
    for k, image in enumerate(images):
        centre = origin + k * baseline * step / np.linalg.norm(step)
        copy.frame(image.frame_id).rig_from_world = pycolmap.Rigid3d(pycolmap.Rotation3d(rotation), -rotation @ centre)
    return copy


def test_photos_that_only_move_sideways_leave_the_focal_length_open(processed):
    """Photos that differ by a translation alone fit any focal length (the points stretched across the
    view by its ratio, each projection the same): the check finds it open, from any baseline, while
    the room's photos on their 60-degree arc fix it. Every keypoint is its point's projection plus
    0.1 px of noise."""
    model = pycolmap.Reconstruction(processed.sparse_dir)
    lens = next(iter(model.cameras.values()))
    cameras = set(model.cameras)
    assert not adjustment.focal_length_undetermined(reprojected(model, lens, 0.1, seed=0), cameras)
    for baseline in (0.2, 1.0):  # the room is 8 units across
        slid = reprojected(sliding(model, baseline), lens, 0.1, seed=0)
        assert adjustment.focal_length_undetermined(slid, cameras)
        assert not adjustment.focal_length_undetermined(slid, set())  # no camera to check: nothing in doubt


def test_a_distant_point_does_not_make_a_fixed_focal_length_read_as_open(processed):
    """A point far beyond the scene (a distant landmark, or a false match of nearly parallel rays) can
    cross to behind the cameras when the focal length is held off: its rays diverge, and the
    adjustment's cost projects a point behind a camera all the same (x/z, as COLMAP's does). The check
    must weigh that fit as the adjustment does, not lose it to a NaN (10 of 60 fountain-P11 captures
    read as "open" so). The room's longest track moved 300 units out (the room is 8 across), every
    keypoint of it its projection: the room's arc still fixes the focal length."""
    mapped = pycolmap.Reconstruction(processed.sparse_dir)
    model = reprojected(mapped, next(iter(mapped.cameras.values())), 0.1, seed=0)
    point_id = max(model.points3D, key=lambda i: model.point3D(i).track.length())
    track = model.point3D(point_id).track.elements
    centre = model.image(track[0].image_id).projection_center()
    ray = model.point3D(point_id).xyz - centre
    distant = centre + 300 * ray / np.linalg.norm(ray)
    model.point3D(point_id).xyz = distant
    for element in track:
        image = model.image(element.image_id)
        keypoint = model.camera(image.camera_id).img_from_cam(image.cam_from_world() * distant)
        image.points2D[element.point2D_idx].xy = keypoint
    held = pycolmap.Reconstruction(model)
    for camera in held.cameras.values():
        camera.params = [camera.params[0] * adjustment.FOCAL_CHECK_FACTORS[1], *camera.params[1:]]
    options = pycolmap.BundleAdjustmentOptions()
    options.refine_focal_length = False
    adjustment.adjust(held, options)
    depths = [(held.image(e.image_id).cam_from_world() * held.point3D(point_id).xyz)[2] for e in track]
    assert min(depths) < 0  # held a tenth longer, the rays diverge: the point crosses behind the cameras
    assert np.isfinite(adjustment.reprojection_residuals(held)).all()
    assert not adjustment.focal_length_undetermined(model, set(model.cameras))


def test_an_adjustment_is_pycolmaps_bit_for_bit_and_leaves_colmaps_log_level_alone(processed, capfd):
    """pycolmap.bundle_adjustment logs a heading and leaves COLMAP's log level at INFO, so every later COLMAP
    step of `spars-ns process` wrote its lines over the progress display; `adjust` does the same sums quietly."""
    ours = pycolmap.Reconstruction(processed.sparse_dir)
    for image in ours.images.values():  # moved off the optimum, so that both have work to do
        for point in image.points2D:
            point.xy = point.xy + 0.7
    pycolmaps = pycolmap.Reconstruction(ours)
    level = pycolmap.logging.minloglevel
    try:
        pycolmap.logging.minloglevel = 2
        capfd.readouterr()
        adjustment.adjust(ours)
        assert pycolmap.logging.minloglevel == 2 and "adjustment" not in capfd.readouterr().err
        options = pycolmap.BundleAdjustmentOptions(print_summary=False)
        options.ceres.solver_options.num_threads = 1
        options.ceres.solver_options.max_num_iterations = 500
        pycolmap.bundle_adjustment(pycolmaps, options)
    finally:
        pycolmap.logging.minloglevel = level
    assert not np.array_equal(ours.cameras[1].params, pycolmap.Reconstruction(processed.sparse_dir).cameras[1].params)
    assert np.array_equal(ours.cameras[1].params, pycolmaps.cameras[1].params)
    before = model_poses(pycolmaps)
    assert all(np.array_equal(pose, before[name]) for name, pose in model_poses(ours).items())
    assert all(np.array_equal(p.xyz, pycolmaps.points3D[i].xyz) for i, p in ours.points3D.items())
