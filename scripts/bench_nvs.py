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
run), `spars3r-sfm` (our cameras and SfM points, no prior: `prepare` writes `sfm/` too). Stock
splatfacto and MCMC need CUDA. For the CPU, `splatfacto-defaults-cpu` stands in for stock
splatfacto on `defaults/`: splatfacto's losses and densification in the spars3r model (depth
loss off), rendered by the pure-PyTorch rasteriser; never compare it with a GPU row.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
import tyro

from spars_ns.stages.prior.registry import PriorName  # no pycolmap: the GPU node imports this script

Variant = Literal[
    "splatfacto-defaults", "splatfacto", "spars3r", "spars3r-mcmc", "spars3r-no-depth", "spars3r-warped",
    "spars3r-sfm", "splatfacto-defaults-cpu",
]  # fmt: skip
# The prepared dataset each variant trains on (the others: spars3r/).
DATASET_OF = {"splatfacto-defaults": "defaults", "splatfacto-defaults-cpu": "defaults", "spars3r-sfm": "sfm"}
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
        scene = process(
            ProcessConfig(
                images=photos,
                output=work / "spars3r_scene",
                test_views=tuple(test),
                prior=args.prior,
                prior_options=PriorConfig(files=FilesConfig(dir=args.prior_dir)),
                refine=args.refine if args.prior != "none" else "none",
                max_dense_points=args.max_dense_points,
            )
        )
        copy_dataset(scene.root, output / "spars3r")
        no_prior = process(
            ProcessConfig(images=photos, output=work / "sfm_scene", test_views=tuple(test), prior="none")
        )
        copy_dataset(no_prior.root, output / "sfm")
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
    from spars_ns.ns.runs import score_run, train_run

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
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
            trained = train_run(method, data, args.runs / f"{dataset.name}_{variant}", args.steps, overrides, pipeline)
            scores = {str(n): score_run(method, Path(trained["config"]), n) for n in args.test_pose_steps}
            record = {
                **meta,
                "variant": variant,
                "method": method,
                "steps": args.steps,
                "device": device,
                "date": time.strftime("%Y-%m-%d"),
                **trained,
                "tpo": scores,
            }
            path = args.json_dir / f"nvs_{dataset.name}_{variant}_{args.steps}.json"
            path.write_text(json.dumps(record, indent=1))
            print(table_rows([record]), flush=True)


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
