"""Novel-view benchmark: spars3r against stock splatfacto on pycolmap-default cameras, in one run.

    python scripts/bench_nvs.py --scene ../shared/data/fox --views 6 12 --steps 7000

For a scene folder with `images/` and a ground-truth nerfstudio `transforms.json`: K
training views evenly spaced by sorted name, and every 8th of the remaining photos as test
views. Both methods train for the same steps and are scored by the same evaluation:
PSNR/SSIM/LPIPS at the test poses, then after test-time pose optimisation (Gaussians
frozen). Test poses: spars3r registers the test photos against its own SfM model (its
`sparse_with_test`); for splatfacto, whose pycolmap-default model holds the training views
only, the ground-truth test poses are mapped into that model's frame by the similarity that
best fits its training camera centres to the ground truth (an advantage for splatfacto).
Prints a Markdown table: metrics before -> after TPO, training seconds, peak GPU memory,
Gaussians at the end. Stock splatfacto needs CUDA; without it, pass `--methods spars3r`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pycolmap
import torch
import tyro

from bench_poses import defaults_model  # this script's folder is on sys.path
from spars_ns.export import camera_to_opencv, sfm_points, write_points_ply
from spars_ns.geometry import opencv_to_opengl_c2w
from spars_ns.metrics import evenly_spaced, load_true_poses
from spars_ns.ns.runs import short_run
from spars_ns.pipeline import ProcessConfig, process

Method = Literal["spars3r", "splatfacto"]


@dataclass
class Args:
    scene: Path
    """Scene folder with images/ and a ground-truth transforms.json."""
    views: list[int] = field(default_factory=lambda: [6, 12])
    steps: int = 7000
    test_pose_steps: int = 500
    methods: list[Method] = field(default_factory=lambda: ["spars3r", "splatfacto"])
    prior: Literal["none", "files", "mast3r"] = "none"
    """spars3r's dense prior (files needs --prior-dir)."""
    prior_dir: Path | None = None
    refine: Literal["none", "global", "local"] = "none"
    max_dense_points: int = 500_000
    """Cap on spars3r's dense seed points (keep it small on CPU)."""
    depth_loss_weight: float | None = None
    """spars3r's depth loss weight; default: the method's."""
    output: Path = Path("/tmp/bench_nvs")


def split(scene: Path, k: int) -> tuple[list[str], list[str]]:
    names = sorted(load_true_poses(scene / "transforms.json"))
    train = evenly_spaced(names, k)
    return train, [n for n in names if n not in train][::8]


def link_photos(scene: Path, names: list[str], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        link = folder / name
        if not link.exists():
            link.symlink_to((scene / "images" / name).resolve())
    return folder


def defaults_scene(scene: Path, photos: Path, train: list[str], test: list[str], output: Path) -> Path:
    """A nerfstudio dataset from pycolmap's default SfM of the training views (see the module doc for test poses)."""
    output.mkdir(parents=True, exist_ok=True)
    model = defaults_model(photos, train, output)
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
        frames.append({"file_path": f"images/{name}", "transform_matrix": opencv_to_opengl_c2w(image.cam_from_world().matrix()).tolist(),
                       **camera_to_opencv(model.camera(image.camera_id))})
    reference = camera_to_opencv(model.camera(registered[names[0]].camera_id))
    for name in test:
        world_from_cam = np.linalg.inv(np.vstack([truth[name][:3], [0, 0, 0, 1]]))
        model_from_cam = np.vstack([to_model.matrix(), [0, 0, 0, 1]]) @ world_from_cam
        model_from_cam[:3, :3] /= to_model.scale
        frames.append({"file_path": f"images/{name}", "transform_matrix": opencv_to_opengl_c2w(np.linalg.inv(model_from_cam)[:3]).tolist(),
                       **reference})
    (output / "images").mkdir(exist_ok=True)
    for name in names + test:
        link = output / "images" / name
        if not link.exists():
            link.symlink_to((photos / name).resolve())
    xyz, rgb = sfm_points(model)
    write_points_ply(output / "points.ply", xyz, rgb, np.ones(len(xyz), np.float32), np.zeros(len(xyz), np.uint8))
    transforms = {"frames": frames, "ply_file_path": "points.ply", "train_filenames": [f"images/{n}" for n in names],
                  "val_filenames": [f"images/{n}" for n in test], "test_filenames": [f"images/{n}" for n in test]}
    (output / "transforms.json").write_text(json.dumps(transforms, indent=1))
    return output


def main(args: Args) -> None:
    logging.basicConfig(level=logging.WARNING)
    pycolmap.logging.minloglevel = 2
    rows = []
    for k in args.views:
        train, test = split(args.scene, k)
        work = args.output / f"{args.scene.name}_{k}"
        photos = link_photos(args.scene, train + test, work / "photos")
        print(f"{k} views: train {train}\n  test {test}", flush=True)
        for method in args.methods:
            if method == "spars3r":
                scene = process(ProcessConfig(
                    images=photos, output=work / "spars3r_scene", test_views=tuple(test), prior=args.prior,
                    prior_dir=args.prior_dir, refine=args.refine, max_dense_points=args.max_dense_points,
                )).root
            else:
                scene = defaults_scene(args.scene, photos, train, test, work / "defaults_scene")
            overrides = {} if args.depth_loss_weight is None else {"depth_loss_weight": args.depth_loss_weight}
            result = short_run(method, scene, work / "runs", args.steps, args.test_pose_steps, model_overrides=overrides)
            rows.append({"views": k, "method": method, **result})
            print(rows[-1], flush=True)

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"\n{args.scene.name}, {args.steps} steps, {args.test_pose_steps} test-pose steps, {device}\n")
    print("| views | method | PSNR before -> after TPO | SSIM before -> after | LPIPS before -> after | train s | peak GPU GiB | Gaussians |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        lpips = "n/a (no AlexNet weights)" if "lpips_unavailable" in r else f"{r['lpips_before_tpo']:.3f} -> {r['lpips']:.3f}"
        print(
            f"| {r['views']} | {r['method']} | {r['psnr_before_tpo']:.2f} -> {r['psnr']:.2f} | "
            f"{r['ssim_before_tpo']:.3f} -> {r['ssim']:.3f} | {lpips} | {r['train_seconds']:.0f} | "
            f"{r['peak_gpu_gib']:.2f} | {r['gaussians']} |"
        )


if __name__ == "__main__":
    main(tyro.cli(Args))
