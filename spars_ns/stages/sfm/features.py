"""Learned local features (ALIKED or DISK) matched by LightGlue, all from kornia.

pycolmap's own ALIKED/LightGlue needs an ONNX build its PyPI wheels lack (asking for it
aborts the process), so learned features are computed here and written into the COLMAP
database as keypoints and raw matches; pycolmap then verifies the two-view geometry and
maps them with the same sparse-view mapper as SIFT.

Weights: by name through kornia's own loaders (downloaded once into torch's hub cache), or
from local files (`extractor_checkpoint`, `matcher_checkpoint`: state dicts of the same
kornia classes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from spars_ns.errors import InputError
from spars_ns.stages.sfm.config import FeatureType, LearnedFeaturesConfig


@dataclass
class Features:
    keypoints: np.ndarray  # (N, 2) float32, COLMAP pixel convention (top-left corner is 0, 0)
    descriptors: np.ndarray  # (N, D) float32
    image_size: tuple[int, int]  # (width, height) of the full image


def device_of(config: LearnedFeaturesConfig) -> torch.device:
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(config.device)


def _weights_error(what: str, err: Exception, option: str) -> InputError:
    return InputError(
        f"could not load the {what} weights ({type(err).__name__}: {err}). kornia downloads them on first use "
        f"into {torch.hub.get_dir()}/checkpoints; offline, pass a local state dict with {option}."
    )


def load_extractor(kind: FeatureType, config: LearnedFeaturesConfig) -> torch.nn.Module:
    import kornia.feature as KF

    device = device_of(config)
    try:
        if kind == "aliked+lightglue":
            if config.extractor_checkpoint:
                model = KF.ALIKED(config.aliked_model, max_num_keypoints=config.max_keypoints)
                model.load_state_dict(torch.load(config.extractor_checkpoint, map_location="cpu", weights_only=True))
            else:
                model = KF.ALIKED.from_pretrained(config.aliked_model, max_num_keypoints=config.max_keypoints)
        elif kind == "disk+lightglue":
            if config.extractor_checkpoint:
                model = KF.DISK()
                model.load_state_dict(torch.load(config.extractor_checkpoint, map_location="cpu", weights_only=True))
            else:
                model = KF.DISK.from_pretrained(config.disk_checkpoint)
        else:
            raise ValueError(f"no learned extractor for {kind!r}")
    except (OSError, RuntimeError) as err:
        raise _weights_error(kind.split("+")[0].upper(), err, "--sfm-options.learned.extractor-checkpoint") from err
    return model.eval().to(device)


def load_matcher(kind: FeatureType, config: LearnedFeaturesConfig) -> torch.nn.Module:
    import kornia.feature as KF

    features = kind.split("+")[0]
    try:
        if config.matcher_checkpoint:
            model = KF.LightGlue(None, **{**KF.LightGlue.features[features], "weights": None})
            model.load_state_dict(torch.load(config.matcher_checkpoint, map_location="cpu", weights_only=True))
        else:
            model = KF.LightGlue(features)
    except (OSError, RuntimeError) as err:
        raise _weights_error(f"LightGlue ({features})", err, "--sfm-options.learned.matcher-checkpoint") from err
    return model.eval().to(device_of(config))


@torch.no_grad()
def extract(extractor: torch.nn.Module, path: Path, config: LearnedFeaturesConfig) -> Features:
    """Keypoints and descriptors of one image, detected at most `resize_max` pixels wide."""
    import kornia.feature as KF

    with Image.open(path) as image:
        rgb = image.convert("RGB")
    width, height = rgb.size
    scale = min(1.0, config.resize_max / max(width, height))
    if scale < 1.0:
        rgb = rgb.resize((round(width * scale), round(height * scale)), Image.Resampling.BILINEAR)
    to_photo = np.array([width, height]) / rgb.size  # per axis: the reduced size is rounded
    device = next(extractor.parameters()).device
    tensor = torch.from_numpy(np.asarray(rgb, np.float32) / 255.0).permute(2, 0, 1)[None].to(device)
    if isinstance(extractor, KF.DISK):
        found = extractor(tensor, n=config.max_keypoints, pad_if_not_divisible=True)[0]
    else:
        found = extractor(tensor)[0]
    keypoints = (found.keypoints.cpu().numpy() + 0.5) * to_photo  # kornia: pixel centres at integers
    return Features(keypoints.astype(np.float32), found.descriptors.cpu().numpy().astype(np.float32), (width, height))


@torch.no_grad()
def match(matcher: torch.nn.Module, a: Features, b: Features) -> np.ndarray:
    """(M, 2) indices of matched keypoints of a and b."""
    device = next(matcher.parameters()).device

    def side(features: Features) -> dict:
        return {
            "keypoints": torch.from_numpy(features.keypoints - 0.5)[None].to(device),
            "descriptors": torch.from_numpy(features.descriptors)[None].to(device),
            "image_size": torch.tensor([features.image_size], dtype=torch.float32, device=device),
        }

    if len(a.keypoints) == 0 or len(b.keypoints) == 0:
        return np.zeros((0, 2), np.uint32)
    result = matcher({"image0": side(a), "image1": side(b)})
    return result["matches"][0].cpu().numpy().astype(np.uint32)


def global_descriptor(features: Features) -> np.ndarray:
    """Mean of the unit local descriptors: a global descriptor that costs no extra weights."""
    unit = features.descriptors / np.maximum(np.linalg.norm(features.descriptors, axis=1, keepdims=True), 1e-12)
    return unit.mean(0) if len(unit) else np.zeros(features.descriptors.shape[1], np.float32)
