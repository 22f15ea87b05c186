"""Which image pairs to match: all of them for small sets, a shortlist by retrieval above that.

As in the Image Matching Challenge 2023 pipelines, a shortlist keeps each image's top-k
nearest images by a global descriptor, plus, when the names look like frames of a video,
its neighbours in name order. The global descriptor is whatever the caller gives: the
mean of an image's learned local descriptors when learned features are used (no extra
weights), or `thumbnail_descriptor`, which needs no weights at all.
"""

from __future__ import annotations

import re
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image

EXHAUSTIVE_UP_TO = 40  # match every pair up to this many images; above it, a retrieval shortlist
TOP_K = 10  # nearest images by global descriptor kept per image in the shortlist
SEQUENTIAL = 3  # neighbours in name order also kept, when the names look like video frames


def select_pairs(names: list[str], descriptors: np.ndarray | None) -> list[tuple[str, str]]:
    """Unordered pairs (a, b) with a before b in `names`; `descriptors` (N, D) are needed above
    `EXHAUSTIVE_UP_TO`."""
    if len(names) <= EXHAUSTIVE_UP_TO:
        return list(combinations(names, 2))
    if descriptors is None or len(descriptors) != len(names):
        raise ValueError("retrieval needs one global descriptor per image")
    unit = descriptors / np.maximum(np.linalg.norm(descriptors, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    chosen: set[tuple[int, int]] = set()
    k = min(TOP_K, len(names) - 1)
    for i, row in enumerate(similarity):
        for j in np.argpartition(-row, k - 1)[:k]:
            chosen.add((min(i, int(j)), max(i, int(j))))
    if SEQUENTIAL and looks_sequential(names):
        order = sorted(range(len(names)), key=lambda i: names[i])
        for position, i in enumerate(order):
            for j in order[position + 1 : position + 1 + SEQUENTIAL]:
                chosen.add((min(i, j), max(i, j)))
    return [(names[i], names[j]) for i, j in sorted(chosen)]


def looks_sequential(names: list[str]) -> bool:
    """True when the names share a prefix and differ by a frame number (frame_0001.jpg, ...)."""
    stems = [Path(n).stem for n in names]
    parts = [re.fullmatch(r"(.*?)(\d+)", s) for s in stems]
    if not all(parts):
        return False
    return len({p.group(1) for p in parts}) == 1


def thumbnail_descriptor(path: Path, size: tuple[int, int] = (32, 24)) -> np.ndarray:
    """A weight-free global descriptor: the image shrunk to 32x24 grey levels, zero-mean and
    unit-norm. It finds the near-duplicate views of a walk-through; learned descriptors do better."""
    with Image.open(path) as image:
        grey = np.asarray(image.convert("L").resize(size, Image.Resampling.BILINEAR), np.float32).ravel()
    grey -= grey.mean()
    return grey / max(float(np.linalg.norm(grey)), 1e-12)


def strongest_pairs(weights: np.ndarray, per_view: int, complete_up_to: int) -> list[tuple[int, int]]:
    """Pairs (i < j) of N views given (N, N) symmetric pair weights (e.g. verified matches, 0: none):
    all pairs up to `complete_up_to` views; above it, each view's `per_view` heaviest pairs plus a
    maximum spanning tree, and, where the weights leave the views in pieces, neighbours in order
    joining the pieces, so that every view is reached."""
    from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

    n = len(weights)
    if n <= complete_up_to:
        return list(combinations(range(n), 2))
    chosen: set[tuple[int, int]] = set()
    for i, row in enumerate(weights):
        partners = [j for j in np.argsort(-row, kind="stable") if j != i and row[j] > 0][:per_view]
        chosen.update((min(i, int(j)), max(i, int(j))) for j in partners)
    tree = minimum_spanning_tree(np.where(weights > 0, weights.max() + 1 - weights, 0)).tocoo()  # heaviest edges
    chosen.update((min(int(i), int(j)), max(int(i), int(j))) for i, j in zip(tree.row, tree.col))
    adjacency = np.zeros((n, n), bool)
    for i, j in chosen:
        adjacency[i, j] = True
    _, piece = connected_components(adjacency, directed=False)
    chosen.update((i, i + 1) for i in range(n - 1) if piece[i] != piece[i + 1])
    return sorted(chosen)
