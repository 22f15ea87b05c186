"""Stereo prior (`--prior stereo`) on real photos: how much of each view gets depth, and how well
that depth agrees with SfM's triangulated points (an independent, accurate reference: sparse
features seen in several views), for each setting tried. The prior uses SfM's points (to bound
its search and check its pairs), so half of them, those with odd ids, are held out from it and
are the ones it is scored on.

    python scripts/bench_stereo.py --scene ../shared/data/fox --views 12
    python scripts/bench_stereo.py --scene ../shared/data/strecha/fountain-P11 --views 5 --test-every 1

The training views are those of `bench_nvs.py prepare` (evenly spaced by name); SfM runs once
per scene and view count into --work, and is reused.
"""

from __future__ import annotations

import ast
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import tyro
from bench_nvs import split  # this script's folder is on sys.path
from constants import apply


@dataclass
class Args:
    scene: list[Path]
    views: list[int] = field(default_factory=lambda: [12])
    test_every: int = 8
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
    from spars_ns.stages.prior.stereo import choose_partners, stereo_prior, views_from_model
    from spars_ns.stages.sfm.stage import registered_train

    model, images = registered_train(scene)
    views = views_from_model(model, images, scene.images_dir)
    for view in views.values():  # the prior sees the even ids; the odd ones score it
        seen = view.point_ids % 2 == 0
        view.point_ids, view.points = view.point_ids[seen], view.points[seen]
    partners = choose_partners(views, config.partners)
    start = time.perf_counter()
    coverage, errors = [], []
    for image in images:
        view = views[image.name]
        prior = stereo_prior(view, [views[p] for p in partners[image.name]], config)
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


def main() -> None:
    from spars_ns.process import ProcessConfig, process

    args = tyro.cli(Args)
    print(
        "| scene | views | setting | depth at (share of pixels) | views without | held-out SfM points compared | "
        "median relative error | off by > 5% | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for scene in args.scene:
        for k in args.views:
            train, _test = split(scene, k, args.test_every)
            work = args.work / f"{scene.name}_{k}"
            photos = work / "photos"
            photos.mkdir(parents=True, exist_ok=True)
            for photo in train:
                if not (photos / photo).exists():
                    (photos / photo).symlink_to((scene / "images" / photo).resolve())
            processed = process(ProcessConfig(images=photos, output=work / "scene"))
            for setting in args.settings:
                r = evaluate(processed.root, setting)
                print(
                    f"| {scene.name} | {k} | {setting or 'defaults'} | {r['coverage']:.2f} | "
                    f"{r['views_without']} | {r['points']} | "
                    f"{r['median']:.2%} | {r['wrong']:.1%} | {r['seconds']:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
