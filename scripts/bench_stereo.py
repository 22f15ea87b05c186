"""Stereo prior (`--prior stereo`) on real photos: how much of each view gets depth, and how well
that depth agrees with SfM's triangulated points (an independent, accurate reference: sparse
features seen in several views), for each setting tried. The prior uses SfM's points (to bound
its search and check its pairs), so half of them, those with odd ids, are held out from it and
are the ones it is scored on.

    python scripts/bench_stereo.py --scene ../shared/data/fox --views 12
    python scripts/bench_stereo.py --scene ../shared/data/strecha/fountain-P11 --views 5 --test-every 1
    python scripts/bench_stereo.py --scene ../shared/data/fox --views 6 9 12 --subsets 5

The training views are those of `bench_nvs.py prepare` (evenly spaced by name), or with --subsets
random spread subsets, the captures `bench_cameras.py` measures; SfM runs once per capture into
--work, and is reused. A row pools a scene and view count over its captures and names the worst.
"""

from __future__ import annotations

import spars_ns  # noqa: F401  # isort: skip  # first: it pins OpenBLAS's kernels before numpy and pycolmap load

import ast
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import tyro
from bench_cameras import spread_subsets  # this script's folder is on sys.path
from bench_nvs import split
from constants import apply

from spars_ns.metrics import load_true_poses


@dataclass
class Args:
    scene: list[Path]
    views: list[int] = field(default_factory=lambda: [12])
    test_every: int = 8
    subsets: int = 0
    """Random spread subsets per scene and K, as `bench_cameras.py` draws them (0: the evenly spaced views only)."""
    seed: int = 0
    work: Path = Path("/tmp/bench_stereo")
    settings: list[str] = field(default_factory=lambda: ["", "MIN_AGREEING=2", "partners=2"])
    """Settings to compare: StereoConfig options (lower case) and constants of
    spars_ns.stages.prior.stereo (upper case), e.g. 'partners=3,MIN_AGREEING=2' ('': the defaults)."""


def parse(setting: str) -> tuple[dict, list[str]]:
    """(StereoConfig overrides, constants for scripts/constants.py) of a setting."""
    options, constants = {}, []
    for item in filter(None, setting.split(",")):
        key, _, value = (part.strip() for part in item.partition("="))
        if key.isupper():
            constants.append(f"spars_ns.stages.prior.stereo.{key}={value}")
        else:
            options[key] = ast.literal_eval(value)
    return options, constants


def evaluate(scene_root: Path, setting: str) -> dict:
    from spars_ns.scene import SceneFolder
    from spars_ns.stages.prior import stereo
    from spars_ns.stages.prior.stereo import StereoConfig

    scene = SceneFolder(scene_root)
    options, constants = parse(setting)
    config = replace(StereoConfig(), **options)
    measured = {name: value for name, value in vars(stereo).items() if name.isupper()}
    apply(constants)
    try:
        return score(scene, config)
    finally:
        vars(stereo).update(measured)  # each setting starts from the measured values


def score(scene, config) -> dict:
    from spars_ns.geometry import transform
    from spars_ns.stages.prior.stereo import partner_candidates, stereo_prior, views_from_model
    from spars_ns.stages.sfm.stage import registered_train

    model, images = registered_train(scene)
    views = views_from_model(model, images, scene.images_dir)
    for view in views.values():  # the prior sees the even ids; the odd ones score it
        seen = view.point_ids % 2 == 0
        view.point_ids, view.points = view.point_ids[seen], view.points[seen]
    candidates = partner_candidates(views, config.partners)
    start = time.perf_counter()
    coverage, errors = [], []
    for image in images:
        view = views[image.name]
        prior = stereo_prior(view, [views[p] for p in candidates[image.name]], config)
        held_out = [p for p in image.points2D if p.has_point3D() and p.point3D_id % 2 == 1]
        xy = np.array([p.xy for p in held_out]).reshape(-1, 2)
        world = np.array([model.points3D[p.point3D_id].xyz for p in held_out]).reshape(-1, 3)
        sfm_depth = transform(world, view.cam_from_world)[:, 2]
        points, conf = prior.sample(xy)
        kept = conf > 0
        coverage.append((prior.conf > 0).mean())
        errors.append(np.abs(points[kept, 2] - sfm_depth[kept]) / sfm_depth[kept])
    error = np.concatenate(errors)
    return {
        "coverage": float(np.mean(coverage)),
        "views_without": int(sum(c < 0.01 for c in coverage)),
        "points": len(error),
        "median": float(np.median(error)) if len(error) else float("nan"),
        "wrong": float((error > 0.05).mean()) if len(error) else float("nan"),
        "seconds": time.perf_counter() - start,
    }


def captures(args: Args) -> list[tuple[Path, int, list[str]]]:
    """(scene, K, training views): the evenly spaced views of `bench_nvs.py prepare`, or with --subsets the
    random spread subsets that `bench_cameras.py` draws with the same --seed, --subsets, --views and --scene."""
    if not args.subsets:
        return [(scene, k, split(scene, k, args.test_every)[0]) for scene in args.scene for k in args.views]
    rng = np.random.default_rng(args.seed)
    return [
        (scene, k, names)
        for k in args.views
        for scene in args.scene
        for names in spread_subsets(sorted(load_true_poses(scene / "transforms.json")), k, args.subsets, rng)
    ]


def pooled(rows: list[dict]) -> dict:
    """One scene, K and setting over its captures: shares of pixels averaged, points pooled, the worst capture."""
    points = sum(r["points"] for r in rows)
    scored = [r for r in rows if r["points"]]
    return {
        "captures": len(rows),
        "coverage": float(np.mean([r["coverage"] for r in rows])),
        "views_without": sum(r["views_without"] for r in rows),
        "points": points,
        "median": float(np.median([r["median"] for r in scored])) if scored else float("nan"),
        "wrong": sum(r["wrong"] * r["points"] for r in scored) / points if points else float("nan"),
        "worst": max((r["wrong"] for r in scored), default=float("nan")),
        "seconds": sum(r["seconds"] for r in rows),
    }


def main() -> None:
    from spars_ns.process import ProcessConfig, process

    args = tyro.cli(Args)
    todo = captures(args)
    results: dict[tuple[str, int, str], list[dict]] = {}
    for i, (scene, k, train) in enumerate(todo):
        name = f"{scene.name}_{k}" + ("_" + "_".join(Path(n).stem for n in train) if args.subsets else "")
        photos = args.work / name / "photos"
        photos.mkdir(parents=True, exist_ok=True)
        for photo in train:
            if not (photos / photo).exists():
                (photos / photo).symlink_to((scene / "images" / photo).resolve())
        processed = process(ProcessConfig(images=photos, output=args.work / name / "scene"))
        for setting in args.settings:
            r = evaluate(processed.root, setting)
            results.setdefault((scene.name, k, setting), []).append(r)
            print(f"[{i + 1}/{len(todo)}] {name} {setting or 'defaults'}: {r}", file=sys.stderr, flush=True)
    print(
        "| scene | views | setting | captures | depth at (share of pixels) | views without | "
        "held-out SfM points compared | median relative error | off by > 5% | worst capture, off by > 5% | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (scene_name, k, setting), rows in results.items():
        r = pooled(rows)
        print(
            f"| {scene_name} | {k} | {setting or 'defaults'} | {r['captures']} | {r['coverage']:.2f} | "
            f"{r['views_without']} | {r['points']} | {r['median']:.2%} | {r['wrong']:.1%} | {r['worst']:.1%} | "
            f"{r['seconds']:.1f} |"
        )


if __name__ == "__main__":
    main()
