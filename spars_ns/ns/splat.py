"""`spars-ns export-splat`: a trained run's Gaussians as a 3DGS PLY, without open3d.

The file is what `ns-export gaussian-splat` writes (same properties, order and filtering:
see `spars_ns/ply.py`), in the same frame: nerfstudio's world frame, after the
dataparser's orientation and scale (`dataparser_transforms.json` of the run maps it back).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from spars_ns.errors import InputError


@dataclass
class ExportSplatConfig:
    """Write the Gaussians of a trained spars3r (or splatfacto) run as a PLY for splat viewers."""

    load_config: Path
    """config.yml of the run (as for ns-eval)."""
    output_dir: Path
    """Folder for the PLY (created if needed)."""
    output_filename: str = "splat.ply"


def export_splat(config: ExportSplatConfig) -> tuple[Path, int]:
    """Writes the PLY; returns its path and the number of Gaussians in it."""
    # Imported here: the nerfstudio import takes seconds that `spars-ns process --help` should not wait for.
    from nerfstudio.models.splatfacto import SplatfactoModel

    from spars_ns.ns.run_config import load_run_config, setup_run
    from spars_ns.ns.runs import lpips_built_lazily
    from spars_ns.ply import write_splat_ply

    run = load_run_config(config.load_config)
    model_class = run.pipeline.model._target
    if not (isinstance(model_class, type) and issubclass(model_class, SplatfactoModel)):
        raise InputError(
            f"{config.load_config}: a {getattr(model_class, '__name__', model_class)} run; only Gaussian-splat "
            "runs (spars3r, splatfacto) export splats"
        )
    with lpips_built_lazily("splatfacto"):  # a stock splatfacto run would download AlexNet when loaded
        pipeline = setup_run(run, test_mode="inference")
    model = pipeline.model
    config.output_dir.mkdir(parents=True, exist_ok=True)
    path = config.output_dir / config.output_filename
    with torch.no_grad():
        arrays = {
            name: value.numpy(force=True)
            for name, value in (
                ("means", model.means),
                ("sh_dc", model.shs_0),
                ("sh_rest", model.shs_rest),
                ("opacity_logits", model.opacities),
                ("log_scales", model.scales),
                ("quats", model.quats),
            )
        }
    if model.config.sh_degree == 0:
        arrays["sh_rest"] = arrays["sh_rest"][:, :0]  # as nerfstudio writes it: no f_rest_* without higher SH
    return path, write_splat_ply(path, **arrays)
