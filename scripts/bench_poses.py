"""Pose benchmark: our SfM stage against pycolmap's defaults on K evenly spaced views.

    python scripts/bench_poses.py --scene ../shared/data/strecha/fountain-P11 --views 3

For a scene folder with `images/` and a ground-truth nerfstudio `transforms.json`, picks K
images evenly spaced by sorted name, runs our SfM stage with each `--features` type and
pycolmap's defaults in one process, and prints a Markdown table: registered / total,
median pair error (degrees), mAA@10, ATE (fraction of scene extent), seconds and what the
model check says ("ok", the pairs our model leaves unexplained, or the photos in doubt),
then our time per step. A feature type whose weights cannot be had gets a row saying so.

    python scripts/bench_poses.py --scene ../shared/data/fox --views 6 --features sift aliked+lightglue disk+lightglue
"""

from __future__ import annotations

import spars_ns  # noqa: F401  # isort: skip  # first: it pins OpenBLAS's kernels before numpy and pycolmap load

import logging
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pycolmap
import tyro

from spars_ns.errors import InputError, SfMError
from spars_ns.metrics import (
    absolute_trajectory_error,
    evenly_spaced,
    load_true_poses,
    mean_average_accuracy,
    model_poses,
    pair_errors_deg,
)
from spars_ns.stages.ingest.images import file_sha1, ingest_image
from spars_ns.stages.sfm.features import FeatureType
from spars_ns.stages.sfm.mapping import SfMConfig, run_sfm


@dataclass
class Args:
    scene: list[Path]
    """Scene folders with images/ and a ground-truth transforms.json."""
    views: list[int] = field(default_factory=lambda: [3])
    """Numbers of views K to pick, evenly spaced by sorted name."""
    features: list[FeatureType] = field(default_factory=lambda: ["sift"])
    """Feature types of our SfM stage, one row each (overrides --sfm-options.features)."""
    sfm_options: SfMConfig = field(default_factory=SfMConfig)
    defaults: bool = True
    """Also run pycolmap's defaults (--no-defaults: ours only, to time the two apart)."""


def poses_of(model: pycolmap.Reconstruction | None) -> dict[str, np.ndarray]:
    if model is None:
        return {}
    return model_poses(model)


def run_ours(
    image_dir: Path, names: list[str], work: Path, args: Args, features: FeatureType
) -> tuple[dict[str, np.ndarray], dict]:
    """Poses, and what the model check and the step timings say (sfm/report.json's fields)."""
    records = [ingest_image(image_dir / n, work, file_sha1(image_dir / n)) for n in names]
    try:
        result = run_sfm(
            work, records, [r.name for r in records], [], work / "sfm", replace(args.sfm_options, features=features)
        )
    except SfMError:
        return {}, {}
    check = result.check
    summary = "ok"
    if check.doubtful_images:
        summary = f"doubt: {', '.join(check.doubtful_images)}"
    elif check.unexplained:
        summary = f"ok; {len(check.unexplained)} of {len(check.pairs)} pairs unexplained (the pairs at fault)"
    return poses_of(result.train), {"check": summary, "profile": result.seconds, "starts": result.init_pairs_tried}


def defaults_model(image_dir: Path, names: list[str], work: Path) -> pycolmap.Reconstruction | None:
    """pycolmap with its default options on `names`: the model with most registered images."""
    database = work / "database.db"
    database.unlink(missing_ok=True)
    pycolmap.extract_features(database, image_dir, image_names=names, device=pycolmap.Device.cpu)
    pycolmap.match_exhaustive(database, device=pycolmap.Device.cpu)
    models = pycolmap.incremental_mapping(database, image_dir, work / "models")
    return max(models.values(), key=lambda m: m.num_reg_images(), default=None)


def run_defaults(image_dir: Path, names: list[str], work: Path) -> dict[str, np.ndarray]:
    return poses_of(defaults_model(image_dir, names, work))


def score(estimated: dict[str, np.ndarray], truth: dict[str, np.ndarray], seconds: float) -> dict:
    errors = list(pair_errors_deg(estimated, truth).values())
    return {
        "registered": f"{len(estimated)}/{len(truth)}",
        "median_pair_error_deg": float(np.median(errors)),
        "mAA@10": mean_average_accuracy(errors),
        "ATE": absolute_trajectory_error(estimated, truth),
        "seconds": seconds,
    }


def main(args: Args) -> None:
    pycolmap.logging.minloglevel = 2
    logging.basicConfig(level=logging.WARNING)
    rows = []
    for scene in args.scene:
        truth_all = load_true_poses(scene / "transforms.json")
        for k in args.views:
            names = evenly_spaced(list(truth_all), k)
            truth = {n: truth_all[n] for n in names}
            for method in [f"spars-ns {f}" for f in args.features] + ["pycolmap defaults"] * args.defaults:
                with tempfile.TemporaryDirectory() as tmp:
                    start = time.perf_counter()
                    try:
                        details = {"check": "-"}
                        if method == "pycolmap defaults":
                            estimated = run_defaults(scene / "images", names, Path(tmp))
                        else:
                            estimated, details = run_ours(scene / "images", names, Path(tmp), args, method.split()[1])
                    except InputError as err:  # learned weights not available
                        print(f"{method}: {err}", flush=True)
                        rows.append({"scene": scene.name, "views": k, "method": method, "unavailable": True})
                        continue
                    rows.append(
                        {
                            "scene": scene.name,
                            "views": k,
                            "method": method,
                            **score(estimated, truth, time.perf_counter() - start),
                            **details,
                        }
                    )
                print(rows[-1], flush=True)

    print(
        "\n| scene | views | method | registered | median pair err (deg) | mAA@10 | ATE / extent | seconds | "
        "model check |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r.get("unavailable"):
            print(f"| {r['scene']} | {r['views']} | {r['method']} | weights unavailable | | | | | |")
            continue
        print(
            f"| {r['scene']} | {r['views']} | {r['method']} | {r['registered']} | {r['median_pair_error_deg']:.2f} | "
            f"{r['mAA@10']:.3f} | {r['ATE']:.4f} | {r['seconds']:.1f} | {r['check']} |"
        )
    print("\nWhere our time went (seconds per step; starts of the mapper):")
    for r in rows:
        if r.get("profile"):
            print(f"- {r['scene']} {r['views']} {r['method']}: {r['profile']}, {r['starts']} starts")


if __name__ == "__main__":
    main(tyro.cli(Args))
