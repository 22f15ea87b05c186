from dataclasses import replace

import numpy as np
import pytest

from spars_ns.geometry import project, relative_pose
from spars_ns.stages.ingest.images import file_sha1, ingest_image
from spars_ns.stages.sfm.distinctive import Descriptors, look_alike_distances
from spars_ns.stages.sfm.mapping import MatchGraph, SfMConfig, extract_and_match
from spars_ns.synthetic import camera_points, make_scene

WALLPAPER_REPEATS = 16  # tiles along each 8-unit wall: a copy every half unit, about 24 px apart in a photo


def test_a_copy_elsewhere_in_the_photo_is_a_look_alike_and_the_same_blob_turned_is_not():
    descriptors = np.random.default_rng(0).uniform(0, 100, (4, 128))
    descriptors[1] = descriptors[0]  # a rose and its copy 50 px along the wall
    descriptors[3] = descriptors[2]  # one blob described at two orientations, 1 px apart
    keypoints = np.array([[0.0, 0.0], [50.0, 0.0], [200.0, 0.0], [201.0, 0.0]])
    nearest = look_alike_distances(descriptors, keypoints)
    assert nearest[:2] == pytest.approx(0, abs=1e-3)  # the expanded square loses digits, not 0.1
    others = np.linalg.norm(descriptors[2] - descriptors[:2], axis=1).min()
    assert nearest[2] == pytest.approx(others) and nearest[3] == pytest.approx(others)
    assert look_alike_distances(descriptors, keypoints, np.array([3, 1])) == pytest.approx(nearest[[3, 1]], abs=1e-3)


def test_matches_called_distinctive_are_seldom_to_a_copy_of_the_wallpaper(tmp_path):
    """The room's walls papered with one tile repeated, as the fox's roses are: SIFT matches points of
    the wall to copies of them. Judged against the true surfaces and cameras, the matches called
    distinctive hold far fewer such wrong matches than the rest, and most of the right ones."""
    scene = make_scene(num_views=6, seed=0)
    walls = [
        replace(q, texture=np.tile(q.texture[:, : q.texture.shape[1] // WALLPAPER_REPEATS], (1, WALLPAPER_REPEATS, 1)))
        if q.object_id in (1, 2)
        else q
        for q in scene.quads
    ]
    scene = replace(scene, quads=walls)
    photos = tmp_path / "photos"
    scene.write_images(photos)
    names = [scene.image_name(i) for i in range(scene.num_views)]
    database = tmp_path / "database.db"
    records = [ingest_image(photos / n, tmp_path, file_sha1(photos / n)) for n in names]
    extract_and_match(database, photos, records, SfMConfig())
    graph = MatchGraph(database)
    descriptors = Descriptors(database, graph.keypoints, graph.inliers)

    view = {graph.image_ids[n]: i for i, n in enumerate(names)}
    surfaces = {i: camera_points(scene, i)[0] for i in range(scene.num_views)}
    counts = np.zeros((2, 2), int)  # [distinctive, right]
    for (id1, id2), matches in graph.inliers.items():
        if id1 > id2:
            continue
        first, second = scene.cam_from_world[view[id1]], scene.cam_from_world[view[id2]]
        pixels = graph.keypoints[id1][matches[:, 0]].astype(int)
        points = surfaces[view[id1]][pixels[:, 1], pixels[:, 0]]  # where the keypoint's pixel sees, camera 1
        rotation, translation = relative_pose(first, second)
        uv, z = project(points @ rotation.T + translation, scene.intrinsics)
        with np.errstate(invalid="ignore"):
            right = (z > 0) & (np.linalg.norm(uv - graph.keypoints[id2][matches[:, 1]], axis=1) < 4.0)
        np.add.at(counts, (descriptors.distinctive(id1, id2, matches).astype(int), right.astype(int)), 1)
    wrong_share = counts[:, 0] / counts.sum(axis=1)
    assert counts[0, 0] + counts[1, 0] > 200  # the wallpaper does fool SIFT's verified matches
    assert wrong_share[1] < wrong_share[0] / 2
    assert counts[1, 1] / counts[:, 1].sum() > 0.7
