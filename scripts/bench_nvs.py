"""Novel-view benchmark: spars3r against stock splatfacto, every method scored the same way.

Three steps, so that a GPU node needs no pycolmap and no ../shared data:

    python scripts/bench_nvs.py prepare --scene ../shared/data/fox --views 6 12 --output .gpu/scenes   # CPU
    python scripts/bench_nvs.py run --prepared .gpu/scenes --steps 7000 --json-dir benchmarks          # GPU
    python scripts/bench_nvs.py table benchmarks/nvs_*.json                                             # anywhere

`prepare` takes a scene folder with `images/` and a ground-truth nerfstudio
`transforms.json`: K training views evenly spaced by sorted name, and every 8th of the
remaining photos as test views (`--test-every 1`: all of them, for the Strecha scenes). Per K
it writes two self-contained nerfstudio datasets (photos copied, no links) and `split.json`:
- `spars3r/`: our processing (SfM cameras and points, by default with the stereo prior's dense
  points and refined depth; the test photos registered into the training model without moving
  it, SPARS3R's protocol);
- `defaults/`: what `ns-process-data` gives a user, pycolmap's default SfM of the training
  views; its model holds no test views, so their ground-truth poses are mapped into its
  frame by the similarity that best fits its training camera centres to the ground truth
  (an advantage for splatfacto).

`run` trains each variant on each prepared dataset and scores it by `ns-eval`'s code: the
metrics at the registered test poses, then after each count of test-time pose
optimisation steps (Gaussians frozen), the same for every variant. One JSON per run goes
to `--json-dir` as soon as it is scored (scene, views, split, variant, steps, metrics per
TPO step count, training seconds, peak GPU memory, Gaussians, device, date), so a run cut
short keeps what it finished. `table` prints the Markdown table of such files.

Variants: `splatfacto-defaults` (stock splatfacto on `defaults/`), `splatfacto` (stock
splatfacto on our cameras and points), `spars3r`, `spars3r-mcmc` (gsplat's MCMC strategy,
`--max-gaussians`), `spars3r-no-depth` (depth loss off; differs from spars3r only where the
scene has depth), `spars3r-warped` (warped-view supervision, its weight decaying to 0 over the
run), `spars3r-sfm` (our cameras and SfM points, no prior: `sfm/`, `prepare --also sfm`),
`spars3r-true-cameras` (spars3r's processing on the true cameras: `truth/`, `--also truth`; our
scene with SfM's cameras replaced by the ground truth's, its points triangulated again from the
same verified matches, then prior, alignment, refinement and export run again: what camera
error costs), `spars3r-camera-opt` (spars3r with its training cameras' poses refined during
training, nerfstudio's SO3xR3 on a schedule scaled to the run: `camera_optimiser_schedule`). Stock
splatfacto and MCMC need CUDA. For the CPU, `splatfacto-defaults-cpu` stands in for stock
splatfacto on `defaults/`: splatfacto's losses and densification in the spars3r model (depth
loss off), rendered by the pure-PyTorch rasteriser; never compare it with a GPU row.
"""

from __future__ import annotations

import spars_ns  # noqa: F401  # isort: skip  # first: it pins OpenBLAS's kernels before numpy and pycolmap load

import json
import logging
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
import tyro

from spars_ns.stages.prior.registry import PriorName  # no pycolmap: the GPU node imports this script

Variant = Literal[
    "splatfacto-defaults", "splatfacto", "spars3r", "spars3r-mcmc", "spars3r-no-depth", "spars3r-warped",
    "spars3r-sfm", "spars3r-true-cameras", "splatfacto-defaults-cpu", "spars3r-camera-opt",
]  # fmt: skip
# The prepared dataset each variant trains on (the others: spars3r/).
DATASET_OF = {
    "splatfacto-defaults": "defaults", "splatfacto-defaults-cpu": "defaults", "spars3r-sfm": "sfm",
    "spars3r-true-cameras": "truth",
}  # fmt: skip
# What each variant changes in the spars3r model (stock splatfacto variants: nothing).
MODEL_OVERRIDES = {
    "spars3r-no-depth": {"depth_loss_weight": 0.0},
    "splatfacto-defaults-cpu": {"depth_loss_weight": 0.0},
}
DATASET_ENTRIES = ("images", "transforms.json", "points.ply", "depth")  # what training reads of a scene


@dataclass
class Prepare:
    """Process the benchmark's datasets (CPU; needs pycolmap and the scene's photos)."""

    scene: Path
    """Scene folder with images/ and a ground-truth transforms.json."""
    views: list[int] = field(default_factory=lambda: [6, 12])
    test_every: int = 8
    """Every Nth of the photos left after picking the training views is a test view (1: all of them)."""
    output: Path = Path(".gpu/scenes")
    """Where the datasets go, one folder per scene and view count."""
    work: Path = Path("/tmp/bench_nvs")
    """Scratch folder for processing (databases, models)."""
    prior: PriorName = "stereo"
    """spars3r's dense prior (files needs --prior-dir). Stereo: the best that needs no downloaded
    weights (BENCHMARKS.md, 'Novel views')."""
    prior_dir: Path | None = None
    refine: Literal["none", "global", "local"] = "global"
    """Refinement of the prior's depth, which gives the depth loss its targets (none without a prior)."""
    max_dense_points: int = 500_000
    also: list[Literal["sfm", "truth"]] = field(default_factory=list)
    """Datasets for the variants spars3r-sfm (`sfm/`: no prior) and spars3r-true-cameras (`truth/`);
    off by default, to keep the GPU session's datasets small."""


@dataclass
class Run:
    """Train and score every variant on prepared datasets (GPU; no pycolmap)."""

    prepared: list[Path]
    """Dataset folders written by `prepare` (each with split.json), or folders holding them."""
    variants: list[Variant] = field(default_factory=lambda: ["splatfacto-defaults", "splatfacto", "spars3r"])
    steps: int = 7000
    test_pose_steps: list[int] = field(default_factory=lambda: [500])
    """Counts of test-time pose optimisation steps to score after (0 is always scored, as 'before')."""
    max_gaussians: int = 500_000
    """Budget of the spars3r-mcmc variant."""
    depth_loss_weight: float | None = None
    """Depth loss weight of the spars3r variants (not spars3r-no-depth); default: the method's."""
    json_dir: Path = Path("benchmarks")
    runs: Path = Path("/tmp/bench_nvs/runs")
    cpu_threads: int = 1
    """Torch threads without CUDA. One, so that a row can be run again: on two the order of float sums
    varies from run to run (the suite's trained run, tests/conftest.py), and two runs of fox 6's spars3r
    on one byte-identical dataset gave 21.88 and 21.75 dB after TPO (BENCHMARKS.md)."""


@dataclass
class Table:
    """Print the Markdown table of benchmark JSON files."""

    files: tyro.conf.Positional[list[Path]]


def split(scene: Path, k: int, test_every: int) -> tuple[list[str], list[str]]:
    from spars_ns.metrics import evenly_spaced, load_true_poses

    names = sorted(load_true_poses(scene / "transforms.json"))
    train = evenly_spaced(names, k)
    return train, [n for n in names if n not in train][::test_every]


def copy_dataset(source: Path, target: Path) -> None:
    """The entries of a scene that training reads, copied (links would not travel to a GPU node)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in DATASET_ENTRIES:
        if (source / name).is_dir():
            shutil.copytree(source / name, target / name, symlinks=False, dirs_exist_ok=True)
        elif (source / name).exists():
            shutil.copyfile(source / name, target / name)


def defaults_dataset(scene: Path, train: list[str], test: list[str], work: Path, output: Path) -> None:
    """A nerfstudio dataset from pycolmap's default SfM of the training views (see the module doc for test poses)."""
    import pycolmap
    from bench_poses import defaults_model  # this script's folder is on sys.path

    from spars_ns.geometry import opencv_to_opengl_c2w
    from spars_ns.metrics import load_true_poses
    from spars_ns.ply import write_points_ply
    from spars_ns.stages.export.stage import camera_to_opencv, sfm_points

    model = defaults_model(scene / "images", train, work)
    if model is None:
        raise SystemExit(f"pycolmap's defaults registered no model from {train}")
    registered = {im.name: im for im in model.images.values() if im.has_pose}
    truth = load_true_poses(scene / "transforms.json")
    names = [n for n in train if n in registered]
    true_centres = np.stack([-truth[n][:3, :3].T @ truth[n][:3, 3] for n in names])
    centres = np.stack([registered[n].projection_center() for n in names])
    to_model = pycolmap.estimate_sim3d(true_centres, centres)

    frames = []
    for name in names:
        image = registered[name]
        frames.append(
            {
                "file_path": f"images/{name}",
                "transform_matrix": opencv_to_opengl_c2w(image.cam_from_world().matrix()).tolist(),
                **camera_to_opencv(model.camera(image.camera_id)),
            }
        )
    reference = camera_to_opencv(model.camera(registered[names[0]].camera_id))
    for name in test:
        world_from_cam = np.linalg.inv(np.vstack([truth[name][:3], [0, 0, 0, 1]]))
        model_from_cam = np.vstack([to_model.matrix(), [0, 0, 0, 1]]) @ world_from_cam
        model_from_cam[:3, :3] /= to_model.scale
        frames.append(
            {
                "file_path": f"images/{name}",
                "transform_matrix": opencv_to_opengl_c2w(np.linalg.inv(model_from_cam)[:3]).tolist(),
                **reference,
            }
        )
    (output / "images").mkdir(parents=True, exist_ok=True)
    for name in names + test:
        shutil.copyfile(scene / "images" / name, output / "images" / name)
    xyz, rgb = sfm_points(model)
    write_points_ply(output / "points.ply", xyz, rgb, np.ones(len(xyz), np.float32), np.zeros(len(xyz), np.uint8))
    transforms = {
        "frames": frames,
        "ply_file_path": "points.ply",
        "train_filenames": [f"images/{n}" for n in names],
        "val_filenames": [f"images/{n}" for n in test],
        "test_filenames": [f"images/{n}" for n in test],
    }
    (output / "transforms.json").write_text(json.dumps(transforms, indent=1))


def true_cameras_dataset(source: Path, processed: Path, test: list[str], work: Path, config, output: Path) -> None:
    """`truth/`: the processed scene with every registered view at its true pose and intrinsics
    (OPENCV), its points triangulated again on them from the same verified matches (the test views'
    observations removed, so that they add no points), then the stages after SfM run again."""
    import pycolmap

    from spars_ns.metrics import load_true_poses
    from spars_ns.process import process
    from spars_ns.scene import SceneFolder
    from spars_ns.stages.sfm.stage import database_path
    from spars_ns.stages.sfm.triangulation import triangulate_at

    target = work / "truth_scene"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(processed, target, symlinks=True)
    scene = SceneFolder(target)
    meta = json.loads((source / "transforms.json").read_text())
    frames = {Path(f["file_path"]).name: f for f in meta["frames"]}
    truth = load_true_poses(source / "transforms.json")
    model = pycolmap.Reconstruction(scene.sparse_with_test_dir)
    for image in model.images.values():

        def value(key: str, frame=frames[image.name]) -> float:
            return float(frame.get(key, meta.get(key, 0.0)))

        camera = model.camera(image.camera_id)
        camera.model = pycolmap.CameraModelId.OPENCV
        camera.params = [value(k) for k in ("fl_x", "fl_y", "cx", "cy", "k1", "k2", "p1", "p2")]
        pose = pycolmap.Rigid3d(pycolmap.Rotation3d(truth[image.name][:3, :3]), truth[image.name][:3, 3])
        model.frame(image.frame_id).set_cam_from_world(image.camera_id, pose)
    model = triangulate_at(model, database_path(scene), scene.images_dir, work)
    for image in [im for im in model.images.values() if im.name in test]:
        for index, point in enumerate(image.points2D):
            if point.has_point3D():
                model.delete_observation(image.image_id, index)
    model.write(scene.sparse_with_test_dir)
    for image in [im for im in model.images.values() if im.name in test]:
        model.deregister_frame(image.frame_id)
    model.write(scene.sparse_dir)
    # The stages after SfM are cleared (outputs and entries, as a stage switched off is), so that
    # they run again on these cameras; SfM's own entry stays: its outputs are the ones just written.
    for stage in [name for name in scene.read_manifest()["stages"] if name not in ("ingest", "sfm")]:
        scene.clear(stage, [])
    copy_dataset(process(replace(config, output=target)).root, output)


def prepare(args: Prepare) -> None:
    import pycolmap

    from spars_ns.options import PriorConfig
    from spars_ns.process import ProcessConfig, process
    from spars_ns.stages.prior.files import FilesConfig

    pycolmap.logging.minloglevel = 2
    for k in args.views:
        train, test = split(args.scene, k, args.test_every)
        name = f"{args.scene.name}_{k}"
        work, output = args.work / name, args.output / name
        photos = work / "photos"
        photos.mkdir(parents=True, exist_ok=True)
        for photo in train + test:
            if not (photos / photo).exists():
                (photos / photo).symlink_to((args.scene / "images" / photo).resolve())
        print(f"{name}: train {train}\n  test {test}", flush=True)
        config = ProcessConfig(
            images=photos,
            output=work / "spars3r_scene",
            test_views=tuple(test),
            prior=args.prior,
            prior_options=PriorConfig(files=FilesConfig(dir=args.prior_dir)),
            refine=args.refine if args.prior != "none" else "none",
            max_dense_points=args.max_dense_points,
        )
        scene = process(config)
        copy_dataset(scene.root, output / "spars3r")
        if "sfm" in args.also:
            no_prior = process(replace(config, output=work / "sfm_scene", prior="none", refine="none"))
            copy_dataset(no_prior.root, output / "sfm")
        if "truth" in args.also:
            true_cameras_dataset(args.scene, scene.root, test, work, config, output / "truth")
        (work / "defaults").mkdir(exist_ok=True)
        defaults_dataset(args.scene, train, test, work / "defaults", output / "defaults")
        (output / "split.json").write_text(
            json.dumps({"scene": args.scene.name, "views": k, "train": train, "test": test}, indent=1)
        )


def prepared_datasets(paths: list[Path]) -> list[Path]:
    found = []
    for path in paths:
        found += [path] if (path / "split.json").exists() else sorted(p.parent for p in path.glob("*/split.json"))
    if not found:
        raise SystemExit(f"no prepared datasets (folders with split.json) in {', '.join(map(str, paths))}")
    return found


def run(args: Run) -> None:
    from nerfstudio.cameras.camera_optimizers import CameraOptimizerConfig

    from spars_ns.ns.runs import score_run, train_run

    on_cpu = not torch.cuda.is_available()
    device = "CPU" if on_cpu else torch.cuda.get_device_name()
    if on_cpu:
        torch.set_num_threads(args.cpu_threads)
    args.json_dir.mkdir(parents=True, exist_ok=True)
    for dataset in prepared_datasets(args.prepared):
        meta = json.loads((dataset / "split.json").read_text())
        for variant in args.variants:
            method = "splatfacto" if variant in ("splatfacto", "splatfacto-defaults") else "spars3r"
            data = dataset / DATASET_OF.get(variant, "spars3r")
            overrides = (
                {}
                if method == "splatfacto" or args.depth_loss_weight is None
                else {"depth_loss_weight": args.depth_loss_weight}
            )
            overrides |= {
                **MODEL_OVERRIDES,
                "spars3r-mcmc": {"strategy": "mcmc", "max_gaussians": args.max_gaussians},
            }.get(variant, {})
            print(f"== {meta['scene']} {meta['views']} views: {variant}, {args.steps} steps", flush=True)
            pipeline = {"warped_views": True, "warped_views_until": args.steps} if variant == "spars3r-warped" else {}
            optimizers = {}
            if variant == "spars3r-camera-opt":
                overrides["camera_optimizer"] = CameraOptimizerConfig(mode="SO3xR3")
                optimizers["camera_opt"] = camera_optimiser_schedule(args.steps)
            trained = train_run(
                method, data, args.runs / f"{dataset.name}_{variant}", args.steps, overrides, pipeline, optimizers
            )
            scores = {str(n): score_run(method, Path(trained["config"]), n) for n in args.test_pose_steps}
            record = {
                **meta,
                "variant": variant,
                "method": method,
                "steps": args.steps,
                "device": device,
                "cpu_threads": torch.get_num_threads() if on_cpu else None,
                "date": time.strftime("%Y-%m-%d"),
                **trained,
                "tpo": scores,
            }
            path = args.json_dir / f"nvs_{dataset.name}_{variant}_{args.steps}.json"
            path.write_text(json.dumps(record, indent=1))
            print(table_rows([record]), flush=True)


def camera_optimiser_schedule(steps: int) -> dict:
    """The training cameras' corrections (nerfstudio's SO3xR3) learnt at 5e-4, decaying a hundredfold
    over the run after a warm-up of a fifth of it: splatfacto's own schedule (1e-4 after 1000 steps,
    for 30,000) would barely start in a 1000-step CPU run."""
    from nerfstudio.engine.optimizers import AdamOptimizerConfig
    from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig

    return {
        "optimizer": AdamOptimizerConfig(lr=5e-4, eps=1e-15),
        "scheduler": ExponentialDecaySchedulerConfig(
            lr_final=5e-6, max_steps=steps, warmup_steps=steps // 5, lr_pre_warmup=0
        ),
    }


def table_rows(records: list[dict]) -> str:
    lines = []
    for r in records:
        for steps, m in r["tpo"].items():
            lpips = "n/a" if "lpips_unavailable" in m else f"{m['lpips_before_tpo']:.3f} -> {m['lpips']:.3f}"
            lines.append(
                f"| {r['scene']} | {r['views']} | {r['variant']} | {r['steps']} | {steps} | "
                f"{m['psnr_before_tpo']:.2f} -> {m['psnr']:.2f} | "
                f"{m['ssim_before_tpo']:.3f} -> {m['ssim']:.3f} | {lpips} | {r['train_seconds']:.0f} | "
                f"{r['peak_gpu_gib']:.2f} | "
                f"{m['gaussians']} | {r['device']}, {r['date']} |"
            )
    return "\n".join(lines)


def table(args: Table) -> None:
    records = [json.loads(path.read_text()) for path in args.files]
    print(
        "| scene | views | variant | steps | TPO steps | PSNR before -> after TPO | SSIM before -> after | "
        "LPIPS before -> after | train s | peak GPU GiB | Gaussians | device, date |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(table_rows(sorted(records, key=lambda r: (r["scene"], r["views"], r["variant"]))))


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    command = tyro.cli(
        Annotated[Prepare, tyro.conf.subcommand("prepare")]
        | Annotated[Run, tyro.conf.subcommand("run")]
        | Annotated[Table, tyro.conf.subcommand("table")]
    )
    {Prepare: prepare, Run: run, Table: table}[type(command)](command)


if __name__ == "__main__":
    main()
