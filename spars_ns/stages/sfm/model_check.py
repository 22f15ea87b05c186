"""Is an SfM model right? Checked against the verified two-view matches it was built from.

Repetitive structure (facades, rows of windows, symmetric buildings) makes a pair of photos
match the wrong copy of a structure. Such matches pass two-view verification (they fit the
epipolar geometry of a camera moved by one period), and incremental mapping can build a
model on them that looks right: every photo registered, a low reprojection error, and yet
tens of degrees off. Each pair was verified on its own, so the pairs are independent
witnesses: in a right model the inlier matches of every well-matched pair lie on the
epipolar lines of the model's relative pose; a wrong model leaves whole pairs unexplained.
A right model leaves unexplained only the pairs that matched a wrong copy. Which of the two
it is, the other pairs of the same photos tell (an image placed against most of its pairs
is in doubt), and so do the mapper's other starts (sfm.py ranks its models by this check).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import combinations

import numpy as np
import pycolmap

# Photos judged together by `ModelCheck.doubtful_images`: groups of 3 caught a fox model 46 degrees
# off that groups of 2 missed; on 265 captures groups of 4 flagged nothing more (BENCHMARKS.md).
DOUBT_GROUP_SIZE = 3


@dataclass(frozen=True)
class PairCheck:
    image1: str
    image2: str
    matches: int
    """Verified inlier matches of the pair."""
    explained: float
    """Share of them within `max_error` of the epipolar lines of the model's relative pose."""


@dataclass(frozen=True)
class ModelCheck:
    pairs: list[PairCheck]
    """Every registered pair with enough verified matches to witness."""
    min_explained: float

    @property
    def unexplained(self) -> list[PairCheck]:
        """Pairs whose matches the model does not explain: the model or the pair is wrong."""
        return [p for p in self.pairs if p.explained < self.min_explained]

    @property
    def doubtful_images(self) -> list[str]:
        """Photos placed against most of their own evidence: a group of up to `DOUBT_GROUP_SIZE`
        photos (and at most half of them), none already in doubt, smallest first, whose pairs with the
        other photos hold at least as many unexplained verified matches as explained ones. An
        unexplained pair of images that the rest of their matches support is the pair's fault (it
        matched a wrong copy), not the model's: on 12 fox photos, 0001.jpg's four unexplained
        pairs (51-115 matches) are unexplained by the true cameras too, while its 1,239-match
        pair agrees.

        One photo's own vote misses photos placed together: of six fox photos, a model 40 degrees
        off placed 0103 and 0110 (997 matches between them, which outvote everything else for
        each) on 378 false matches to the rest, against 774 that it left at 0% explained; another
        joined two right halves of three photos 46 degrees apart, each photo outvoted by the pairs
        within its half (BENCHMARKS.md, "The model check's vote")."""
        names = sorted({name for p in self.pairs for name in (p.image1, p.image2)})
        index = {name: i for i, name in enumerate(names)}
        explained, unexplained = np.zeros((2, len(names), len(names)))
        for p in self.pairs:
            votes = explained if p.explained >= self.min_explained else unexplained
            votes[index[p.image1], index[p.image2]] = votes[index[p.image2], index[p.image1]] = p.matches
        doubtful: set[str] = set()
        for size in range(1, min(DOUBT_GROUP_SIZE, len(names) // 2) + 1):
            groups = np.array(list(combinations(range(len(names)), size)))
            inside = np.zeros((len(groups), len(names)))
            inside[np.arange(len(groups))[:, None], groups] = 1
            against = np.einsum("gi,ij,gj->g", inside, unexplained, 1 - inside)
            support = np.einsum("gi,ij,gj->g", inside, explained, 1 - inside)
            for group in groups[(against > 0) & (against >= support)]:
                if not doubtful & {names[i] for i in group}:  # a doubtful photo drags in any group it joins
                    doubtful.update(names[i] for i in group)
        return sorted(doubtful)

    @property
    def explained_share(self) -> float:
        """The share of all the checked pairs' verified matches that the model explains (NaN without pairs).
        Where structure repeats, matches of a copy one period along a wall pass verification beside the right
        ones, and no model explains them all (the figures: `mapping.MIN_EXPLAINED_SHARE`)."""
        matches = sum(p.matches for p in self.pairs)
        return sum(p.matches * p.explained for p in self.pairs) / matches if matches else float("nan")

    def report(self) -> dict:
        """What `sfm/report.json` and the manifest say of the check."""
        return {
            "pairs_checked": len(self.pairs),
            "explained_share": self.explained_share if self.pairs else None,
            "pairs_unexplained": [asdict(p) for p in self.unexplained],
            "doubtful_images": self.doubtful_images,
        }


def check_model(
    model: pycolmap.Reconstruction,
    inliers: dict[tuple[int, int], np.ndarray],
    keypoints: dict[int, np.ndarray],
    min_matches: int,
    max_error: float = 0.005,
    min_explained: float = 0.4,
) -> ModelCheck:
    """Each pair of registered images with at least `min_matches` verified inlier matches
    (`inliers[(id1, id2)]`, keypoint indices; `keypoints[id]`, COLMAP pixel convention),
    scored by the share of its matches whose epipolar distance under the model's relative
    pose is under `max_error` in normalised image units, in both images (0.005: about 0.3
    degrees, 4 px at a focal length of 800 px). An angle, not pixels: a right model's
    relative poses err by a fraction of a degree, which is tens of pixels on large photos;
    a pair matched to a wrong copy is off by the copies' spacing, many degrees. A pair is
    unexplained under `min_explained`: right models of fox and Strecha subsets explain at
    least 51% of every pair's matches, a wrong fox model (67 degrees off, all six photos
    registered) at most 35% (BENCHMARKS.md)."""
    registered = set(model.reg_image_ids())
    pairs = []
    for (id1, id2), matches in sorted(inliers.items()):
        if id1 > id2 or id1 not in registered or id2 not in registered or len(matches) < min_matches:
            continue
        image1, image2 = model.image(id1), model.image(id2)
        camera1, camera2 = model.camera(image1.camera_id), model.camera(image2.camera_id)
        x1 = camera1.cam_from_img(keypoints[id1][matches[:, 0]].astype(float))
        x2 = camera2.cam_from_img(keypoints[id2][matches[:, 1]].astype(float))
        cam2_from_cam1 = image2.cam_from_world() * image1.cam_from_world().inverse()
        distance1, distance2 = epipolar_distances(x1, x2, cam2_from_cam1.rotation.matrix(), cam2_from_cam1.translation)
        explained = np.mean(np.maximum(distance1, distance2) < max_error)
        pairs.append(PairCheck(image1.name, image2.name, len(matches), float(explained)))
    return ModelCheck(pairs, min_explained)


def epipolar_distances(
    x1: np.ndarray, x2: np.ndarray, rotation: np.ndarray, translation: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distances of normalised points x1 (N, 2) and x2 (N, 2) to each other's epipolar lines,
    in normalised image units, for x2 ~ rotation @ x1 + translation. Without a baseline the
    pair constrains only the rotation: the angle between x2 and rotation @ x1 then."""
    h1 = np.column_stack([x1, np.ones(len(x1))])
    h2 = np.column_stack([x2, np.ones(len(x2))])
    norm = np.linalg.norm(translation)
    if norm < 1e-12:
        rotated = h1 @ rotation.T
        rotated = rotated[:, :2] / rotated[:, 2:]
        distance = np.linalg.norm(rotated - x2, axis=1)
        return distance, distance
    t = translation / norm
    essential = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]]) @ rotation
    lines2 = h1 @ essential.T  # epipolar lines in image 2
    lines1 = h2 @ essential  # and in image 1
    residual = np.abs(np.sum(h2 * lines2, axis=1))
    return residual / np.linalg.norm(lines1[:, :2], axis=1), residual / np.linalg.norm(lines2[:, :2], axis=1)
