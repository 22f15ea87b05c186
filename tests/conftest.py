from __future__ import annotations

import spars_ns  # noqa: F401  # isort: skip  # first: it pins OpenBLAS's kernels before numpy and pycolmap load

import contextlib
import io
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pycolmap
import pytest

from spars_ns.options import PriorConfig
from spars_ns.process import ProcessConfig, process
from spars_ns.stages.prior.files import FilesConfig
from spars_ns.synthetic import SyntheticScene, make_scene, write_prior_files

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
ENV = {**os.environ, "COLUMNS": "200"}
BIN = Path(sys.executable).parent  # the environment's own commands, also when it is not activated
TEST_VIEWS = ["view_000.png", "view_004.png"]


@pytest.fixture(scope="session")
def scene() -> SyntheticScene:
    return make_scene(num_views=8, seed=0)


@pytest.fixture(scope="session")
def photos(scene, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    scene.write_images(folder)
    return folder


@pytest.fixture(scope="session")
def processed(photos, tmp_path_factory):
    """The synthetic photos processed once with every 4th view held out (views 0 and 4)."""
    output = tmp_path_factory.mktemp("scene")
    return process(ProcessConfig(images=photos, output=output, test_every=4))


@pytest.fixture(scope="session")
def prior_files(scene, tmp_path_factory) -> Path:
    """Pointmaps that err the way learned priors do (`distorted_pointmap`), one per view."""
    return write_prior_files(scene, tmp_path_factory.mktemp("prior_files"), seed=0)


def process_copy(base, output: Path, photos: Path, prior_dir: Path, **options):
    """`photos` processed with the files prior of `prior_dir` (every 4th view held out) into a copy of the
    processed scene `base`: the stages current there are not run again."""
    shutil.copytree(base.root, output)
    prior = {"prior": "files", "prior_options": PriorConfig(files=FilesConfig(dir=prior_dir))}
    return process(ProcessConfig(images=photos, output=output, test_every=4, **prior, **options))


@pytest.fixture(scope="session")
def dense_scene(processed, photos, prior_files, tmp_path_factory):
    """The synthetic photos with the prior files aligned. Made from a copy of `processed`, so that
    SfM is not run again (its stage is current there)."""
    return process_copy(processed, tmp_path_factory.mktemp("dense_scene") / "scene", photos, prior_files)


# Small enough for CPU: images at 80x60 (a quarter of the photos), 300 steps, 20 pose steps per test view
# (SfM registers the synthetic test views almost exactly; the perturbed-pose test asks for more).
TRAIN_ARGS = [
    "--vis",
    "tensorboard",
    "--max-num-iterations",
    "300",
    "--steps-per-eval-all-images",
    "0",
    "--steps-per-eval-image",
    "100",  # as short runs (`spars-ns demo`) log it: its render changes the training after it
    "--steps-per-save",
    "1000",
    "--pipeline.test-pose-steps",
    "20",
    "--pipeline.datamanager.camera-res-scale-factor",
    "0.25",
    "--pipeline.model.num-downscales",
    "0",
    "--pipeline.model.warmup-length",
    "100",
    "--pipeline.model.refine-every",
    "50",
]


@pytest.fixture(scope="session")
def depth_scene(dense_scene, photos, prior_files, tmp_path_factory):
    """The synthetic photos with a prior aligned and refined: the scene has depth/ for the depth loss.
    Few dense seed points: the CPU rasteriser's cost grows with the number of Gaussians. Made from a
    copy of the aligned scene, so that only refinement and export run."""
    output = tmp_path_factory.mktemp("depth_scene") / "scene"
    return process_copy(dense_scene, output, photos, prior_files, refine="global", max_dense_points=4000)


def run_console_script(entrypoint, argv: list[str], env: dict[str, str] | None = None, exit_code: int = 0) -> None:
    """A console script's entry point (`nerfstudio.scripts.train.entrypoint` for `ns-train`) run in
    this process as `argv` would run it, asserting its exit status: a fresh process spends 10-12 s
    importing torch and nerfstudio."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", argv)
        for key, value in {"COLUMNS": "200", **(env or {})}.items():
            patch.setenv(key, value)
        try:
            entrypoint()
            code = 0
        except SystemExit as exit_status:
            code = exit_status.code or 0
        assert code == exit_code, f"{argv[0]} exited with {code}"


@pytest.fixture(scope="session")
def demo(depth_scene, tmp_path_factory) -> tuple[Path, str]:
    """`spars-ns demo` at the suite's CPU scale (TRAIN_ARGS: 300 steps, 20 pose steps per test view):
    its output folder and what it printed. Its scene is the fixtures' (8 views, seed 0, the same
    processing): from a copy of it every stage is current, and the demo trains and scores."""
    import torch

    from spars_ns.cli import entrypoint

    output = tmp_path_factory.mktemp("demo")
    shutil.copytree(depth_scene.root, output / "scene")
    steps = TRAIN_ARGS[TRAIN_ARGS.index("--max-num-iterations") + 1]
    pose_steps = TRAIN_ARGS[TRAIN_ARGS.index("--pipeline.test-pose-steps") + 1]
    # One thread: with two, the order of float reductions varies from run to run, and 300 steps
    # amplify it (the trained-run mesh's F-score ranged 0.41-0.64 over three runs); with one, the run is bit-identical.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            argv = ["spars-ns", "demo", "--output", str(output), "--steps", steps, "--test-pose-steps", pose_steps]
            run_console_script(entrypoint, argv)
    finally:
        torch.set_num_threads(threads)
    return output, printed.getvalue()


@pytest.fixture(scope="session")
def trained(demo) -> Path:
    """config.yml of a real spars3r run on CPU: the demo's, trained as `ns-train spars3r ... TRAIN_ARGS` trains."""
    return Path(json.loads((demo[0] / "eval.json").read_text())["config"])


def true_poses(scene: SyntheticScene) -> dict[str, np.ndarray]:
    return {scene.image_name(i): scene.cam_from_world[i] for i in range(scene.num_views)}


def sfm_from_true(scene: SyntheticScene, model: pycolmap.Reconstruction) -> np.ndarray:
    """Similarity (3x4) taking true world points into the SfM frame, fitted on camera centres."""
    names = [scene.image_name(i) for i in range(scene.num_views)]
    true = np.stack([-c[:, :3].T @ c[:, 3] for c in scene.cam_from_world])
    est = {im.name: im.projection_center() for im in model.images.values() if im.has_pose}
    keep = [i for i, n in enumerate(names) if n in est]
    return pycolmap.estimate_sim3d(true[keep], np.stack([est[names[i]] for i in keep])).matrix()
