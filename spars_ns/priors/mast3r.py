"""MASt3R dense prior: pairwise pointmaps and MASt3R's sparse global alignment.

The `mast3r`, `dust3r` and `croco` packages are not on PyPI under those names; the
`instantsplat` package ships them (`pip install "spars-ns[mast3r]"`). Three quirks of
that packaging are handled in `import_mast3r`: its prebuilt cuRoPE kernel does not
match current torch (croco's PyTorch RoPE is used instead), `dust3r` must be imported
before `mast3r`, and the imports prepend folders to `sys.path` that would shadow
top-level names such as `models` and `utils`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

from spars_ns.errors import InputError
from spars_ns.priors import DensePrior

DEFAULT_CHECKPOINT = "naver/MASt3R_ViTLarge_BaseDecoder_512_catmlpdpt_metric"
INSTALL_HINT = 'pip install "spars-ns[mast3r]"'
PATCH_SIZE = 16


@dataclass
class Mast3rConfig:
    checkpoint: str = DEFAULT_CHECKPOINT
    """Checkpoint name (fetched and cached by huggingface_hub) or local .pth / folder path."""
    image_size: int = 512
    """Long side of MASt3R's working resolution (224 or 512, as the checkpoint was trained)."""
    complete_up_to: int = 16
    """All pairs up to this many images; above it, pairs within a sliding window."""
    window: int = 6
    coarse_iterations: int = 300
    fine_iterations: int = 300
    matching_conf_threshold: float = 5.0
    device: str = "auto"
    """cuda when available, else cpu."""


def import_mast3r() -> SimpleNamespace:
    saved_path = list(sys.path)
    sys.modules.setdefault("models.curope", None)  # type: ignore[arg-type]  # blocks the stale kernel
    try:
        import dust3r.model  # noqa: F401  (must precede mast3r)
        from dust3r.image_pairs import make_pairs
        from dust3r.utils.image import load_images
        from mast3r.cloud_opt.sparse_ga import sparse_global_alignment
        from mast3r.model import AsymmetricMASt3R
    except ImportError as err:
        raise InputError(f"--prior mast3r needs MASt3R ({err}). Install it with: {INSTALL_HINT}") from err
    finally:
        sys.path[:] = saved_path
    return SimpleNamespace(
        AsymmetricMASt3R=AsymmetricMASt3R, load_images=load_images, make_pairs=make_pairs,
        sparse_global_alignment=sparse_global_alignment,
    )


def resolve_device(device: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def load_model(checkpoint: str, device: str):
    """The MASt3R model from a checkpoint name or local path, with a clear error offline."""
    api = import_mast3r()
    try:
        model = api.AsymmetricMASt3R.from_pretrained(checkpoint)
    except (OSError, ValueError) as err:
        raise InputError(
            f"Cannot load the MASt3R checkpoint '{checkpoint}' ({type(err).__name__}: {str(err)[:200]}). "
            "Without network access, download it on another machine and pass its local path with "
            "--prior-options.mast3r.checkpoint PATH; or use --prior files or --prior none."
        ) from err
    return model.to(resolve_device(device)).eval()


def working_window(width: int, height: int, size: int) -> tuple[tuple[float, float], tuple[float, float], tuple[int, int]]:
    """(scale, offset, (w, h)) of dust3r's `load_images` resize-and-crop for an image.

    An original pixel coordinate is `scale * working + offset` (continuous coordinates).
    """
    long_edge = round(size * max(width / height, height / width)) if size == 224 else size
    factor = long_edge / max(width, height)
    resized_w, resized_h = int(round(width * factor)), int(round(height * factor))
    cx, cy = resized_w // 2, resized_h // 2
    if size == 224:
        half_w = half_h = min(cx, cy)
    else:
        half_w = ((2 * cx) // PATCH_SIZE) * PATCH_SIZE / 2
        half_h = ((2 * cy) // PATCH_SIZE) * PATCH_SIZE / 2
        if resized_w == resized_h:
            half_h = 3 * half_w / 4
    scale = (width / resized_w, height / resized_h)
    offset = ((cx - half_w) * scale[0], (cy - half_h) * scale[1])
    return scale, offset, (int(2 * half_w), int(2 * half_h))


def predict_priors(image_paths: list[Path], model, config: Mast3rConfig, cache_dir: Path) -> list[DensePrior]:
    """One DensePrior per image, in MASt3R's common world frame after sparse global alignment."""
    api = import_mast3r()
    paths = [str(p) for p in image_paths]
    images = api.load_images(paths, size=config.image_size, verbose=False)
    graph = "complete" if len(paths) <= config.complete_up_to else f"swin-{config.window}-noncyclic"
    pairs = api.make_pairs(images, scene_graph=graph, prefilter=None, symmetrize=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    scene = api.sparse_global_alignment(
        paths, pairs, str(cache_dir), model,
        niter1=config.coarse_iterations, niter2=config.fine_iterations,
        matching_conf_thr=config.matching_conf_threshold,
        device=next(model.parameters()).device, opt_depth=True, shared_intrinsics=False,
    )
    points, _, confidences = scene.get_dense_pts3d(clean_depth=True)
    priors = []
    for path, pts, conf in zip(image_paths, points, confidences):
        with Image.open(path) as image:
            scale, offset, (w, h) = working_window(*image.size, config.image_size)
        pts = pts.detach().cpu().numpy().reshape(h, w, 3).astype(np.float32)
        conf = conf.detach().cpu().numpy().reshape(h, w).astype(np.float32)
        priors.append(DensePrior(pts, conf, scale, offset))
    return priors
