"""Wide baselines without learned weights: what helps our SfM stage on few, far-apart views.

    python scripts/bench_wide_baseline.py --views 3 4 \
        --scene ../shared/data/strecha/fountain-P11 ../shared/data/strecha/Herz-Jesus-P8

For each scene and view count (K images evenly spaced by sorted name), features are
extracted and matched once per feature budget and the same database is mapped with each
lever; prints a Markdown table of registered views, median pair error, mAA@10 and 3D points.
Levers: COLMAP's mapper keeps tracks seen in only two images out of triangulation (`two-view
tracks kept` puts them in), triangulates and keeps points at 1.5 degrees or more
(`angles 1.0` lowers both), and our stage extracts 8192 features (`16384 features`).
"""

from __future__ import annotations

import spars_ns  # noqa: F401  # isort: skip  # first: it pins OpenBLAS's kernels before numpy and pycolmap load

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pycolmap
import tyro

import spars_ns.stages.sfm.mapping as sfm
from spars_ns.metrics import evenly_spaced, load_true_poses, mean_average_accuracy, model_poses, pair_errors_deg
from spars_ns.stages.ingest.images import file_sha1, ingest_image


@dataclass
class Args:
    scene: list[Path]
    """Scene folders with images/ and a ground-truth transforms.json."""
    views: list[int] = field(default_factory=lambda: [3, 4])


def keep_two_view_tracks(options: pycolmap.IncrementalPipelineOptions) -> None:
    options.triangulation.ignore_two_view_tracks = False


def lower_angles(options: pycolmap.IncrementalPipelineOptions) -> None:
    options.triangulation.min_angle = 1.0
    options.mapper.filter_min_tri_angle = 1.0


LEVERS: dict[str, tuple[int, list[Callable]]] = {
    "as is": (8192, []),
    "two-view tracks kept": (8192, [keep_two_view_tracks]),
    "angles 1.0": (8192, [lower_angles]),
    "two-view tracks kept, angles 1.0": (8192, [keep_two_view_tracks, lower_angles]),
    "16384 features": (16384, []),
}


def main(args: Args) -> None:
    pycolmap.logging.minloglevel = 3
    as_is = sfm.mapper_options
    print("| scene | views | lever | registered | median pair err (deg) | mAA@10 | points |")
    print("|---|---|---|---|---|---|---|")
    for scene in args.scene:
        truth_all = load_true_poses(scene / "transforms.json")
        for k in args.views:
            names = evenly_spaced(list(truth_all), k)
            databases: dict[int, tuple[Path, sfm.MatchGraph]] = {}
            for lever, (features, changes) in LEVERS.items():
                config = sfm.SfMConfig(max_num_features=features)
                if features not in databases:
                    work = Path(tempfile.mkdtemp())
                    records = [ingest_image(scene / "images" / n, work, file_sha1(scene / "images" / n)) for n in names]
                    sfm.extract_and_match(work / "database.db", work, records, config)
                    databases[features] = (work, sfm.MatchGraph(work / "database.db"))
                work, graph = databases[features]

                def changed(image_names, low_parallax=False, changes=changes):
                    options = as_is(image_names, low_parallax)
                    for change in changes:
                        change(options)
                    return options

                sfm.mapper_options = changed  # the one place the stage builds the mapper's options
                model, _, _ = sfm.map_training_views(work / "database.db", graph, work, names, Path(tempfile.mkdtemp()))
                sfm.mapper_options = as_is
                poses = model_poses(model) if model else {}
                errors = list(pair_errors_deg(poses, {n: truth_all[n] for n in names}).values())
                print(
                    f"| {scene.name} | {k} | {lever} | {len(poses)}/{k} | {np.median(errors):.2f} | "
                    f"{mean_average_accuracy(errors):.3f} | {model.num_points3D() if model else 0} |",
                    flush=True,
                )


if __name__ == "__main__":
    main(tyro.cli(Args))
