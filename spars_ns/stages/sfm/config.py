"""Options of the SfM stage a user would change; importable without pycolmap or torch.

The mapper's measured thresholds are constants in `mapping.py`, next to the measurement
that chose them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

FeatureType = Literal["sift", "aliked+lightglue", "disk+lightglue"]


@dataclass
class LearnedFeaturesConfig:
    """Options of learned features (`--sfm-options.features aliked+lightglue|disk+lightglue`)."""

    max_keypoints: int = 4096
    resize_max: int = 1600
    """Longest image side fed to the extractor (keypoints are mapped back to full size)."""
    aliked_model: str = "aliked-n16"
    disk_checkpoint: str = "depth"
    extractor_checkpoint: Path | None = None
    """Local state dict of the extractor (kornia's ALIKED or DISK), instead of the download."""
    matcher_checkpoint: Path | None = None
    """Local state dict of kornia's LightGlue for these features, instead of the download."""
    device: Literal["auto", "cpu", "cuda"] = "auto"


@dataclass
class SfMConfig:
    """Options of the SfM stage. Defaults measured in BENCHMARKS.md (bench_poses, bench_cameras)."""

    features: FeatureType = "sift"
    """Local features: SIFT (pycolmap), or ALIKED / DISK matched by LightGlue (kornia; weights
    downloaded on first use, or --sfm-options.learned.*-checkpoint)."""
    learned: LearnedFeaturesConfig = field(default_factory=LearnedFeaturesConfig)
    """Options of the learned features."""
    camera_model: str = "SIMPLE_RADIAL"
    """COLMAP camera model; few views constrain little more than focal length and k1."""
    max_num_features: int = 8192
    """SIFT features per image."""
