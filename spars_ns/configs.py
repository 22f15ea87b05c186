"""nerfstudio entry points of the methods: `spars3r` (the paper's recipe, MASt3R's weights) and
`spars3r-sfm` (no network weights). They differ only in how photos are processed.

Only the specification lives here, so that nerfstudio's plugin discovery imports little.
The `spars-data` dataparser's entry point is in `spars_ns.ns.dataparser`: nerfstudio
discovers dataparsers while `nerfstudio.configs.dataparser_configs` is half imported, so
that module must not import the datamanager or trainer (which import it back).
The trainer settings follow nerfstudio 1.1.5's splatfacto (they cannot be imported from
`nerfstudio.configs.method_configs`: that module discovers plugins while it is imported).
"""

from __future__ import annotations

import torch
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanager, FullImageDatamanagerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.plugins.types import MethodSpecification

from spars_ns.ns.dataparser import SparsDataParserConfig
from spars_ns.ns.dataset import SparsDataset
from spars_ns.ns.model import Spars3rModelConfig
from spars_ns.ns.pipeline import Spars3rPipelineConfig
from spars_ns.options import SPARS3R_PROCESSING, ProcessOptions

MAX_STEPS = 30000


def _adam(lr: float, final: float | None = None, warmup: int = 0) -> dict:
    scheduler = None
    if final is not None:
        scheduler = ExponentialDecaySchedulerConfig(
            lr_final=final, max_steps=MAX_STEPS, warmup_steps=warmup, lr_pre_warmup=0
        )
    return {"optimizer": AdamOptimizerConfig(lr=lr, eps=1e-15), "scheduler": scheduler}


def _trainer(method_name: str, processing: ProcessOptions) -> TrainerConfig:
    return TrainerConfig(
        method_name=method_name,
        steps_per_eval_image=100,
        steps_per_eval_batch=0,
        steps_per_save=2000,
        steps_per_eval_all_images=10000,  # each runs test-time pose optimisation on every test view
        max_num_iterations=MAX_STEPS,
        mixed_precision=False,
        pipeline=Spars3rPipelineConfig(
            datamanager=FullImageDatamanagerConfig(
                _target=FullImageDatamanager[SparsDataset],
                dataparser=SparsDataParserConfig(processing=processing),
                cache_images_type="uint8",
            ),
            model=Spars3rModelConfig(),
        ),
        optimizers={
            "means": _adam(1.6e-4, final=1.6e-6),
            "features_dc": _adam(0.0025),
            "features_rest": _adam(0.0025 / 20),
            "opacities": _adam(0.05),
            "scales": _adam(0.005),
            "quats": _adam(0.001),
            "camera_opt": _adam(1e-4, final=5e-7, warmup=1000),
            "bilateral_grid": _adam(2e-3, final=1e-4, warmup=1000),
        },
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
        machine=MachineConfig(device_type="cuda" if torch.cuda.is_available() else "cpu"),
    )


spars3r_method = MethodSpecification(
    config=_trainer("spars3r", SPARS3R_PROCESSING),
    description="SPARS3R: SfM cameras + MASt3R points fused in two stages, depth loss, test-time poses. "
    "Needs MASt3R's weights (downloaded, or a local checkpoint); SAM's optional.",
)

spars3r_sfm_method = MethodSpecification(
    config=_trainer("spars3r-sfm", ProcessOptions()),
    description="SPARS3R without network weights: SfM cameras and points, optional --prior files depth, "
    "test-time poses. For offline or commercial use.",
)
