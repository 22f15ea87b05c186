"""Matches no look-alike could have made, and the model refitted on them.

A rose of the fox's wallpaper matched to another copy of itself is a verified match (a shifted copy
of a plane is still a homography), and a model built on such matches can be degrees off while it
explains more of all the matches than the true cameras do (fox 0034/0046/0076/0090: 6.3 degrees
off, 81.6% explained, the truth 75.0%). SIFT says which matches a copy could have made: a keypoint
has a look-alike where another keypoint of its own photo, `LOOK_ALIKE_MIN_PX` or more away (not
the same blob at another orientation), has a descriptor nearly as close as its match's partner.
Lowe's ratio test, applied within each photo.

The refit drops the model's tracks of look-alikes, adjusts what is left (the poses the unique
structure alone gives), triangulates every verified match again at those poses and adjusts the
whole: it is kept where it explains more of the distinctive matches. BENCHMARKS.md, "Matches no
look-alike could have made".
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pycolmap

from spars_ns.stages.sfm.adjustment import adjust, robust_options
from spars_ns.stages.sfm.triangulation import triangulate_at

LOOK_ALIKE_MIN_PX = 4.0  # closer keypoints are one blob at several orientations or scales
DISTINCTIVE_RATIO = 0.8  # a match's descriptor distance under this share of its nearest look-alike's
TRACK_RATIO = 0.9  # a track's largest descriptor distance under this share of its nearest look-alike's
MIN_DISTINCTIVE_POINTS = 10  # fewer leave the poses to the adjustment's whims
BLOCK = 2048  # keypoints per block of the distance matrix (32 MB of float64)


def look_alike_distances(descriptors: np.ndarray, keypoints: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """For the keypoints `rows` (all by default), the descriptor distance to the nearest other keypoint of
    the same photo at least `LOOK_ALIKE_MIN_PX` away (inf where there is none)."""
    descriptors = np.asarray(descriptors, np.float64)
    rows = np.arange(len(descriptors)) if rows is None else rows
    squared = np.einsum("ij,ij->i", descriptors, descriptors)
    nearest = np.full(len(rows), np.inf)
    for start in range(0, len(rows), BLOCK):
        block = rows[start : start + BLOCK]
        distances = squared[block, None] + squared[None] - 2 * descriptors[block] @ descriptors.T
        apart = np.linalg.norm(keypoints[block, None] - keypoints[None], axis=2) >= LOOK_ALIKE_MIN_PX
        distances[~apart] = np.inf
        nearest[start : start + BLOCK] = np.sqrt(np.maximum(distances.min(axis=1), 0))
    return nearest


class Descriptors:
    """SIFT descriptors of a database's images, with the nearest look-alike of each keypoint that has a
    verified match (of all keypoints, 12 fox photos took 13 s; a fifth of them have a match)."""

    def __init__(self, database: Path, keypoints: dict[int, np.ndarray], inliers: dict[tuple[int, int], np.ndarray]):
        """`keypoints` (N, 2) by image id; `inliers`: verified matches (M, 2) by image pair, both orders."""
        db = pycolmap.Database.open(database)
        try:
            self.descriptors = {i: np.asarray(db.read_descriptors(i).data, np.float64) for i in keypoints}
        finally:
            db.close()
        matched = {i: [np.zeros(0, int)] for i in keypoints}
        for (id1, _), matches in inliers.items():
            matched[id1].append(matches[:, 0])
        self.look_alike = {}
        for i, indices in matched.items():
            rows = np.unique(np.concatenate(indices))
            self.look_alike[i] = np.full(len(keypoints[i]), np.nan)  # NaN: no match to judge, never asked
            self.look_alike[i][rows] = look_alike_distances(self.descriptors[i], keypoints[i], rows)

    def distinctive(self, id1: int, id2: int, matches: np.ndarray) -> np.ndarray:
        """Which of a pair's matches (M, 2) neither photo holds a look-alike for."""
        distance = np.linalg.norm(self.descriptors[id1][matches[:, 0]] - self.descriptors[id2][matches[:, 1]], axis=1)
        nearest = np.minimum(self.look_alike[id1][matches[:, 0]], self.look_alike[id2][matches[:, 1]])
        return distance < DISTINCTIVE_RATIO * nearest

    def distinctive_track(self, track: pycolmap.Track) -> bool:
        observations = [(e.image_id, e.point2D_idx) for e in track.elements]
        vectors = np.array([self.descriptors[i][k] for i, k in observations])
        spread = np.max(np.linalg.norm(vectors[:, None] - vectors[None], axis=2))
        return spread < TRACK_RATIO * min(self.look_alike[i][k] for i, k in observations)


def refit_on_distinctive_tracks(
    model: pycolmap.Reconstruction,
    database: Path,
    image_dir: Path,
    descriptors: Descriptors,
    options: pycolmap.IncrementalPipelineOptions,
    robust: bool,
) -> pycolmap.Reconstruction | None:
    """The model's poses adjusted on its tracks without look-alikes, then every verified match
    triangulated again at them and the whole adjusted; None where too few points are left. With
    `robust` both adjustments are robust (`robust_options`), as the model's last was: by least squares
    the refit of a model adjusted robustly starts worse than the model it competes with."""

    def adjusted(refit: pycolmap.Reconstruction) -> pycolmap.Reconstruction:
        adjust(refit, robust_options(refit) if robust else None)
        return refit

    refit = pycolmap.Reconstruction(model)
    for point_id, point in list(refit.points3D.items()):
        if not descriptors.distinctive_track(point.track):
            refit.delete_point3D(point_id)
    if refit.num_points3D() < MIN_DISTINCTIVE_POINTS:
        return None
    adjusted(refit)
    with tempfile.TemporaryDirectory() as work:
        refit = triangulate_at(refit, database, image_dir, Path(work), options)
    # The triangulator can come back empty (a global model whose photos' matches it no longer links)
    return adjusted(refit) if refit.num_points3D() >= MIN_DISTINCTIVE_POINTS else None
