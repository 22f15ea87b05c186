"""`spars-ns demo`: the whole path on a synthetic scene, on any machine.

Renders a small synthetic scene, processes it (SfM, a synthetic dense prior that errs the way
learned priors do, two-stage alignment, global refinement), trains `spars3r` briefly with
nerfstudio's trainer and scores it with `ns-eval`'s code, test-time pose optimisation
included. Without CUDA it trains at a quarter of the resolution, with the pure-PyTorch
rasteriser, for fewer steps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console

from spars_ns.options import PriorConfig, ProcessConfig
from spars_ns.stages.prior.files import FilesConfig
from spars_ns.synthetic import make_scene, write_prior_files


@dataclass
class DemoConfig:
    """Build a synthetic scene, process it, train spars3r briefly and evaluate it."""

    output: Path = Path("spars-demo")
    """Folder for the photos, the processed scene, the run and eval.json."""
    steps: int | None = None
    """Training steps; default 2000 with CUDA, 300 without."""
    test_pose_steps: int | None = None
    """Test-time pose optimisation steps per test view; default 500 with CUDA, 100 without."""
    views: int = 8
    """Synthetic views; every 4th is held out for testing."""
    seed: int = 0


def run_demo(config: DemoConfig) -> dict:
    """Runs the demo; prints the metrics and where everything is on standard output."""
    from spars_ns.ns.runs import short_run
    from spars_ns.process import process

    on_cpu = not torch.cuda.is_available()
    steps = config.steps or (300 if on_cpu else 2000)
    test_pose_steps = config.test_pose_steps if config.test_pose_steps is not None else (100 if on_cpu else 500)
    output = config.output.resolve()
    console = Console()

    synthetic = make_scene(num_views=config.views, seed=config.seed)
    photos = output / "photos"
    synthetic.write_images(photos)
    prior_dir = write_prior_files(synthetic, output / "prior", config.seed)
    scene = process(
        ProcessConfig(
            images=photos,
            output=output / "scene",
            test_every=4,
            prior="files",
            prior_options=PriorConfig(files=FilesConfig(dir=prior_dir)),
            refine="global",
            max_dense_points=4000 if on_cpu else 200_000,  # the CPU rasteriser's cost grows with Gaussians
        )
    )

    console.print(f"Training spars3r for {steps} steps on {'CPU' if on_cpu else 'CUDA'}")
    results = short_run("spars3r", scene.root, output / "runs", steps, test_pose_steps)
    (output / "eval.json").write_text(json.dumps(results, indent=2))

    console.print(f"\n[bold]spars3r demo[/bold]: {synthetic.num_views} synthetic views, every 4th held out for testing")
    for key in ("psnr", "ssim", "lpips"):
        if key in results:
            console.print(
                f"  {key:6s} {results[key + '_before_tpo']:.3f} at the registered poses, {results[key]:.3f} "
                f"after {test_pose_steps} pose steps"
            )
    if "lpips_unavailable" in results:
        console.print(f"  {results['lpips_unavailable']}")
    console.print(
        f"Photos {photos}\nScene  {scene.root}\nRun    {results['config']}\nScores {output / 'eval.json'}\n"
        f"Trained in {results['train_seconds']:.0f} s. View it: ns-viewer --load-config {results['config']}"
    )
    return results
