"""Photos of one plane: the focal length from the plane's homographies.

Two photos of a plane fit a homography, and a homography decomposes at any focal length, in two ways
that explain the matches equally (Faugeras and Lustman), while the fundamental matrices GLOMAP's
view-graph calibration reads are not defined there: so wide photos of one wall give the mapper models
with intrinsics no lens has (BENCHMARKS.md, "Three wide photos of one flat wall"). Two pairs that share
a photo see the same plane from it, so a decomposition of each must agree on the plane's normal there,
and at a wrong focal length none do: searching for the focal length where they agree fixes it
(autocalibration from a plane, Triggs 1998, with only the focal length unknown). OpenCV decomposes the
homographies and pycolmap fits them; the search is ours, as no library has it.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pycolmap

from spars_ns.geometry import angle_between_deg, centred_pinhole
from spars_ns.stages.base import SEED

if TYPE_CHECKING:
    from spars_ns.stages.sfm.mapping import MatchGraph

# A pair's homography must explain this many of its verified matches, and this share, within
# HOMOGRAPHY_ERROR_PX, for the pair to be a view of the plane.
MIN_PLANE_MATCHES = 30
MIN_PLANE_SHARE = 0.3
HOMOGRAPHY_ERROR_PX = 4.0
# The focal lengths searched, as factors of the photo's larger side (COLMAP's own bounds for a camera are
# 0.1-10; 0.3-3 is 11-105 mm equivalent on a 4:3 photo), on a log grid refined once around its best.
FOCAL_SEARCH = (0.3, 3.0)
FOCAL_STEPS = 61
# Two pairs agree on the plane where their normals in the shared photo are this close, in degrees:
# the fox's wall photos agreed within 0.5-2.6 degrees at their best focal length, and a pair whose
# matches were of the wallpaper's repeated roses disagreed by 23-29 at every one.
MAX_NORMAL_DISAGREEMENT_DEG = 5.0
# The agreement must be a valley, not a plain: a focal length this factor off must disagree by this
# many times more (photos that only move sideways agree at every focal length).
VALLEY_FACTOR = 1.25
VALLEY_DEPTH = 3.0
# Each photo's pairs with the most matches on the plane, two at a time: a search costs 0.07 s, so all
# pairs of 24 photos of a wall would take 7 minutes, these 10 s.
MAX_PAIRS_PER_PHOTO = 4


@dataclass
class PlanePair:
    """A verified pair as a view of a plane: the homography mapping the first photo's keypoints to the
    second's and the keypoints it explains."""

    image1: int
    image2: int
    homography: np.ndarray
    points1: np.ndarray
    points2: np.ndarray

    def seen_from(self, image: int) -> PlanePair:
        if image == self.image1:
            return self
        return PlanePair(self.image2, self.image1, np.linalg.inv(self.homography), self.points2, self.points1)


def plane_pairs(graph: MatchGraph, image_ids: set[int]) -> list[PlanePair]:
    """The verified pairs among `image_ids` whose matches a homography fits in good part, each with
    the homography LO-RANSAC fits to its verified matches (a pair of wall photos is verified by its
    fundamental matrix, whose inliers include matches off the plane)."""
    ransac = pycolmap.RANSACOptions()
    ransac.max_error = HOMOGRAPHY_ERROR_PX
    ransac.random_seed = SEED
    pairs = []
    for (id1, id2), matches in sorted(graph.inliers.items()):
        if id1 >= id2 or id1 not in image_ids or id2 not in image_ids or len(matches) < MIN_PLANE_MATCHES:
            continue
        points1, points2 = graph.keypoints[id1][matches[:, 0]], graph.keypoints[id2][matches[:, 1]]
        fit = pycolmap.estimate_homography_matrix(points1, points2, ransac)
        if fit is None:
            continue
        explained = np.asarray(fit["inlier_mask"], bool)
        if explained.sum() >= max(MIN_PLANE_MATCHES, MIN_PLANE_SHARE * len(matches)):
            pairs.append(PlanePair(id1, id2, fit["H"], points1[explained], points2[explained]))
    return pairs


def decompositions(pair: PlanePair, intrinsics: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(R, t, n) of the pair's homography at these intrinsics, second_from_first, t in units of the first
    photo's distance to the plane, n its normal there: those that put the explained points in front of
    both photos (OpenCV gives four, cheirality leaves one or two)."""
    _, rotations, translations, normals = cv2.decomposeHomographyMat(pair.homography, intrinsics)
    rays = np.c_[pair.points1, np.ones(len(pair.points1))] @ np.linalg.inv(intrinsics).T
    kept = []
    for rotation, translation, normal in zip(rotations, translations, normals):
        translation, normal = translation.ravel(), normal.ravel()
        inverse_depth = rays @ normal  # points on the plane n.X = 1
        if np.mean(inverse_depth > 0) < 0.9:
            continue
        second = (rays / inverse_depth[:, None]) @ rotation.T + translation
        if np.mean(second[:, 2] > 0) >= 0.9:
            kept.append((rotation, translation, normal))
    return kept


def disagreement_at(first: PlanePair, second: PlanePair, focal_length: float, width: int, height: int) -> float:
    """The smallest angle between the plane's normal by a decomposition of the first pair and by one of
    the second, both seen from their shared photo, at this focal length (degrees)."""
    intrinsics = centred_pinhole(focal_length, width, height)
    normals = [[n for _, _, n in decompositions(pair, intrinsics)] for pair in (first, second)]
    return min((angle_between_deg(a, b) for a in normals[0] for b in normals[1]), default=np.inf)


def calibrate_star(first: PlanePair, second: PlanePair, width: int, height: int) -> tuple[float, float] | None:
    """The focal length where two pairs seen from one photo agree on the plane's normal, and their
    disagreement there; None where they agree nowhere, or everywhere alike."""
    side = max(width, height)
    grid = np.geomspace(FOCAL_SEARCH[0] * side, FOCAL_SEARCH[1] * side, FOCAL_STEPS)
    costs = [disagreement_at(first, second, f, width, height) for f in grid]
    best = int(np.argmin(costs))
    step = grid[1] / grid[0]
    fine = np.geomspace(grid[best] / step, grid[best] * step, 21)
    fine_costs = [disagreement_at(first, second, f, width, height) for f in fine]
    focal, cost = fine[int(np.argmin(fine_costs))], min(fine_costs)
    if cost > MAX_NORMAL_DISAGREEMENT_DEG:
        return None
    sides = [disagreement_at(first, second, f, width, height) for f in (focal / VALLEY_FACTOR, focal * VALLEY_FACTOR)]
    if min(sides) < VALLEY_DEPTH * max(cost, 0.1):
        return None
    return float(focal), float(cost)


def focal_length_from_plane(
    graph: MatchGraph, names: list[str], sizes: dict[int, tuple[int, int]]
) -> dict[tuple[int, int], float]:
    """Per photo size (width, height), the median of the focal lengths where two pairs that share a
    photo of that size (their partners of it too) agree on the plane's normal; none where no two agree.
    Each such two fixes it; which of a homography's two decompositions is right they do not always
    tell (a wrong decomposition's normal lies along the right one's translation, and on the fox's wall
    photos the wrong ones agreed with each other too), so only the focal length is taken, as a prior
    for the pairs verified again (`calibrated_matches`)."""
    pairs = plane_pairs(graph, {graph.image_ids[n] for n in names})
    found: dict[tuple[int, int], list[float]] = {}
    for image in sorted({i for p in pairs for i in (p.image1, p.image2)}):
        seen = [p.seen_from(image) for p in pairs if image in (p.image1, p.image2)]
        seen = sorted(seen, key=lambda p: -len(p.points1))[:MAX_PAIRS_PER_PHOTO]
        for first, second in combinations(seen, 2):
            if len({sizes[first.image1], sizes[first.image2], sizes[second.image2]}) > 1:
                continue
            agreed = calibrate_star(first, second, *sizes[image])
            if agreed is not None:
                found.setdefault(sizes[image], []).append(agreed[0])
    return {size: float(np.median(focal_lengths)) for size, focal_lengths in found.items()}
