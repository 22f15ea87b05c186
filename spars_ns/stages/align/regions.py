"""Region proposals for the semantic outlier alignment.

`sam`: Segment Anything (the `segment-anything` package, `vit_h`/`vit_b`/`vit_l` by
checkpoint path, or found in the weights cache, `weights_cache()`), prompted with one point
per outlier, batched; masks that overlap are merged. `superpixels`: SLIC superpixels from
scikit-image, for when no SAM weights are at hand, at several scales. Label maps are at the
prior's working resolution: 0 for no region, k > 0 for region k.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from spars_ns.errors import InputError


@dataclass
class RegionsConfig:
    """Region proposals of the two-stage alignment (`--regions`)."""

    sam_checkpoint: Path | None = None
    """SAM weights (e.g. sam_vit_h_4b8939.pth); without it, --regions sam and auto look for the
    official file name of --regions-options.sam-model in the weights cache (README)."""
    sam_model: Literal["vit_h", "vit_l", "vit_b"] = "vit_h"


MAX_PROMPTS = 64  # outlier points used as SAM prompts per image (evenly subsampled beyond this)
MERGE_OVERLAP = 0.25  # SAM masks whose overlap exceeds this share of the smaller mask are merged
# Approximate numbers of SLIC superpixels per image, coarse to fine: a coarse region that no single
# similarity explains is retried as finer superpixels (BENCHMARKS.md, "Alignment", bench_align.py).
SUPERPIXELS = (15, 50, 200)


def superpixel_regions(image: np.ndarray) -> list[np.ndarray]:
    """SLIC label maps (labels from 1), one per entry of `SUPERPIXELS`.

    Segmentation runs on every `step`-th pixel so that the long side is about 256 pixels
    (SLIC's cost grows with pixels; regions hundreds of pixels wide lose little), and the
    labels are repeated back to full size.
    """
    from skimage.segmentation import slic

    h, w = image.shape[:2]
    step = max(1, round(max(h, w) / 256))
    small = image[::step, ::step]
    levels = []
    for n in SUPERPIXELS:
        labels = slic(small, n_segments=n, compactness=10.0, start_label=1).astype(np.int32)
        levels.append(np.repeat(np.repeat(labels, step, 0), step, 1)[:h, :w])
    return levels


def merge_masks(masks: np.ndarray, min_overlap: float) -> np.ndarray:
    """(K, h, w) boolean masks -> (h, w) labels; masks overlapping by `min_overlap` of the smaller share one label."""
    k = len(masks)
    parent = list(range(k))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    flat = masks.reshape(k, -1).astype(np.float32)
    areas = flat.sum(1)
    overlap = flat @ flat.T
    for i in range(k):
        for j in range(i + 1, k):
            smaller = min(areas[i], areas[j])
            if smaller > 0 and overlap[i, j] >= min_overlap * smaller:
                parent[root(j)] = root(i)
    labels = np.zeros(masks.shape[1:], np.int32)
    roots = sorted({root(i) for i in range(k) if areas[i] > 0})
    for label, r in enumerate(roots, start=1):
        for i in range(k):
            if root(i) == r:
                labels[masks[i] & (labels == 0)] = label
    return labels


# The file names Meta publishes the SAM checkpoints under.
SAM_CHECKPOINT_NAMES = {
    "vit_h": "sam_vit_h_4b8939.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_b": "sam_vit_b_01ec64.pth",
}


def weights_cache() -> Path:
    """Where spars-ns looks for weights it cannot download: $SPARS_NS_CACHE, else
    $XDG_CACHE_HOME/spars-ns, else ~/.cache/spars-ns."""
    if os.environ.get("SPARS_NS_CACHE"):
        return Path(os.environ["SPARS_NS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "spars-ns"


def find_sam_checkpoint(config: RegionsConfig) -> Path | None:
    """The SAM weights to use: the given path, or the official file in the weights cache."""
    if config.sam_checkpoint is not None:
        return Path(config.sam_checkpoint)
    cached = weights_cache() / SAM_CHECKPOINT_NAMES[config.sam_model]
    return cached if cached.is_file() else None


def sam_not_found(path: Path | None) -> InputError:
    return InputError(
        f"SAM checkpoint {path} not found: pass --regions-options.sam-checkpoint PATH to the downloaded weights, "
        f"put them in the weights cache ({weights_cache()}) under their official name, or use --regions superpixels."
    )


def choose_regions(
    kind: Literal["auto", "sam", "superpixels"], config: RegionsConfig
) -> tuple[str, RegionsConfig, str]:
    """(the regions that will run, their options with the SAM checkpoint filled in, a notice
    saying which and why). `auto` takes SAM when its weights and package are at hand."""
    if kind == "superpixels":
        return "superpixels", config, "two-stage alignment with superpixel regions (--regions superpixels)"
    checkpoint = find_sam_checkpoint(config)
    has_package = importlib.util.find_spec("segment_anything") is not None
    if kind == "sam" or (checkpoint is not None and checkpoint.is_file() and has_package):
        if checkpoint is None or not checkpoint.is_file():
            raise sam_not_found(checkpoint or weights_cache() / SAM_CHECKPOINT_NAMES[config.sam_model])
        return "sam", replace(config, sam_checkpoint=checkpoint), f"two-stage alignment with SAM regions ({checkpoint})"
    why = (
        "the segment-anything package is not installed (pip install 'spars-ns[sam]')"
        if not has_package
        else f"no SAM weights: pass --regions-options.sam-checkpoint PATH or put them at "
        f"{weights_cache() / SAM_CHECKPOINT_NAMES[config.sam_model]}"
    )
    return "superpixels", config, f"two-stage alignment with superpixel regions, not SAM: {why}"


class SamRegions:
    """A SAM predictor built once per run; call it per image with outlier pixels."""

    def __init__(self, config: RegionsConfig, device: str = "cpu"):
        try:
            from segment_anything import SamPredictor, sam_model_registry
        except ImportError as err:
            raise InputError(
                "--regions sam needs the segment-anything package: pip install 'spars-ns[sam]' "
                "(or use --regions superpixels)."
            ) from err
        if config.sam_checkpoint is None or not Path(config.sam_checkpoint).is_file():
            raise sam_not_found(config.sam_checkpoint)
        model = sam_model_registry[config.sam_model](checkpoint=str(config.sam_checkpoint))
        self.predictor = SamPredictor(model.to(device).eval())
        self.config = config

    @classmethod
    def from_model(cls, model, config: RegionsConfig) -> SamRegions:
        """Wrap an already built SAM model (used by the tests with a tiny random one)."""
        from segment_anything import SamPredictor

        self = cls.__new__(cls)
        self.predictor = SamPredictor(model.eval())
        self.config = config
        return self

    def __call__(self, image: np.ndarray, prompts_xy: np.ndarray) -> np.ndarray:
        """Label map for `image` (h, w, 3 uint8) from point prompts (N, 2) in its pixels."""
        import torch

        if len(prompts_xy) == 0:
            return np.zeros(image.shape[:2], np.int32)
        if len(prompts_xy) > MAX_PROMPTS:
            prompts_xy = prompts_xy[np.linspace(0, len(prompts_xy) - 1, MAX_PROMPTS).astype(int)]
        self.predictor.set_image(image)
        device = self.predictor.device
        coords = self.predictor.transform.apply_coords_torch(
            torch.as_tensor(prompts_xy, dtype=torch.float32, device=device)[:, None, :], image.shape[:2]
        )
        labels = torch.ones(coords.shape[:2], dtype=torch.int64, device=device)
        with torch.no_grad():
            masks, _, _ = self.predictor.predict_torch(coords, labels, multimask_output=False)
        return merge_masks(masks[:, 0].cpu().numpy(), MERGE_OVERLAP)
