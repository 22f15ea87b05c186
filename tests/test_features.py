"""Learned matching (kornia ALIKED/DISK + LightGlue) into the COLMAP database, and pair selection.

No weights can be downloaded here: the models are the real kornia classes, randomly
initialised, saved as local checkpoints and loaded the way a user's files are."""

import time

import numpy as np
import pycolmap
import pytest
import torch
from conftest import true_poses
from PIL import Image

from spars_ns.errors import InputError
from spars_ns.metrics import pair_errors_deg
from spars_ns.stages.ingest.images import ImageRecord, file_sha1, ingest_image
from spars_ns.stages.sfm import pairs as pairs_module
from spars_ns.stages.sfm.features import LearnedFeaturesConfig, extract, load_extractor
from spars_ns.stages.sfm.mapping import (
    MatchGraph,
    SfMConfig,
    extract_and_match,
    extract_sift,
    import_images,
    map_training_views,
    sift_threads,
    write_keypoints_and_matches,
    write_pairs,
)
from spars_ns.stages.sfm.pairs import looks_sequential, select_pairs, strongest_pairs
from spars_ns.synthetic import camera_points


@pytest.fixture(scope="module")
def records(photos, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ingested")
    return folder, [
        ingest_image(photos / f"view_00{i}.png", folder, file_sha1(photos / f"view_00{i}.png")) for i in (1, 2, 3)
    ]


def random_checkpoints(kind: str, folder) -> LearnedFeaturesConfig:
    import kornia.feature as KF

    torch.manual_seed(0)
    extractor = KF.ALIKED("aliked-n16", max_num_keypoints=256) if kind == "aliked+lightglue" else KF.DISK()
    matcher = KF.LightGlue(None, **{**KF.LightGlue.features[kind.split("+")[0]], "weights": None})
    torch.save(extractor.state_dict(), folder / "extractor.pth")
    torch.save(matcher.state_dict(), folder / "matcher.pth")
    return LearnedFeaturesConfig(
        max_keypoints=256,
        resize_max=320,
        extractor_checkpoint=folder / "extractor.pth",
        matcher_checkpoint=folder / "matcher.pth",
        device="cpu",
    )


@pytest.mark.parametrize("kind", ["aliked+lightglue", "disk+lightglue"])
def test_keypoints_found_on_a_reduced_photo_are_placed_in_the_photo_by_its_scale(kind, photos, tmp_path):
    """A photo wider than `resize_max` is detected at a reduced size: its keypoints, in the photo's
    pixels (COLMAP's convention: a pixel's centre at +0.5), are those found on that reduced image
    given as it is, times the photo's size over the reduced size on each axis (here 650 / 320 across,
    487 / 240 down). A keypoint at a pixel's centre in the reduced image is at that pixel's centre,
    scaled, in the photo, not half a pixel beside it."""
    learned = random_checkpoints(kind, tmp_path)
    extractor = load_extractor(kind, learned)
    with Image.open(photos / "view_001.png") as photo:
        large = photo.convert("RGB").resize((650, 487), Image.Resampling.BICUBIC)
    large.save(tmp_path / "large.png")
    large.resize((320, 240), Image.Resampling.BILINEAR).save(tmp_path / "reduced.png")  # what extract detects on
    on_large = extract(extractor, tmp_path / "large.png", learned)
    on_reduced = extract(extractor, tmp_path / "reduced.png", learned)
    assert on_large.image_size == (650, 487) and len(on_large.keypoints) > 50
    np.testing.assert_allclose(on_large.keypoints, on_reduced.keypoints * [650 / 320, 487 / 240], atol=1e-3)


@pytest.mark.parametrize("kind", ["aliked+lightglue", "disk+lightglue"])
def test_learned_features_fill_the_database_pycolmap_reads(kind, records, tmp_path):
    image_dir, images = records
    learned = random_checkpoints(kind, tmp_path)
    database = tmp_path / "database.db"
    extract_and_match(database, image_dir, images, SfMConfig(features=kind, learned=learned))

    db = pycolmap.Database.open(database)
    try:
        stored = {image.name: image for image in db.read_all_images()}
        assert sorted(stored) == sorted(r.name for r in images)
        counts = {name: db.num_keypoints_for_image(image.image_id) for name, image in stored.items()}
        assert all(0 < n <= 256 for n in counts.values())
        for a, b in [
            ("view_001.png", "view_002.png"),
            ("view_001.png", "view_003.png"),
            ("view_002.png", "view_003.png"),
        ]:
            matches = db.read_matches(stored[a].image_id, stored[b].image_id)
            assert matches.ndim == 2 and matches.shape[1] == 2
            assert np.all(matches[:, 0] < counts[a]) and np.all(matches[:, 1] < counts[b])
            assert db.exists_two_view_geometry(stored[a].image_id, stored[b].image_id)  # verification ran on every pair
    finally:
        db.close()


def test_true_correspondences_written_as_learned_matches_verify_and_map(scene, records, tmp_path):
    """The database path of learned features, fed with exact correspondences, gives verified
    geometry and a mapped model with the true relative poses."""
    image_dir, images = records
    database = tmp_path / "database.db"
    import_images(database, image_dir, images, SfMConfig())
    rng = np.random.default_rng(0)
    points, view = camera_points(scene, 2)
    rows, cols = rng.integers(0, scene.height, 400), rng.integers(0, scene.width, 400)
    hit = np.isfinite(view.depth[rows, cols])
    cam = points[rows[hit], cols[hit]]  # 400 random pixels of view 2, unprojected: the shared 3D points
    rotation, translation = scene.cam_from_world[2][:, :3], scene.cam_from_world[2][:, 3]
    world = (cam - translation) @ rotation
    keypoints, visible = {}, {}
    for i, name in zip((1, 2, 3), ("view_001.png", "view_002.png", "view_003.png")):
        c = world @ scene.cam_from_world[i][:, :3].T + scene.cam_from_world[i][:, 3]
        uv = c @ scene.intrinsics.T
        uv = uv[:, :2] / uv[:, 2:]
        keypoints[name] = uv.astype(np.float32)
        visible[name] = (
            (c[:, 2] > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < scene.width) & (uv[:, 1] >= 0) & (uv[:, 1] < scene.height)
        )
    pairs = [("view_001.png", "view_002.png"), ("view_001.png", "view_003.png"), ("view_002.png", "view_003.png")]
    matches = {}
    for a, b in pairs:
        both = np.flatnonzero(visible[a] & visible[b])
        matches[(a, b)] = np.stack([both, both], 1)
    write_keypoints_and_matches(database, keypoints, matches)
    write_pairs(tmp_path / "pairs.txt", pairs)
    pycolmap.verify_matches(database, tmp_path / "pairs.txt")

    graph = MatchGraph(database)
    model, _, _ = map_training_views(database, graph, image_dir, [r.name for r in images], tmp_path / "models")
    assert model.num_reg_images() == 3
    estimated = {model.image(i).name: model.image(i).cam_from_world().matrix() for i in model.reg_image_ids()}
    truth = {k: v for k, v in true_poses(scene).items() if k in estimated}
    assert max(pair_errors_deg(estimated, truth).values()) < 0.5


def test_missing_weights_offline_name_the_option(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setattr(time, "sleep", lambda seconds: None)  # kornia's back-off between retries: 6 s of waiting
    with pytest.raises(InputError, match=r"--sfm-options\.learned\.extractor-checkpoint"):
        load_extractor("disk+lightglue", LearnedFeaturesConfig(device="cpu"))


def test_small_sets_match_every_pair(monkeypatch):
    names = [f"img{i}.jpg" for i in range(5)]
    monkeypatch.setattr(pairs_module, "EXHAUSTIVE_UP_TO", 5)
    assert len(select_pairs(names, None)) == 10


def test_retrieval_keeps_nearest_images_and_video_neighbours(monkeypatch):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16))
    names = [f"shot_{c}{i}.jpg" for c in "abc" for i in range(4)]  # 3 places, 4 photos each
    descriptors = np.concatenate([centres[k] + 0.05 * rng.normal(size=(4, 16)) for k in range(3)])
    monkeypatch.setattr(pairs_module, "EXHAUSTIVE_UP_TO", 4)
    monkeypatch.setattr(pairs_module, "TOP_K", 3)
    monkeypatch.setattr(pairs_module, "SEQUENTIAL", 0)
    pairs = select_pairs(names, descriptors)
    assert len(pairs) == 3 * 6  # each place's photos pair up among themselves, nothing across
    assert all(a[5] == b[5] for a, b in pairs)

    frames = [f"frame_{i:04d}.jpg" for i in range(12)]
    assert looks_sequential(frames) and not looks_sequential([*names, "other.jpg"])
    monkeypatch.setattr(pairs_module, "SEQUENTIAL", 2)
    with_video = select_pairs(frames, descriptors)
    assert ("frame_0003.jpg", "frame_0004.jpg") in with_video and ("frame_0003.jpg", "frame_0005.jpg") in with_video


def test_strongest_pairs_keep_each_views_best_partners_and_reach_every_view():
    """24 views on a loop, each overlapping its 2 neighbours on either side (weight by closeness),
    and one view that shares no verified match with any other."""
    n = 24
    weights = np.zeros((n, n))
    for i in range(n - 1):
        for step, weight in ((1, 300), (2, 100)):
            j = (i + step) % (n - 1)
            weights[i, j] = weights[j, i] = weight
    pairs = strongest_pairs(weights, per_view=2, complete_up_to=12)
    assert all(weights[i, j] > 0 or j == n - 1 for i, j in pairs)  # only matched pairs, bar the isolated view
    for i in range(n - 1):  # each view keeps both its nearest neighbours
        assert (min(i, (i + 1) % (n - 1)), max(i, (i + 1) % (n - 1))) in pairs
    assert any(n - 1 in pair for pair in pairs)  # the isolated view is joined to the others
    assert len(pairs) < n * 3  # linear in the views, not quadratic
    assert len(strongest_pairs(weights[:12, :12], per_view=2, complete_up_to=12)) == 66  # small sets: every pair


def test_sift_features_do_not_depend_on_the_number_of_extraction_threads(records, tmp_path):
    """The thread count follows the machine's memory (`sift_threads`): the features must not."""
    folder, images = records
    features = []
    for threads in (1, len(images)):
        database = tmp_path / f"threads_{threads}.db"
        import_images(database, folder, images, SfMConfig())
        extract_sift(database, folder, images, SfMConfig(), threads=threads)
        db = pycolmap.Database.open(database)
        try:
            features.append(
                [(db.read_keypoints(i.image_id), db.read_descriptors(i.image_id).data) for i in db.read_all_images()]
            )
        finally:
            db.close()
    assert len(features[0]) == len(images) and all(len(k) > 100 for k, _ in features[0])
    for (keypoints1, descriptors1), (keypoints2, descriptors2) in zip(*features):
        np.testing.assert_array_equal(keypoints1, keypoints2)
        np.testing.assert_array_equal(descriptors1, descriptors2)


def test_sift_threads_fit_the_largest_photo_in_free_memory():
    def photo(width, height):
        return ImageRecord("a.jpg", "a.jpg", "0", width, height, None, None)

    gigabyte = 1e9
    # 12 MP phone photos are extracted at 3200 x 2400 px, about 2.4 GB a thread: 8 GB free holds two
    # within the 75% share, where one per core would take 38 GB.
    phone = [photo(640, 480), photo(4032, 3024)]
    assert sift_threads(phone, 8 * gigabyte, 16) == 2
    assert sift_threads(phone, 0.5 * gigabyte, 16) == 1  # one thread however little is free
    # The fox's 540 x 960 photos take 0.16 GB a thread: every core.
    assert sift_threads([photo(540, 960)] * 3, 8 * gigabyte, 16) == 16
