"""Processing options: importable without pycolmap.

`ns-train`, `ns-eval` and `ns-viewer` parse the spars-data dataparser's processing options
even when the scene is already processed; they need no SfM library then, so a GPU node can
train without pycolmap (scripts/offline_wheels.sh). The options of the stages whose modules
import pycolmap (sfm, align) live here; the other stages keep theirs beside their code.

One naming scheme for every stage: `--<stage> MODE` chooses what the stage does and
`--<stage>-options.*` holds its settings (`--prior files --prior-options.dir DIR`,
`--align two-stage --align-options.inlier-threshold 0.01`, `--refine local
--refine-options.grid 5`); the SfM stage has no mode, only `--sfm-options.*`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

from spars_ns.errors import InputError
from spars_ns.features import FeatureType, LearnedFeaturesConfig
from spars_ns.pairs import PairsConfig
from spars_ns.priors.mast3r import Mast3rConfig, check_weights
from spars_ns.priors.stereo import StereoConfig, check_stereo
from spars_ns.refine import RefineConfig
from spars_ns.regions import RegionsConfig, choose_regions


log = logging.getLogger(__name__)


@dataclass
class SfMConfig:
    """Options of the SfM stage. Defaults measured in BENCHMARKS.md (bench_poses)."""

    features: FeatureType = "sift"
    """Local features: SIFT (pycolmap), or ALIKED / DISK matched by LightGlue (kornia; weights
    downloaded on first use, or --sfm-options.learned.*-checkpoint)."""
    learned: LearnedFeaturesConfig = field(default_factory=LearnedFeaturesConfig)
    """Options of the learned features."""
    camera_model: str = "SIMPLE_RADIAL"
    """COLMAP camera model; few views constrain little more than focal length and k1."""
    max_num_features: int = 8192
    wide_baseline_up_to: int = 8
    """Up to this many photos, SIFT is affine-covariant with domain-size pooling and matching is
    guided, as the three options below say; above it, the views are closer together and plain
    SIFT matched without guidance is as accurate at a fraction of the time (BENCHMARKS.md)."""
    domain_size_pooling: bool = True
    """DSP-SIFT: more distinctive descriptors for wide baselines (CPU extraction only)."""
    estimate_affine_shape: bool = True
    """Affine-covariant SIFT: halves the pair error on 3-view Strecha scenes (BENCHMARKS.md)."""
    guided_matching: bool = True
    """Matches found again along the verified epipolar geometry: without it, fountain-P11 at 3
    views registers nothing."""
    min_num_inliers: int = 15
    """Verified matches a pair needs to count as overlapping."""
    init_min_num_inliers: int = 30
    init_min_tri_angle: float = 4.0
    abs_pose_min_num_inliers: int = 15
    abs_pose_min_inlier_ratio: float = 0.1
    max_init_pairs: int = 6
    """Starts of the mapper: COLMAP's choice of initial pair, then the strongest pairs."""
    max_extra_starts: int = 3
    """Starts from pairs whose matches the best model leaves unexplained (model_check.py)."""
    all_starts_up_to: int = 8
    """Up to this many training views every start is mapped and the best model kept (at 4
    fountain-P11 views COLMAP's own start errs by 3 degrees, another by 0.4); above it the
    starts stop at the first complete model that the model check finds no doubt in: the
    starts agree there, and each costs seconds to minutes (BENCHMARKS.md)."""
    check_min_matches: int = 50
    """Verified matches a pair needs to witness for or against a model (model_check.py)."""
    pairs: PairsConfig = field(default_factory=PairsConfig)
    seed: int = 0


@dataclass
class PriorConfig:
    """Options of the dense-prior stage."""

    dir: Path | None = None
    """Folder of <stem>.npy / <stem>.npz depth or pointmaps, for --prior files."""
    mast3r: Mast3rConfig = field(default_factory=Mast3rConfig)
    """MASt3R's checkpoint and settings, for --prior mast3r."""
    stereo: StereoConfig = field(default_factory=StereoConfig)
    """Two-view stereo on SfM's cameras, for --prior stereo."""


@dataclass
class AlignConfig:
    """Options of the alignment stage. Defaults measured with scripts/bench_align.py."""

    inlier_threshold: float = 0.01
    """RANSAC inlier distance as a fraction of the scene depth."""
    min_correspondences: int = 10
    """Fewer SfM correspondences than this: the image keeps its SfM points only."""
    min_region_outliers: int = 5
    """Outliers a region must hold to get its own Sim3."""
    min_region_inlier_ratio: float = 0.6
    """A region's own fit must explain this share of its correspondences, or it is rejected."""
    rejected_regions: Literal["global", "drop"] = "drop"
    """Pixels of a rejected region: keep the global transform, or drop them."""
    seed: int = 0


@dataclass
class ProcessOptions:
    """How photos are processed (shared by `spars-ns process` and the spars-data dataparser)."""

    test_every: int = 0
    """Every Nth image by sorted name (the 1st, N+1th, ...) is held out as a test view; 0: none."""
    test_views: tuple[str, ...] = ()
    """File names of the photos to hold out as test views instead (overrides --test-every)."""
    sfm_options: SfMConfig = field(default_factory=SfMConfig)
    prior: Literal["none", "files", "mast3r", "stereo"] = "none"
    """Dense prior: none (SfM points only), files (depth or pointmaps from --prior-options.dir), mast3r,
    or stereo (OpenCV's semi-global matching on SfM's cameras; no learned weights)."""
    prior_options: PriorConfig = field(default_factory=PriorConfig)
    align: Literal["none", "global", "two-stage"] = "two-stage"
    """How the prior is mapped onto the SfM frame: none (SfM seeds only), one Sim3 per
    image, or that plus a Sim3 per region where the global fit leaves outliers."""
    align_options: AlignConfig = field(default_factory=AlignConfig)
    regions: Literal["auto", "sam", "superpixels"] = "auto"
    """Region proposals of the two-stage alignment: SAM (needs its weights, README), superpixels
    (no weights), or auto: SAM when its weights are at hand, else superpixels, with a notice."""
    regions_options: RegionsConfig = field(default_factory=RegionsConfig)
    refine: Literal["none", "global", "local"] = "none"
    """Frozen-depth refinement of the prior's depth: none, a scale and shift per image, or
    that plus a smooth local grid solved jointly for multi-view consistency."""
    refine_options: RefineConfig = field(default_factory=RefineConfig)
    max_dense_points: int = 500_000
    """Cap on the prior points written to points.ply (sampled evenly over images)."""


# What `ns-train spars3r` processes photos with: the paper's recipe (MASt3R, two-stage alignment,
# the aligned depth refined by a scale and shift to give the depth loss its maps).
SPARS3R_PROCESSING = ProcessOptions(prior="mast3r", align="two-stage", regions="auto", refine="global")


@dataclass(kw_only=True)
class ProcessConfig(ProcessOptions):
    """Turn a folder of photos into a processed scene (a nerfstudio dataset)."""

    images: Path
    """Folder of input photos (never modified)."""
    output: Path
    """Processed-scene folder to create or update."""

    @classmethod
    def from_options(cls, options: ProcessOptions, images: Path, output: Path) -> "ProcessConfig":
        return cls(images=images, output=output, **{f.name: getattr(options, f.name) for f in fields(ProcessOptions)})


def check_options(config: ProcessConfig) -> ProcessConfig:
    """Refuse option combinations that cannot work, before any photo is read; returns the config
    with `--regions auto` resolved (and a notice of the choice)."""
    if config.test_every < 0:
        raise InputError(f"--test-every must be 0 (no test views) or positive, got {config.test_every}.")
    prior_dir = config.prior_options.dir
    if config.prior == "files" and (prior_dir is None or not Path(prior_dir).is_dir()):
        raise InputError(f"--prior files needs --prior-options.dir pointing at a folder (got {prior_dir}).")
    aligned = config.prior != "none" and config.align != "none"
    if config.refine != "none" and not (aligned or config.prior == "files"):
        raise InputError(
            "--refine needs depth to refine: a --prior with --align global or two-stage, "
            "or --prior files (depth or disparity, see --refine-options.input)."
        )
    if config.prior == "mast3r":
        check_weights(config.prior_options.mast3r)
    if config.prior == "stereo":
        check_stereo(config.prior_options.stereo)
    if aligned and config.align == "two-stage":
        regions, regions_options, notice = choose_regions(config.regions, config.regions_options)
        fell_back = config.regions == "auto" and regions != "sam"
        log.log(logging.WARNING if fell_back else logging.INFO, notice)
        config = replace(config, regions=regions, regions_options=regions_options)
    return config
