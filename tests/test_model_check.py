"""A wrong SfM model is caught: repeated structure, where a pair of photos matches the wrong copy.

The synthetic scene's back wall stands in for a facade whose texture repeats every `PERIOD`
along the wall: on such a wall SIFT matches a point in one photo to the copy one period over
in the next. The matches are written exactly (true projections plus 0.3 px of noise) through
the database path that learned features use, so the failure does not depend on what SIFT
happens to find, and the true cameras are known."""

from itertools import combinations

import numpy as np
import pycolmap
import pytest
from conftest import sfm_from_true, true_poses

from spars_ns.metrics import pair_errors_deg
from spars_ns.stages.ingest.images import file_sha1, ingest_image
from spars_ns.stages.sfm.mapping import (
    CHECK_MIN_MATCHES,
    MIN_EXPLAINED_SHARE,
    MatchGraph,
    SfMConfig,
    check_model_of,
    import_images,
    map_training_views,
    mostly_unexplained,
    write_keypoints_and_matches,
    write_pairs,
)
from spars_ns.stages.sfm.model_check import ModelCheck, PairCheck, check_model, epipolar_distances
from spars_ns.synthetic import camera_points

VIEWS = [0, 1, 2, 3, 4, 5]
WRONG_PAIR = ("view_002.png", "view_003.png")
PERIOD = np.array([1.5, 0.0, 0.0])  # along the back wall (the plane y = 3)


def visible_pixels(scene, index: int, rendered_depth: np.ndarray, world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (N, 2) of world points in a view, and which of them the view sees unoccluded."""
    rotation, translation = scene.cam_from_world[index][:, :3], scene.cam_from_world[index][:, 3]
    cam = world @ rotation.T + translation
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (cam @ scene.intrinsics.T)[:, :2] / cam[:, 2:]
    inside = (cam[:, 2] > 0) & np.all((uv >= 0) & (uv < [scene.width, scene.height]), axis=1)
    depth = np.full(len(world), np.inf)
    depth[inside] = rendered_depth[uv[inside, 1].astype(int), uv[inside, 0].astype(int)]
    return uv, inside & (np.abs(depth - cam[:, 2]) < 0.01 * cam[:, 2])


@pytest.fixture(scope="module")
def repeated_wall(scene, photos, tmp_path_factory):
    """A database of six views: every pair matched truly, except WRONG_PAIR, matched (more
    strongly than any other pair) from wall points to their copies one period along. Every world point,
    copies included, is a keypoint of every view, at its index; `copy_of` gives a copy's original."""
    folder = tmp_path_factory.mktemp("repeated_wall")
    names = [scene.image_name(i) for i in VIEWS]
    records = [ingest_image(photos / n, folder, file_sha1(photos / n)) for n in names]
    database = folder / "database.db"
    import_images(database, folder, records, SfMConfig())

    rng = np.random.default_rng(0)
    surface, depths = [], {}
    for i in VIEWS:  # random pixels of every view, unprojected: points on the boxes, the ground and the walls
        points, view = camera_points(scene, i)
        depths[i] = view.depth
        rows, cols = rng.integers(0, scene.height, 400), rng.integers(0, scene.width, 400)
        hit = np.isfinite(view.depth[rows, cols])
        rotation, translation = scene.cam_from_world[i][:, :3], scene.cam_from_world[i][:, 3]
        surface.append((points[rows[hit], cols[hit]] - translation) @ rotation)
    surface = np.concatenate(surface)
    on_wall = np.flatnonzero(np.abs(surface[:, 1] - 3.0) < 1e-6)
    world = np.concatenate([surface, surface[on_wall] + PERIOD])
    copy_of = np.concatenate([np.full(len(surface), -1), on_wall])

    seen = {n: visible_pixels(scene, i, depths[i], world) for n, i in zip(names, VIEWS)}
    # Every point is a keypoint of every view (0, 0 where the view cannot see it: never matched there)
    keypoints = {
        n: np.where(v[:, None], uv + rng.normal(0, 0.3, uv.shape), 0).astype(np.float32) for n, (uv, v) in seen.items()
    }
    matches = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            both = np.flatnonzero(seen[a][1] & seen[b][1])[:150]
            matches[(a, b)] = np.stack([both, both], 1)
    copies = np.flatnonzero(copy_of >= 0)
    original = copy_of[copies]
    wrong = seen[WRONG_PAIR[0]][1][original] & seen[WRONG_PAIR[1]][1][copies]
    matches[WRONG_PAIR] = np.stack([original[wrong], copies[wrong]], 1)
    assert len(matches[WRONG_PAIR]) > max(len(m) for p, m in matches.items() if p != WRONG_PAIR)

    write_keypoints_and_matches(database, keypoints, matches)
    write_pairs(folder / "pairs.txt", list(matches))
    pycolmap.verify_matches(database, folder / "pairs.txt")
    return database, folder, names, copy_of


def errors_to_truth(model, scene) -> dict:
    estimated = {im.name: im.cam_from_world().matrix() for im in model.images.values() if im.has_pose}
    truth = {k: v for k, v in true_poses(scene).items() if k in estimated}
    return pair_errors_deg(estimated, truth)


@pytest.fixture(scope="module")
def mapped(repeated_wall, tmp_path_factory):
    database, folder, names, _ = repeated_wall
    graph = MatchGraph(database)
    model, _, _ = map_training_views(database, graph, folder, names, tmp_path_factory.mktemp("models"))
    return model, graph


def test_mapping_keeps_the_model_the_pairs_agree_with_and_names_the_wrong_pair(mapped, repeated_wall, scene):
    model, graph = mapped
    assert model.num_reg_images() == len(repeated_wall[2])
    assert max(errors_to_truth(model, scene).values()) < 1.0
    check = check_model_of(model, graph)
    assert [(p.image1, p.image2) for p in check.unexplained] == [WRONG_PAIR]
    assert check.doubtful_images == []  # both photos agree with their four other pairs: the pair is at fault


def test_a_model_that_follows_the_wrong_copy_is_caught(mapped, scene):
    """The model the wrong pair asks for: view_003 one period along the wall from where it was
    (it sees there what it saw of the copy). Every right pair of view_003 then disagrees."""
    model, graph = mapped
    wrong = pycolmap.Reconstruction(model)
    shift = sfm_from_true(scene, model)[:, :3] @ PERIOD  # the period in the SfM frame
    image = next(im for im in wrong.images.values() if im.name == WRONG_PAIR[1])
    pose = image.cam_from_world()
    moved = pycolmap.Rigid3d(pose.rotation, pose.translation + pose.rotation.matrix() @ shift)  # centre moved by -shift
    wrong.frame(image.frame_id).rig_from_world = moved
    assert max(errors_to_truth(wrong, scene).values()) > 5
    check = check_model_of(wrong, graph)
    unexplained = {(p.image1, p.image2) for p in check.unexplained}
    right_pairs = {
        tuple(sorted((WRONG_PAIR[1], scene.image_name(i)))) for i in VIEWS if scene.image_name(i) not in WRONG_PAIR
    }
    assert unexplained == right_pairs  # the wrong pair agrees with this model, none of the right ones does
    assert check.doubtful_images == [WRONG_PAIR[1]]


# A real model 40 degrees off (fox 0002, 0009, 0044, 0054, 0103, 0110, mapped on 2026-12-05; the
# true cameras leave 0044-0110 explained at 51% and the pairs of 0103 and 0110 with 0002 and 0009 at
# 0-29%): its check, pair by pair, as (photos, verified matches, share the model explains).
FOX_WRONG_MODEL = [
    ("0002", "0009", 1656, 0.97), ("0002", "0044", 421, 0.96), ("0002", "0054", 572, 0.99),
    ("0002", "0103", 91, 0.77), ("0009", "0044", 585, 0.98), ("0009", "0054", 638, 0.98),
    ("0009", "0103", 203, 0.93), ("0009", "0110", 84, 0.46), ("0044", "0054", 748, 0.93),
    ("0044", "0103", 407, 0.0), ("0044", "0110", 367, 0.0), ("0103", "0110", 997, 0.97),
]  # fmt: skip


def test_two_photos_placed_together_against_the_rest_are_in_doubt():
    """0103 and 0110 agree with each other (997 matches) and are placed on false matches to 0002 and
    0009 (378) against 774 that the model leaves unexplained: each photo's own pairs outvote the
    doubt, the two together do not."""
    pairs = [PairCheck(f"{a}.jpg", f"{b}.jpg", matches, explained) for a, b, matches, explained in FOX_WRONG_MODEL]
    for name in ("0103.jpg", "0110.jpg"):  # alone, each is outvoted by its own explained pairs
        own = [p for p in pairs if name in (p.image1, p.image2)]
        assert sum(p.matches for p in own if p.explained >= 0.4) > sum(p.matches for p in own if p.explained < 0.4)
    assert ModelCheck(pairs, min_explained=0.4).doubtful_images == ["0103.jpg", "0110.jpg"]


# A real model 46 degrees off (fox 0001, 0009, 0046, 0077, 0090, 0107, `bench_cameras.py --seed 2`,
# mapped on 2026-12-05): two halves of three photos, each right within itself (0.7-1.5 degrees),
# joined 45-140 degrees wrong on the wallpaper's repeated roses. Pairs as the model check saw them.
FOX_TWO_HALVES = [
    ("0001", "0009", 1587, 0.98), ("0001", "0046", 344, 0.97), ("0001", "0077", 173, 0.64),
    ("0001", "0090", 131, 0.39), ("0001", "0107", 54, 0.76), ("0009", "0046", 520, 0.97),
    ("0009", "0077", 405, 0.0), ("0009", "0090", 169, 0.49), ("0009", "0107", 62, 0.68),
    ("0046", "0090", 289, 0.0), ("0046", "0107", 260, 0.0), ("0077", "0090", 500, 0.94),
    ("0077", "0107", 316, 0.93), ("0090", "0107", 489, 0.92),
]  # fmt: skip


def test_two_halves_joined_wrong_are_in_doubt():
    """Every photo and every two photos are outvoted by their pairs within their half; across the
    two halves, 1,085 matches are unexplained against 458 explained: all six in doubt."""
    pairs = [PairCheck(f"{a}.jpg", f"{b}.jpg", matches, explained) for a, b, matches, explained in FOX_TWO_HALVES]
    names = sorted({p.image1 for p in pairs} | {p.image2 for p in pairs})

    def across(group):
        cut = [p for p in pairs if (p.image1 in group) != (p.image2 in group)]
        return sum(p.matches for p in cut if p.explained < 0.4), sum(p.matches for p in cut if p.explained >= 0.4)

    for group in [{a} for a in names] + [{a, b} for a in names for b in names if a < b]:
        against, support = across(group)
        assert against < support, group
    assert across({"0001.jpg", "0009.jpg", "0046.jpg"}) == (1085, 458)
    assert ModelCheck(pairs, min_explained=0.4).doubtful_images == names


def test_epipolar_distance_is_the_distance_to_the_true_epipolar_line():
    # Camera 2 one unit along x from camera 1, same orientation: epipolar lines are the rows y = const.
    x1 = np.array([[0.1, 0.2], [-0.3, 0.05]])
    x2 = np.array([[0.4, 0.23], [0.0, 0.05]])  # the first 0.03 off its row, the second on it
    d1, d2 = epipolar_distances(x1, x2, np.eye(3), np.array([-1.0, 0.0, 0.0]))
    np.testing.assert_allclose(d2, [0.03, 0.0], atol=1e-12)
    np.testing.assert_allclose(d1, [0.03, 0.0], atol=1e-12)


def test_a_true_model_explains_every_pair(processed):
    """The shared synthetic scene, processed by the real SIFT pipeline: no pair is unexplained."""
    database = processed.sfm_dir / "database.db"
    graph = MatchGraph(database)
    model = pycolmap.Reconstruction(processed.sparse_dir)
    check = check_model(model, graph.inliers, graph.keypoints, min_matches=50)
    assert len(check.pairs) >= 10 and check.unexplained == []
    assert min(p.explained for p in check.pairs) > 0.8


def test_copies_matched_in_every_pair_put_every_photo_in_doubt_even_under_the_right_model(mapped, repeated_wall):
    """Walls whose copies match in every pair of photos taken beside each other: a wrong model explains
    its pairs as well as the right one, so no photo stands out, but much of the evidence stays unexplained
    under any model. The right model of the six views, checked against each pair's true matches plus every
    wall point matched to its copy one period along: mostly unexplained, where the true matches alone are
    all explained."""
    model, graph = mapped
    _, _, names, copy_of = repeated_wall
    ids = [graph.image_ids[n] for n in names]
    seen = {i: np.any(graph.keypoints[i] != 0, axis=1) for i in ids}  # views hold (0, 0) where they cannot see
    copies = np.flatnonzero(copy_of >= 0)
    true, with_copies = {}, {}
    for a, b in combinations(sorted(ids), 2):  # the check reads each pair once, in id order
        both = np.flatnonzero(seen[a] & seen[b] & (copy_of < 0))[:150]
        wrong = copies[seen[a][copy_of[copies]] & seen[b][copies]]
        true[(a, b)] = np.stack([both, both], 1)
        with_copies[(a, b)] = np.concatenate([true[(a, b)], np.stack([copy_of[wrong], wrong], 1)])
    right = check_model(model, true, graph.keypoints, min_matches=CHECK_MIN_MATCHES)
    assert right.explained_share > 0.95 and not mostly_unexplained(right)
    repeated = check_model(model, with_copies, graph.keypoints, min_matches=CHECK_MIN_MATCHES)
    assert len(repeated.pairs) == len(right.pairs) == 15
    assert repeated.explained_share < MIN_EXPLAINED_SHARE and mostly_unexplained(repeated)
