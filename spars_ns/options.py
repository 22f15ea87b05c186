"""Processing options: importable without pycolmap.

`ns-train`, `ns-eval` and `ns-viewer` parse the spars-data dataparser's processing options
even when the scene is already processed; they need no SfM library then, so a GPU node can
train without pycolmap (scripts/offline_wheels.sh). Each stage keeps its options beside its
code (`stages/<stage>/`), in modules that import no pycolmap; this module gathers them.

One naming scheme for every stage: `--<stage> MODE` chooses what the stage does and
`--<stage>-options.*` holds its settings (`--prior files --prior-options.files.dir DIR`,
`--regions sam --regions-options.sam-model vit_b`, `--refine local --refine-options.grid 5`);
the SfM stage has no mode, only `--sfm-options.*`. Only what a user would change is an option:
the measured thresholds are constants beside the code that uses them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

from spars_ns.errors import InputError
from spars_ns.stages.align.regions import RegionsConfig, choose_regions
from spars_ns.stages.prior.registry import PriorConfig, PriorName, make_backend
from spars_ns.stages.refine.config import RefineConfig
from spars_ns.stages.sfm.config import SfMConfig

log = logging.getLogger(__name__)


@dataclass
class ProcessOptions:
    """How photos are processed (shared by `spars-ns process` and the spars-data dataparser)."""

    test_every: int = 0
    """Every Nth image by sorted name (the 1st, N+1th, ...) is held out as a test view; 0: none."""
    test_views: tuple[str, ...] = ()
    """File names of the photos to hold out as test views instead (overrides --test-every)."""
    sfm_options: SfMConfig = field(default_factory=SfMConfig)
    prior: PriorName = "none"
    """Dense prior: none (SfM points only), files (depth or pointmaps from --prior-options.files.dir),
    mast3r, or stereo (OpenCV's semi-global matching on SfM's cameras; no learned weights)."""
    prior_options: PriorConfig = field(default_factory=PriorConfig)
    align: Literal["none", "global", "two-stage"] = "two-stage"
    """How the prior is mapped onto the SfM frame: none (SfM seeds only), one Sim3 per
    image, or that plus a Sim3 per region where the global fit leaves outliers."""
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
    def from_options(cls, options: ProcessOptions, images: Path, output: Path) -> ProcessConfig:
        return cls(images=images, output=output, **{f.name: getattr(options, f.name) for f in fields(ProcessOptions)})


def check_options(config: ProcessConfig) -> ProcessConfig:
    """Refuse option combinations that cannot work, before any photo is read; returns the config
    with `--regions auto` resolved (and a notice of the choice)."""
    if config.test_every < 0:
        raise InputError(f"--test-every must be 0 (no test views) or positive, got {config.test_every}.")
    backend = make_backend(config.prior, config.prior_options)
    if backend is not None:
        backend.check()
    aligned = config.prior != "none" and config.align != "none"
    if config.refine != "none" and not (aligned or config.prior == "files"):
        raise InputError(
            "--refine needs depth to refine: a --prior with --align global or two-stage, "
            "or --prior files (depth or disparity, see --refine-options.input)."
        )
    if aligned and config.align == "two-stage":
        regions, regions_options, notice = choose_regions(config.regions, config.regions_options)
        fell_back = config.regions == "auto" and regions != "sam"
        log.log(logging.WARNING if fell_back else logging.INFO, notice)
        config = replace(config, regions=regions, regions_options=regions_options)
    return config
