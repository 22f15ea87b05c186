"""Short training runs from Python: the demo and the novel-view benchmark use them.

nerfstudio's own trainer (`nerfstudio.scripts.train.main`) trains; evaluation is
`evaluate_test_views`, the same code `ns-eval` runs for spars3r, so stock splatfacto is
scored with test-time pose optimisation as well.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from pathlib import Path

import torch

from spars_ns.ns.dataparser import SparsDataParserConfig
from spars_ns.ns.model import LazyLPIPS
from spars_ns.ns.pipeline import Spars3rPipelineConfig, evaluate_test_views


def short_run(
    method: str,
    scene: Path,
    output: Path,
    steps: int,
    test_pose_steps: int,
    model_overrides: dict | None = None,
) -> dict:
    """Train `method` (spars3r, or stock splatfacto) on a processed scene and score its test views
    with test-time pose optimisation. Returns the metrics, `config` (the run's config.yml),
    `train_seconds`, `peak_gpu_gib` and `gaussians`."""
    # The run's config records the pose steps, so that `ns-eval` on it scores as this does.
    pipeline = {"test_pose_steps": test_pose_steps} if method == "spars3r" else {}
    trained = train_run(method, scene, output, steps, model_overrides, pipeline)
    results = score_run(method, Path(trained["config"]), test_pose_steps)
    return {**results, **trained}


def train_run(
    method: str,
    scene: Path,
    output: Path,
    steps: int,
    model_overrides: dict | None = None,
    pipeline_overrides: dict | None = None,
    optimizers: dict | None = None,
) -> dict:
    """Train `method` with nerfstudio's trainer; `optimizers` replaces entries of the trainer's
    (as `{"camera_opt": {"optimizer": ..., "scheduler": ...}}`). Returns `config` (the run's
    config.yml), `train_seconds` and `peak_gpu_gib`. Without CUDA, images are used at a quarter
    of their size (the CPU rasteriser's cost grows with pixels)."""
    from nerfstudio.scripts.train import main as train

    on_cpu = not torch.cuda.is_available()
    config = _method_config(method)
    config.pipeline.datamanager.data = scene
    config.pipeline.datamanager.dataparser = SparsDataParserConfig(data=scene)
    config.output_dir = output
    config.vis = "tensorboard"
    config.max_num_iterations = steps
    config.steps_per_eval_all_images = 0
    config.steps_per_save = steps
    config.machine.device_type = "cpu" if on_cpu else "cuda"
    model = config.pipeline.model
    model.warmup_length = min(model.warmup_length, steps // 3)
    model.refine_every = min(model.refine_every, max(steps // 6, 1))
    for name, value in (model_overrides or {}).items():
        setattr(model, name, value)
    for name, value in (pipeline_overrides or {}).items():
        setattr(config.pipeline, name, value)
    config.optimizers |= optimizers or {}
    if on_cpu:
        config.pipeline.datamanager.camera_res_scale_factor = 0.25
        model.num_downscales = 0

    if not on_cpu:
        torch.cuda.reset_peak_memory_stats()
    with lpips_built_lazily(method):
        start = time.perf_counter()
        train(config)
        seconds = time.perf_counter() - start
    peak = 0.0 if on_cpu else torch.cuda.max_memory_allocated() / 2**30
    config_path = config.get_base_dir() / "config.yml"
    return {"config": str(config_path), "train_seconds": seconds, "peak_gpu_gib": peak}


def score_run(method: str, config_path: Path, test_pose_steps: int) -> dict:
    """`ns-eval`'s scores of a trained run: every test view before and after `test_pose_steps` of
    test-time pose optimisation (also for stock splatfacto), and the run's `gaussians`. Written
    beside the run's config as `eval_with_test_pose_optimisation_<steps>.json`."""
    from spars_ns.ns.run_config import load_run_config, setup_run

    with lpips_built_lazily(method):
        pipeline = setup_run(load_run_config(config_path), test_mode="test")
    results = evaluate_test_views(pipeline, test_pose_steps, Spars3rPipelineConfig.test_pose_lr, with_corrections=True)
    results["gaussians"] = pipeline.model.num_points
    (config_path.parent / f"eval_with_test_pose_optimisation_{test_pose_steps}.json").write_text(
        json.dumps(results, indent=2)
    )
    return results


def _method_config(method: str):
    if method == "spars3r":
        from spars_ns.configs import spars3r_method

        return copy.deepcopy(spars3r_method.config)
    if method == "splatfacto":
        from nerfstudio.configs.method_configs import method_configs

        return copy.deepcopy(method_configs["splatfacto"])
    raise ValueError(f"unknown method {method!r}: spars3r or splatfacto")


@contextlib.contextmanager
def lpips_built_lazily(method: str):
    """Stock splatfacto builds LPIPS when it is constructed, which downloads AlexNet and so fails
    offline; for it, LPIPS is swapped for spars3r's lazy one (same metric when the weights
    can be had, reported unavailable otherwise). The model's training is untouched."""
    if method != "splatfacto":
        yield
        return
    import torchmetrics.image.lpip as lpip_module

    original = lpip_module.LearnedPerceptualImagePatchSimilarity
    lpip_module.LearnedPerceptualImagePatchSimilarity = lambda **kwargs: LazyLPIPS()
    try:
        yield
    finally:
        lpip_module.LearnedPerceptualImagePatchSimilarity = original
