"""The SfM stage and the processed-scene folder, checked against the synthetic ground truth."""

import dataclasses
import json
import logging
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pycolmap
import pytest
from conftest import sfm_from_true, true_poses
from PIL import Image
from plyfile import PlyData

import spars_ns
import spars_ns.stages.export.stage as export_stage
import spars_ns.stages.sfm.stage as sfm_stage
from spars_ns.errors import InputError, SfMError
from spars_ns.geometry import opengl_c2w_to_opencv, rotation_angle_deg
from spars_ns.metrics import model_poses, pair_errors_deg
from spars_ns.options import PriorConfig
from spars_ns.process import ProcessConfig, process, split_names
from spars_ns.scene import SceneFolder
from spars_ns.stages.align.stage import AlignedPrior
from spars_ns.stages.ingest.images import file_sha1, ingest_image
from spars_ns.stages.ingest.stage import load_records
from spars_ns.stages.prior.files import FilesConfig
from spars_ns.stages.sfm import mapping
from spars_ns.stages.sfm.config import SfMConfig
from spars_ns.stages.sfm.mapping import MatchGraph, map_training_views
from spars_ns.synthetic import make_walkaround

TEST_VIEWS = ["view_000.png", "view_004.png"]


def test_every_view_registers_with_accurate_poses(processed, scene):
    report = json.loads((processed.sfm_dir / "report.json").read_text())
    assert report["unregistered"] == {}
    assert report["registered_test"] == TEST_VIEWS
    assert report["init_pairs_tried"] == mapping.MAX_INIT_PAIRS  # small sets: every start is mapped
    assert report["model_check"]["pairs_checked"] >= 10 and report["model_check"]["doubtful_images"] == []
    assert set(report["seconds"]) == {"features_and_matches", "mapping", "test_views"}
    assert report["blas_kernels"] == os.environ.get("OPENBLAS_CORETYPE", "the processor's choice")
    estimated = model_poses(pycolmap.Reconstruction(processed.sparse_with_test_dir))
    assert sorted(estimated) == [scene.image_name(i) for i in range(scene.num_views)]
    errors = pair_errors_deg(estimated, true_poses(scene))
    assert max(errors.values()) < 1.0
    camera = pycolmap.Reconstruction(processed.sparse_dir).cameras[1]
    assert camera.params[0] == pytest.approx(scene.intrinsics[0, 0], rel=0.02)


def test_an_exif_focal_length_no_lens_gives_is_not_a_prior(processed, scene, tmp_path, caplog):
    """Some cameras write 35 mm equivalents hundreds of times too long. A photo whose EXIF gives a focal
    length outside the mapper's bounds for a camera (0.1-10 times its larger side) starts from no prior,
    named in a warning; a plausible one stays the camera's prior."""
    true_focal = float(scene.intrinsics[0, 0])
    records = [
        dataclasses.replace(r, focal_prior=true_focal * (1000.0 if r.name == "view_001.png" else 1.0))
        for r in load_records(processed)
    ]
    with caplog.at_level(logging.WARNING):
        mapping.import_images(tmp_path / "database.db", processed.images_dir, records, SfMConfig())
    assert "view_001.png" in caplog.text and "view_002.png" not in caplog.text
    db = pycolmap.Database.open(tmp_path / "database.db")
    try:
        cameras = {c.camera_id: c for c in db.read_all_cameras()}
        camera_of = {image.name: cameras[image.camera_id] for image in db.read_all_images()}
    finally:
        db.close()
    assert not camera_of["view_001.png"].has_prior_focal_length
    assert camera_of["view_001.png"].mean_focal_length() < 10 * max(scene.width, scene.height)
    others = {camera_of[r.name].camera_id for r in records if r.name != "view_001.png"}
    assert len(others) == 1 and cameras[others.pop()].has_prior_focal_length
    assert camera_of["view_002.png"].mean_focal_length() == pytest.approx(true_focal)


def test_the_calibrated_pairs_start_from_the_focal_length_the_pairs_give(processed, scene, tmp_path):
    """COLMAP starts a camera without EXIF at 1.2 times the photo's larger side (here 384 px for a true
    focal length of 288); the pairs' fundamental matrices give the calibrated copy's cameras a prior near
    the truth, and its pairs are verified as calibrated (an essential matrix). The database copied is
    left as it was; with EXIF focal lengths, or under four photos whose first model stands, no copy is made."""
    database = processed.sfm_dir / "database.db"
    graph = MatchGraph(database)  # opening a database may rewrite its file: before the copy is checked
    before = file_sha1(database)
    records = load_records(processed)
    calibrated = tmp_path / "calibrated" / "database.db"
    from_pairs = mapping.calibrated_matches(database, calibrated, records, SfMConfig(), graph, stands_short=False)
    assert sorted(from_pairs) == sorted(r.name for r in records) and file_sha1(database) == before
    db = pycolmap.Database.open(calibrated)
    try:
        for camera in db.read_all_cameras():
            assert camera.has_prior_focal_length
            assert camera.mean_focal_length() == pytest.approx(scene.intrinsics[0, 0], rel=0.03)
        configs = {geometry.config for geometry in db.read_two_view_geometries()[1]}
    finally:
        db.close()
    assert configs == {pycolmap.TwoViewGeometryConfiguration.CALIBRATED}

    with_exif = [dataclasses.replace(r, focal_prior=float(scene.intrinsics[0, 0])) for r in records]
    elsewhere = tmp_path / "none" / "database.db"
    assert mapping.calibrated_matches(database, elsewhere, with_exif, SfMConfig(), graph, stands_short=True) == {}
    assert mapping.calibrated_matches(database, elsewhere, records[:3], SfMConfig(), graph, stands_short=False) == {}
    assert not elsewhere.parent.exists()


def test_larger_sets_stop_at_the_first_complete_model(processed, tmp_path, monkeypatch):
    database = processed.sfm_dir / "database.db"
    train = sorted(n for n in json.loads((processed.sfm_dir / "report.json").read_text())["registered_train"])
    monkeypatch.setattr(mapping, "ALL_STARTS_UP_TO", 4)
    model, _, starts = map_training_views(database, MatchGraph(database), processed.images_dir, train, tmp_path)
    assert starts == 1 and model.num_reg_images() == len(train) == 6


def fox_model(focal: float, k1: float) -> pycolmap.Reconstruction:
    model = pycolmap.Reconstruction()
    model.add_camera(pycolmap.Camera.create_from_model_name(1, "SIMPLE_RADIAL", focal, 540, 960))
    model.camera(1).params = [focal, 270, 480, k1]
    return model


def test_models_with_intrinsics_no_lens_gives_are_implausible():
    options = pycolmap.IncrementalMapperOptions()
    assert not mapping.implausible_cameras(fox_model(688.0, 0.01), options)  # the fox's true focal length
    assert mapping.implausible_cameras(fox_model(16_763.0, -85.0), options)  # measured on 0007, 0039, 0115
    assert mapping.implausible_cameras(fox_model(688.0, -1.5), options)
    assert mapping.implausible_cameras(fox_model(60.0, 0.0), options)


def test_mapping_discards_models_with_implausible_intrinsics(processed, tmp_path, monkeypatch, caplog):
    """With bounds that the scene's true camera (345.6 px for 384x288 photos) falls outside, no start's
    model is kept, and the log says why."""
    database = processed.sfm_dir / "database.db"
    train = sorted(json.loads((processed.sfm_dir / "report.json").read_text())["registered_train"])
    usual = mapping.mapper_options

    def narrow_bounds(*args, **kwargs):
        options = usual(*args, **kwargs)
        options.mapper.min_focal_length_ratio = 1.0
        return options

    monkeypatch.setattr(mapping, "mapper_options", narrow_bounds)
    model, _, starts = map_training_views(database, MatchGraph(database), processed.images_dir, train, tmp_path)
    assert model is None
    assert f"{starts} of {starts} starts gave models with implausible intrinsics" in caplog.text


def keep_busy(stop) -> None:
    while not stop.is_set():
        pass


@pytest.mark.slow
def test_mapping_gives_bit_identical_cameras_beside_busy_processes(processed, tmp_path, monkeypatch):
    """COLMAP bundle-adjusts on several threads above 50,000 residuals (photos of 768x512 and
    more reach it), and their sums then depend on which thread finishes first. Forced on here
    for the small synthetic scene; with the machine busy too, the cameras and points must be
    the same bit for bit, and so must global mapping's."""
    import multiprocessing

    real_options = pycolmap.IncrementalPipelineOptions

    def large_problem():
        options = real_options()
        options.ba_min_num_residuals_for_cpu_multi_threading = 0
        return options

    monkeypatch.setattr(pycolmap, "IncrementalPipelineOptions", large_problem)
    database = processed.sfm_dir / "database.db"
    train = sorted(json.loads((processed.sfm_dir / "report.json").read_text())["registered_train"])
    results = []
    for busy in (0, 2, 0, 3):
        stop = multiprocessing.Event()
        workers = [multiprocessing.Process(target=keep_busy, args=(stop,)) for _ in range(busy)]
        for worker in workers:
            worker.start()
        try:
            model, _, _ = map_training_views(
                database, MatchGraph(database), processed.images_dir, train, tmp_path / str(len(results))
            )
            globally = mapping.map_globally(database, processed.images_dir, train, tmp_path / f"global{len(results)}")
        finally:
            stop.set()
            for worker in workers:
                worker.join()
        results.append([])
        for found in (model, globally):
            points = np.array(sorted(tuple(p.xyz) for p in found.points3D.values()))
            poses = sorted((name, pose.tobytes()) for name, pose in model_poses(found).items())
            results[-1] += [poses, points.tobytes()]
    assert all(result == results[0] for result in results[1:])


GLOBAL_MAPPING_DIGEST = """
import hashlib, json, sys
from pathlib import Path
import spars_ns
from spars_ns.stages.sfm import mapping
database, images, train, out = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3]), Path(sys.argv[4])
model = mapping.map_globally(database, images, train, out)
poses = b"".join(image.cam_from_world().matrix().tobytes() for _, image in sorted(model.images.items()))
print(hashlib.sha256(poses + b"".join(c.params.tobytes() for c in model.cameras.values())).hexdigest())
"""


@pytest.mark.slow
def test_global_mapping_gives_the_same_cameras_on_any_processor_with_avx2(processed, tmp_path, machine):
    """pycolmap's own OpenBLAS picks its kernels by the processor, and global mapping's solvers sum in
    their order: on this scene an AVX-512 processor gave other cameras than an AVX2 one, in the last
    bits. spars_ns pins the kernels as it loads; a process that leaves the choice to it must get the
    cameras of a process told those kernels outright (on a processor with AVX-512 this failed before)."""
    train = json.dumps(sorted(json.loads((processed.sfm_dir / "report.json").read_text())["registered_train"]))
    digests = []
    for env in (machine, {**machine, "OPENBLAS_CORETYPE": spars_ns.BLAS_KERNELS}):
        arguments = [processed.sfm_dir / "database.db", processed.images_dir, train, tmp_path / str(len(digests))]
        run = subprocess.run(
            [sys.executable, "-c", GLOBAL_MAPPING_DIGEST, *map(str, arguments)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        digests.append(run.stdout.strip())
    assert digests[0] == digests[1]


def blas_kernels_of_a_fresh_process(env: dict[str, str], imports: str = "spars_ns") -> tuple[str, str]:
    """OPENBLAS_CORETYPE in a process started with `env` once it has imported `imports` (in that order),
    and what it wrote to stderr."""
    probe = f"import os, {imports}; print(os.environ.get('OPENBLAS_CORETYPE', ''))"
    run = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    return run.stdout.strip(), run.stderr


@pytest.fixture
def machine() -> dict[str, str]:
    """This process's environment with no kernel chosen, on a processor whose kernels spars_ns pins."""
    env = {key: value for key, value in os.environ.items() if key != "OPENBLAS_CORETYPE"}
    if blas_kernels_of_a_fresh_process(env)[0] != spars_ns.BLAS_KERNELS:
        pytest.skip("a processor without AVX2 and FMA: spars_ns leaves OpenBLAS its own kernels")
    return env


def test_a_blas_kernel_the_user_chose_stays():
    chosen = {**os.environ, "OPENBLAS_CORETYPE": "Sandybridge"}
    assert blas_kernels_of_a_fresh_process(chosen)[0] == "Sandybridge"


def test_pycolmap_imported_first_keeps_its_kernels_and_says_so(machine):
    """Too late to pin once pycolmap's OpenBLAS has chosen: the process must not claim kernels it does
    not run (its children would run others), and it must say how to pin them."""
    kernels, stderr = blas_kernels_of_a_fresh_process(machine, imports="pycolmap, spars_ns")
    assert kernels == ""
    assert "pycolmap was imported before spars_ns" in stderr
    assert f"OPENBLAS_CORETYPE={spars_ns.BLAS_KERNELS}" in stderr


def test_test_views_leave_the_training_model_bit_identical(processed):
    train = pycolmap.Reconstruction(processed.sparse_dir)
    with_test = pycolmap.Reconstruction(processed.sparse_with_test_dir)
    assert not any(name in TEST_VIEWS for name in model_poses(train))
    for image_id, image in train.images.items():
        assert np.array_equal(with_test.image(image_id).cam_from_world().matrix(), image.cam_from_world().matrix())
    for camera_id, camera in train.cameras.items():
        assert np.array_equal(with_test.camera(camera_id).params, camera.params)
    assert set(with_test.points3D) == set(train.points3D)
    for point_id, point in train.points3D.items():
        assert np.array_equal(with_test.point3D(point_id).xyz, point.xyz)
        assert point.track.length() == with_test.point3D(point_id).track.length()


def test_transforms_and_points_match_the_true_geometry(processed, scene):
    meta = json.loads(processed.transforms_path.read_text())
    assert meta["test_filenames"] == [f"images/{n}" for n in TEST_VIEWS]
    assert len(meta["train_filenames"]) == 6 and not set(meta["train_filenames"]) & set(meta["test_filenames"])
    assert (processed.root / meta["ply_file_path"]).exists()
    estimated = {
        f["file_path"].split("/")[-1]: opengl_c2w_to_opencv(np.array(f["transform_matrix"])) for f in meta["frames"]
    }
    assert max(pair_errors_deg(estimated, true_poses(scene)).values()) < 1.0

    # Map the seed points into the true frame via one camera, then compare with the true depth.
    vertices = PlyData.read(str(processed.points_path))["vertex"]
    xyz = np.stack([vertices["x"], vertices["y"], vertices["z"]], 1).astype(float)
    assert len(xyz) > 200
    name = "view_002.png"
    est = estimated[name]
    in_cam = xyz @ est[:, :3].T + est[:, 3]
    # The reconstruction's gauge is arbitrary: bring its depths to the true scale.
    sfm_scale = np.linalg.norm(sfm_from_true(scene, pycolmap.Reconstruction(processed.sparse_with_test_dir))[:, 0])
    in_cam /= sfm_scale
    uv = in_cam @ scene.intrinsics.T
    u, v = (uv[:, 0] / uv[:, 2]).astype(int), (uv[:, 1] / uv[:, 2]).astype(int)
    inside = (in_cam[:, 2] > 0) & (u >= 0) & (u < scene.width) & (v >= 0) & (v < scene.height)
    true_depth = scene.render(2).depth[v[inside], u[inside]]
    hit = np.isfinite(true_depth)
    rel = np.abs(in_cam[inside, 2][hit] - true_depth[hit]) / true_depth[hit]
    # Median: a few points are hidden from this view behind a box.
    assert hit.sum() > 100 and np.median(rel) < 0.01


def test_rerun_skips_and_changed_split_reruns_sfm(processed, photos):
    before = processed.read_manifest()["stages"]
    again = process(ProcessConfig(images=photos, output=processed.root, test_every=4))
    assert again.read_manifest()["stages"] == before
    entry = before["sfm"]
    assert entry["versions"]["pycolmap"] == pycolmap.__version__ and entry["counts"]["train_registered"] == 6
    assert entry["seconds"] > 0 and entry["config"]["features"] == "sift" and len(entry["config"]["train"]) == 6


@pytest.mark.slow  # a full processing run
def test_killed_run_resumes_and_leaves_no_half_written_outputs(photos, tmp_path, monkeypatch):
    output = tmp_path / "scene"
    sources = {p.name: (file_sha1(p), p.stat().st_mtime_ns) for p in photos.iterdir()}

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export_stage, "transforms_dict", killed)
    with pytest.raises(KeyboardInterrupt):
        process(ProcessConfig(images=photos, output=output, test_every=4))
    stages = json.loads((output / "manifest.json").read_text())["stages"]
    finished = {name for name, entry in stages.items() if "fingerprint" in entry}
    assert finished == {"ingest", "sfm"} and not (output / "transforms.json").exists()
    assert stages["export"] == {"outputs": ["points.ply", "transforms.json"]}  # what the killed stage was writing

    monkeypatch.undo()
    monkeypatch.setattr(sfm_stage, "run_sfm", killed)  # SfM must not run again
    scene = process(ProcessConfig(images=photos, output=output, test_every=4))
    assert scene.transforms_path.exists() and scene.read_manifest()["stages"]["sfm"] == stages["sfm"]
    assert not list(output.rglob(".*.partial"))
    assert {p.name: (file_sha1(p), p.stat().st_mtime_ns) for p in photos.iterdir()} == sources


def test_interrupted_sfm_keeps_the_previous_model(processed, photos, tmp_path, monkeypatch):
    output = tmp_path / "scene"
    shutil.copytree(processed.root, output)
    before = (output / "sparse" / "0" / "images.bin").read_bytes()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sfm_stage, "run_sfm", killed)
    with pytest.raises(KeyboardInterrupt):
        process(ProcessConfig(images=photos, output=output, test_every=2))  # new split: SfM reruns
    assert (output / "sparse" / "0" / "images.bin").read_bytes() == before
    assert not list(output.rglob(".*.partial"))


@pytest.fixture(scope="module")
def awkward_folder(photos, tmp_path_factory):
    """The synthetic photos as people's folders hold them, processed once with view 4 held out:
    view_003 cropped (another size), view_005 grayscale, view_006 named with a space."""
    folder = tmp_path_factory.mktemp("awkward") / "photos"
    shutil.copytree(photos, folder)
    # A centred crop keeps the principal point at the centre: a second, different camera.
    Image.open(folder / "view_003.png").crop((20, 15, 300, 225)).save(folder / "view_003.png")
    Image.open(folder / "view_005.png").convert("L").save(folder / "view_005.png")
    (folder / "view_006.png").rename(folder / "view 006.png")
    return process(ProcessConfig(images=folder, output=folder.parent / "scene", test_views=("view 004.png",)))


@pytest.mark.slow
def test_mixed_sizes_and_grayscale_get_their_own_cameras(awkward_folder, scene):
    model = pycolmap.Reconstruction(awkward_folder.sparse_dir)
    cameras = {im.name: model.camera(im.camera_id) for im in model.images.values()}
    assert len(model.cameras) == 2 and len(cameras) == 7  # every training view (view_004 is held out)
    assert (cameras["view_003.png"].width, cameras["view_003.png"].height) == (280, 210)
    assert cameras["view_003.png"].camera_id != cameras["view_002.png"].camera_id
    assert cameras["view_005.png"].camera_id == cameras["view_002.png"].camera_id
    # The cropped view's focal length is estimated from that view alone: a looser bound for its pairs.
    truth = {name: pose for name, pose in true_poses(scene).items() if name in cameras}
    errors = pair_errors_deg(model_poses(model), truth)
    assert max(errors.values()) < 2.0 and np.median(list(errors.values())) < 0.5


def test_unrelated_photos_fail_with_what_registered_and_what_to_try(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "noise"
    folder.mkdir()
    for i in range(3):
        Image.fromarray((rng.random((120, 160, 3)) * 255).astype(np.uint8)).save(folder / f"n{i}.png")
    with pytest.raises(SfMError) as err:
        process(ProcessConfig(images=folder, output=tmp_path / "scene"))
    message = str(err.value)
    assert "registered 0 of 3" in message and "n1.png" in message and "Try:" in message


def test_two_photos_from_one_place_are_reported_as_no_initial_pair(photos, tmp_path):
    """They match well but cannot be triangulated: the message says why (one homography maps one photo onto
    the other), not 'no verified matches'."""
    folder = tmp_path / "twins"
    folder.mkdir()
    photo = Image.open(photos / "view_001.png")
    photo = photo.resize((photo.width // 2, photo.height // 2), Image.Resampling.LANCZOS)  # fewer features: faster
    for name in ("a.png", "b.png"):
        photo.save(folder / name)
    with pytest.raises(SfMError) as err:
        process(ProcessConfig(images=folder, output=tmp_path / "scene"))
    message = " ".join(str(err.value).split())
    assert re.search(r"a\.png: \d{3,} verified matches with b\.png, but one homography explains most", message), message
    assert "no verified matches" not in message and "further apart" in message and "in between" not in message


def ingested(scene, folder):
    """The scene's photos written to `folder`/photos and ingested into `folder`/images, as SfM reads them."""
    scene.write_images(folder / "photos")
    (folder / "images").mkdir()
    return [ingest_image(path, folder / "images", file_sha1(path)) for path in sorted((folder / "photos").iterdir())]


def test_photos_far_apart_around_the_scene_ask_for_photos_in_between(tmp_path):
    """Four photos all round the boxes, over 60 degrees apart: neighbours match (101-144 verified
    matches) but share no point with a third photo, so no model starts (the mapper's four starts
    fail: BENCHMARKS.md, "Walked all round"). Each photo is told so, and asked for photos in
    between, not from further apart."""
    scene = make_walkaround(num_views=4, arc_degrees=360, seed=0)
    turns = [
        rotation_angle_deg(scene.cam_from_world[(i + 1) % 4][:, :3] @ scene.cam_from_world[i][:, :3].T)
        for i in range(4)
    ]
    assert min(turns) > 60
    records = ingested(scene, tmp_path)
    mapping.extract_and_match(tmp_path / "database.db", tmp_path / "images", records, SfMConfig())
    graph = MatchGraph(tmp_path / "database.db")
    names = [record.name for record in records]
    for name in names:
        why, remedy = mapping.explain_unregistered(graph, name, None, names)
        assert re.fullmatch(
            r"\d{3} verified matches with view_00\d\.png, but only \d+ of them are matched in a third .*", why
        )
        assert remedy is mapping.Remedy.IN_BETWEEN, why


def test_a_photo_left_out_of_a_model_is_told_how_little_it_shares_with_it(processed):
    """view_003 taken out of the synthetic model, then every point but 10 of those it saw deleted: it
    has at most 10 matches at the model's points where registering needs 15, and is asked for photos
    in between; with the points kept, what failed is its pose."""
    graph = MatchGraph(processed.sfm_dir / "database.db")
    train = [f"view_00{i}.png" for i in (1, 2, 3, 5, 6, 7)]
    model = pycolmap.Reconstruction(processed.sparse_dir)
    left_out = model.image(graph.image_ids["view_003.png"])
    seen = sorted({p.point3D_id for p in left_out.points2D if p.has_point3D()})
    model.deregister_frame(left_out.frame_id)
    why, remedy = mapping.explain_unregistered(graph, "view_003.png", model, train)
    assert why.endswith("but its pose could not be estimated from them") and remedy is None, why
    kept = [i for i in seen if model.exists_point3D(i)][:10]  # its two-view points went with it
    for point_id in set(model.point3D_ids()) - set(kept):
        model.delete_point3D(point_id)
    why, remedy = mapping.explain_unregistered(graph, "view_003.png", model, train)
    assert re.search(r"but only (\d+) of its matches to the model are at its points \(registering needs 15\)", why)
    assert int(re.search(r"only (\d+)", why).group(1)) <= 10 and remedy is mapping.Remedy.IN_BETWEEN, why


def test_a_model_of_two_photos_of_many_on_few_points_is_in_doubt(processed):
    """One pair on few points, nothing to check it against: on the walk-arounds 4 of 5 such models
    were 11-94 degrees off. The synthetic model, cut to two of its six photos: in doubt once it is
    left under 50 points, not before, and not where two photos are all there were."""
    model = pycolmap.Reconstruction(processed.sparse_dir)
    assert not mapping.rests_on_two_of_many(model, 6)
    for image_id in sorted(model.reg_image_ids())[2:]:
        model.deregister_frame(model.image(image_id).frame_id)
    assert model.num_reg_images() == 2 and model.num_points3D() >= 50
    assert not mapping.rests_on_two_of_many(model, 6)
    for point_id in sorted(model.point3D_ids())[49:]:
        model.delete_point3D(point_id)
    assert mapping.rests_on_two_of_many(model, 6) and mapping.rests_on_two_of_many(model, 3)
    assert not mapping.rests_on_two_of_many(model, 2)


@pytest.mark.slow
def test_photos_far_apart_that_incremental_mapping_leaves_out_are_placed_by_global_mapping(tmp_path):
    """Six photos over 180 degrees, 36 apart: incremental mapping registers 5 of them (BENCHMARKS.md,
    "Walked all round"); global mapping places all six, within a third of a degree of the truth,
    on enough points seen in three photos that nothing is in doubt."""
    scene = make_walkaround(num_views=6, arc_degrees=180, seed=2)
    records = ingested(scene, tmp_path)
    names = [record.name for record in records]
    result = mapping.run_sfm(tmp_path / "images", records, names, [], tmp_path / "sfm", SfMConfig())
    assert result.global_mapping and not result.doubtful_images
    assert result.mappings_disagreement_deg < mapping.MAX_MAPPINGS_DISAGREEMENT_DEG  # the 5 it registered agree
    errors = pair_errors_deg(model_poses(result.train), true_poses(scene))
    assert len(errors) == 15 and max(errors.values()) < 0.35, errors
    assert mapping.multiview_points(result.train) >= mapping.GLOBAL_MIN_MULTIVIEW_POINTS


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("SPARS_NS_LONG_CHECKS"), reason="20 s: set SPARS_NS_LONG_CHECKS=1 (README)")
def test_a_global_model_that_the_incremental_one_contradicts_is_in_doubt(tmp_path):
    """Five photos over 180 degrees, 45 apart: incremental mapping registers 3 of them with nothing
    in doubt, global mapping all 5 with nothing in doubt either, but over 5 degrees off the truth
    (BENCHMARKS.md, "Two mappings that disagree"). The two models place the three photos more than
    5 degrees apart: the pairs cannot decide between them, and every photo is in doubt."""
    scene = make_walkaround(num_views=5, arc_degrees=180, seed=12)
    records = ingested(scene, tmp_path)
    names = [record.name for record in records]
    result = mapping.run_sfm(tmp_path / "images", records, names, [], tmp_path / "sfm", SfMConfig())
    errors = pair_errors_deg(model_poses(result.train), true_poses(scene))
    assert result.global_mapping and len(errors) == 10 and max(errors.values()) > 5, errors
    assert result.mappings_disagreement_deg > mapping.MAX_MAPPINGS_DISAGREEMENT_DEG
    assert result.doubtful_images == names


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("SPARS_NS_LONG_CHECKS"), reason="30 s: set SPARS_NS_LONG_CHECKS=1 (README)")
def test_video_frames_a_degree_apart_get_cameras_and_seeds_and_their_focal_length_is_flagged_as_open(tmp_path):
    """Three frames of a video walked round the boxes a degree apart (`make_walkaround`, steady): every
    frame is placed within a degree of the truth, on hundreds of seed points, but the frames cannot fix
    the focal length, and SfM says so (BENCHMARKS.md, "Photos from nearly one place")."""
    scene = make_walkaround(num_views=3, arc_degrees=2, seed=2, steady=True)
    records = ingested(scene, tmp_path)
    names = [record.name for record in records]
    result = mapping.run_sfm(tmp_path / "images", records, names, [], tmp_path / "sfm", SfMConfig())
    errors = pair_errors_deg(model_poses(result.train), true_poses(scene))
    assert len(errors) == 3 and max(errors.values()) < 1.0, errors
    assert result.train.num_points3D() >= 300
    assert result.focal_length_undetermined


def test_a_global_model_on_pairs_alone_is_in_doubt_and_yields_to_a_model_without_doubt(processed):
    """A global model with under 30 points seen in three photos rests on its pairs, which a wrong
    focal length satisfies too (on the walk-arounds such models were 6-67 degrees off): every
    photo is in doubt. The synthetic model, its multi-view points cut to 29."""
    graph = MatchGraph(processed.sfm_dir / "database.db")
    model = pycolmap.Reconstruction(processed.sparse_dir)
    names = sorted(model.image(i).name for i in model.reg_image_ids())
    check = mapping.check_model_of(model, graph)
    assert not mapping.doubtful_photos(model, check, names, global_mapping=True)
    multiview = sorted(i for i, point in model.points3D.items() if point.track.length() >= 3)
    for point_id in multiview[29:]:
        model.delete_point3D(point_id)
    assert mapping.multiview_points(model) == 29
    assert not mapping.doubtful_photos(model, check, names)  # an incremental model: its check decides
    assert mapping.doubtful_photos(model, check, names, global_mapping=True) == names
    in_doubt = mapping.standing(model, check, names, global_mapping=True)
    assert in_doubt < mapping.standing(model, check, names, global_mapping=False)
    assert in_doubt > mapping.standing(None, None, names, global_mapping=False)


def turned(model: pycolmap.Reconstruction, image_id: int, degrees: float) -> pycolmap.Reconstruction:
    """A copy of `model` with one photo turned about its own centre."""
    copy = pycolmap.Reconstruction(model)
    image = copy.image(image_id)
    pose = image.cam_from_world().matrix()
    turn = pycolmap.Rotation3d(np.array([0.6, 0.8, 0.0]) * np.deg2rad(degrees)).matrix()
    copy.frame(image.frame_id).set_cam_from_world(
        image.camera_id, pycolmap.Rigid3d(np.hstack([turn @ pose[:, :3], (turn @ pose[:, 3])[:, None]]))
    )
    return copy


def test_two_mappings_disagree_by_the_turn_of_a_photo_they_place_differently(processed):
    """The synthetic model against a copy with one photo turned 8 degrees about its own centre: the
    two disagree by those 8 degrees on the photo's pairs, by nothing once one of them leaves the
    photo out, and say nothing on under two shared photos."""
    model = pycolmap.Reconstruction(processed.sparse_dir)
    image_id = sorted(model.reg_image_ids())[2]
    other = turned(model, image_id, 8.0)
    assert mapping.mappings_disagreement(other, model) == pytest.approx(8.0, abs=1e-6)
    assert mapping.mappings_disagreement(model, other) == pytest.approx(8.0, abs=1e-6)
    other.deregister_frame(other.image(image_id).frame_id)
    assert mapping.mappings_disagreement(other, model) < 1e-4
    for left_out in sorted(other.reg_image_ids())[1:]:
        other.deregister_frame(other.image(left_out).frame_id)
    assert mapping.mappings_disagreement(other, model) is None


def test_a_global_model_the_incremental_one_contradicts_is_kept_with_every_photo_in_doubt(processed):
    """The synthetic model as the two mappers' models: an incremental one with 4 of its 6 photos and
    none in doubt, and a global one with all 6 and one photo turned, which the check puts in doubt.
    The global one ranks higher (more photos) and is kept; 3 degrees apart on the shared photos the
    check's one photo is in doubt, 8 degrees apart every photo. Where the incremental model has a
    photo in doubt itself, it is no witness."""
    graph = MatchGraph(processed.sfm_dir / "database.db")
    model = pycolmap.Reconstruction(processed.sparse_dir)
    names = sorted(model.image(i).name for i in model.reg_image_ids())
    ids = sorted(model.reg_image_ids())
    incremental = pycolmap.Reconstruction(model)
    for image_id in ids[4:]:
        incremental.deregister_frame(incremental.image(image_id).frame_id)
    incremental_check = mapping.check_model_of(incremental, graph)
    assert mapping.standing(incremental, incremental_check, names, False) == (4, True)
    for degrees, in_doubt in ((0.0, []), (3.0, [names[2]]), (8.0, names)):
        globally = turned(model, ids[2], degrees)
        check = mapping.check_model_of(globally, graph)
        kept, disagreement = mapping.prefer_global(incremental, incremental_check, globally, check, names)
        assert kept and disagreement == pytest.approx(degrees, abs=1e-3)
        assert mapping.doubtful_photos(globally, check, names, True, disagreement) == in_doubt
    doubted = turned(model, ids[2], 8.0)
    doubted_check = mapping.check_model_of(doubted, graph)
    assert doubted_check.doubtful_images == [names[2]]
    assert mapping.prefer_global(doubted, doubted_check, model, mapping.check_model_of(model, graph), names) == (
        True,
        None,
    )
    assert mapping.prefer_global(
        model, mapping.check_model_of(model, graph), model, mapping.check_model_of(model, graph), names
    ) == (False, None)


def test_bad_options_are_refused(photos, tmp_path):
    with pytest.raises(InputError, match="test-every"):
        process(ProcessConfig(images=photos, output=tmp_path / "s", test_every=1))
    with pytest.raises(InputError, match="must not be the image folder"):
        process(ProcessConfig(images=photos, output=photos / "scene"))
    with pytest.raises(InputError, match=r"--test-views names photos that are not in the image folder: nope\.png"):
        process(ProcessConfig(images=photos, output=tmp_path / "s", test_views=("view_001.png", "nope.png")))


def test_photos_inside_the_output_folder_are_refused_and_left_untouched(photos, tmp_path):
    project = tmp_path / "proj"  # nerfstudio's layout: a dataset folder with images/ inside
    shutil.copytree(photos, project / "images")
    (project / "images" / "notes.txt").write_text("mine")
    (project / "images" / "raw").mkdir()
    (project / "images" / "raw" / "0001.cr2").write_bytes(b"raw camera file")
    before = {p.relative_to(project): p.read_bytes() for p in project.rglob("*") if p.is_file()}
    with pytest.raises(InputError, match=r"--images .*proj/images is inside --output .*proj; .*--output .*proj-spars"):
        process(ProcessConfig(images=project / "images", output=project))
    assert {p.relative_to(project): p.read_bytes() for p in project.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_a_photo_with_a_space_in_its_name_is_registered(awkward_folder):
    report = json.loads((awkward_folder.sfm_dir / "report.json").read_text())
    assert "view_006.png" in report["registered_train"] and not report["unregistered"]
    assert report["registered_test"] == ["view_004.png"]  # --test-views takes the name as the folder spells it


def test_a_second_process_on_the_same_scene_is_refused(photos, tmp_path):
    scene = SceneFolder(tmp_path / "scene")
    scene.root.mkdir()
    with scene.lock():  # as if another run were processing this folder
        before = {p.name: p.read_bytes() for p in scene.root.iterdir()}
        with pytest.raises(InputError, match=rf"scene is being processed by another process \(pid {os.getpid()}\)"):
            process(ProcessConfig(images=photos, output=scene.root))
        assert {p.name: p.read_bytes() for p in scene.root.iterdir()} == before  # the refused run wrote nothing


def test_images_are_numbered_in_name_order_whatever_the_extraction_threads_do(processed):
    database = pycolmap.Database.open(processed.sfm_dir / "database.db")
    try:
        ids = {image.name: image.image_id for image in database.read_all_images()}
    finally:
        database.close()
    assert [ids[name] for name in sorted(ids)] == list(range(1, len(ids) + 1))  # one camera here: name order


def test_named_test_views_override_test_every():
    names = [f"view_{i:03d}.jpg" for i in range(6)]
    train, test = split_names(names, test_every=2, test_views=("view_005.png", "view_002"))
    assert test == ["view_005.jpg", "view_002.jpg"]  # matched by stem: photos may be rewritten as PNG
    assert train == ["view_000.jpg", "view_001.jpg", "view_003.jpg", "view_004.jpg"]


def test_a_record_reads_back_exactly_whatever_its_arrays_types(tmp_path):
    rng = np.random.default_rng(0)
    record = AlignedPrior(
        rng.normal(size=(24, 32, 3)).astype(np.float32),
        rng.uniform(1, 5, (24, 32)).astype(np.float32),
        rng.uniform(0, 1, (24, 32)).astype(np.float32),
        rng.integers(-1, 4, (24, 32)).astype(np.int32),
        rng.random((24, 32)) < 0.3,
    )
    record.save(tmp_path / "record.npz")
    loaded = AlignedPrior.load(tmp_path / "record.npz")
    for name in ("points", "depth", "conf", "region_ids", "inlier_mask"):
        assert getattr(loaded, name).dtype == getattr(record, name).dtype, name
        assert np.array_equal(getattr(loaded, name), getattr(record, name)), name


@pytest.mark.slow
def test_a_run_killed_at_any_rename_leaves_a_scene_that_tells_the_truth(
    processed, photos, prior_files, tmp_path, monkeypatch
):
    """Run B (a dense prior, refined) is killed at each of its renames in turn, by fault injection;
    then run A (SfM points only, what the folder held before) runs again: its points.ply must be
    A's and agree with the manifest, with no leftovers, wherever B stopped."""
    options_a = {"images": photos, "test_every": 4}
    options_b = {
        **options_a,
        "prior": "files",
        "prior_options": PriorConfig(files=FilesConfig(dir=prior_files)),
        "align": "global",
        "refine": "global",
    }
    expected = processed.stage_entry("export")["counts"]["points"]
    real_replace = os.replace
    renames = []

    def counting(*args):
        renames.append(args[1])
        real_replace(*args)

    scratch = tmp_path / "count"
    shutil.copytree(processed.root, scratch)
    monkeypatch.setattr(os, "replace", counting)
    process(ProcessConfig(**options_b, output=scratch))
    monkeypatch.undo()
    assert len(renames) > 10

    for k in range(len(renames)):
        output = tmp_path / f"killed_{k}"
        shutil.copytree(processed.root, output)
        calls = iter(range(len(renames)))

        def killed_at_k(*args, calls=calls, k=k):
            if next(calls) == k:
                raise KeyboardInterrupt
            real_replace(*args)

        monkeypatch.setattr(os, "replace", killed_at_k)
        with pytest.raises(KeyboardInterrupt):
            process(ProcessConfig(**options_b, output=output))
        monkeypatch.undo()
        scene = process(ProcessConfig(**options_a, output=output))
        vertices = PlyData.read(str(scene.points_path))["vertex"]
        assert len(vertices) == scene.stage_entry("export")["counts"]["points"] == expected, (k, renames[k])
        assert set(vertices["source"]) == {0}, (k, renames[k])
        assert not list(output.rglob(".*.partial")) and not list(output.rglob(".*.old")), (k, renames[k])
        shutil.rmtree(output)
