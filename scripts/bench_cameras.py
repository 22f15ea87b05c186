"""The camera benchmark every SfM change is judged by: many captures per view count, worst cases reported.

    python scripts/bench_cameras.py --output benchmarks/cameras.json
    python scripts/at_revision.py /tmp/previous-main scripts/bench_cameras.py --output benchmarks/cameras-previous.json
    python scripts/bench_cameras.py --compare benchmarks/cameras-previous.json benchmarks/cameras.json

Captures, for each K in --views:
- each real scene (a folder with images/ and a ground-truth transforms.json): --subsets random
  subsets of K photos, spread out as users shoot (sorted by name, neighbouring picks at least
  n / 2K frames apart), drawn by --seed;
- with --close, each real scene whose photos are numbered video frames: --close random runs of K
  neighbouring frames, each within CLOSE_MAX_GAP frame numbers of the last (photos from nearly one
  place: the low-parallax captures that incremental mapping's angles reject), source "<scene> close";
- --synthetic scenes of `spars_ns.synthetic` (no EXIF; other seeds give other textures and
  camera heights), K views on their arc: their truth includes the focal length and the surfaces;
- --walkaround scenes (`make_walkaround`: boxes walked around over --arc degrees, neighbouring
  views 360 / K degrees apart all round, 180 / (K - 1) over 180; seeds draw textures, boxes,
  focal length and camera placement), the wide captures SfM finds hardest, with the same truth;
  with --steady frames of a video along the arc instead (one distance, height and aim), which a
  small --arc makes a low-parallax capture with exact truth; with --repeated walls of one tile
  repeated along them (arcades, rows of windows), the captures where SfM can build a wrong model.
With --focal-prior every photo carries a focal length as EXIF gives one, off the truth by that
share (none of the development photos has EXIF). Each capture runs the SfM stage (`run_sfm`) on
every photo as a training view. Per source and K the table gives: registered images (mean share,
and captures with all of them), the median pair error of each capture (median over captures and
worst decile), mAA@10 (mean and worst capture), the focal length's error (where the truth has
one), and for synthetic scenes the SfM points' median distance to the true surfaces after a Sim3
fit of the camera centres (scene units; the synthetic room is 8 units across, the walk-around's
yard 16).

`--again PATH` measures an earlier run's captures of the `--views` again (with `--where FIELD`, those
where that field was true): a change judged on exactly the captures it touches, beside their earlier figures.
`--processes N` measures N captures at a time (see `Args.processes` for what that changes).

To hold a change against the previous main, check that commit out beside this one
(`git worktree add /tmp/previous-main HEAD~1`) and run this script on its package with
`scripts/at_revision.py`, as above (PYTHONPATH alone does not: the editable install comes
first). A capture is a silent wrong model when its median pair error exceeds WRONG_DEG and the
model check found no doubtful image; a right model with doubtful images is a false alarm.
"""

from __future__ import annotations

import spars_ns  # isort: skip  # first: it pins OpenBLAS's kernels before numpy and pycolmap load

import json
import logging
import multiprocessing
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import pycolmap
import tyro

from spars_ns.errors import SfMError
from spars_ns.geometry import camera_center, fit_similarity
from spars_ns.metrics import load_true_poses, mean_average_accuracy, pair_errors_deg
from spars_ns.stages.ingest.images import file_sha1, ingest_image
from spars_ns.stages.sfm.mapping import SfMConfig, run_sfm
from spars_ns.surface.evaluate import distance_to_quads
from spars_ns.synthetic import make_scene, make_walkaround


@dataclass
class Args:
    scene: list[Path] = field(
        default_factory=lambda: [
            Path("../shared/data/strecha/fountain-P11"),
            Path("../shared/data/strecha/Herz-Jesus-P8"),
            Path("../shared/data/fox"),
        ]
    )
    """Real scenes: folders with images/ and a ground-truth transforms.json."""
    views: list[int] = field(default_factory=lambda: [3, 4, 5, 6, 7, 8])
    subsets: int = 10
    """Random subsets per real scene and K."""
    synthetic: int = 5
    """Synthetic scenes (seeds 0, 1, ...) per K."""
    close: int = 0
    """Runs of K neighbouring video frames per real scene and K (photos from nearly one place)."""
    walkaround: int = 0
    """Walk-around scenes (seeds 0, 1, ...) per K."""
    arc: float = 360.0
    """Degrees the walk-around's cameras spread over."""
    steady: bool = False
    """Walk-arounds as frames of a video: one distance, height and aim for every camera (with a small
    --arc, photos from nearly one place)."""
    repeated: bool = False
    """Walk-arounds whose walls repeat one tile along them: matches that fit a wall at the wrong place."""
    seed: int = 0
    focal_prior: float | None = None
    """Give SfM each photo's focal length as EXIF would, the truth times (1 + this): what users whose
    photos carry EXIF get (none of the development photos does). None: no prior, as the photos are."""
    output: Path | None = None
    """JSON with every capture's figures and the summary."""
    compare: list[Path] = field(default_factory=list)
    """Two JSON files of earlier runs (before, after): print their summaries side by side and stop."""
    again: Path | None = None
    """A JSON file of an earlier run: measure its captures of the --views again (the same photos, the
    same synthetic seeds) instead of drawing new ones, and print its summary beside this one's."""
    where: str | None = None
    """With --again, only the captures where this field of the earlier run is true
    (focal_length_undetermined, robust_adjustment, ...)."""
    processes: int = 1
    """Captures measured at once, in as many processes. Each process measures its share one after another,
    so a capture follows other captures than in a run of one process: the cameras do not depend on it
    (one row of one earlier whole run did, never since: BENCHMARKS.md, "The capture that came out
    otherwise, probed"); the seconds do: compare them between runs of one process."""


@dataclass
class Capture:
    source: str
    views: int
    names: list[str]
    truth: dict[str, np.ndarray]  # name -> 4x4 cam_from_world
    focal: float | None  # true focal length in pixels of the photos
    image_dir: Path
    quads: list | None = None  # synthetic surfaces
    kind: str = ""  # the summary's source: the scene, or all synthetic scenes of one layout


def spread_subsets(names: list[str], k: int, count: int, rng: np.random.Generator) -> list[list[str]]:
    """Up to `count` distinct subsets of k names, neighbouring picks at least len(names) / 2k apart."""
    n, gap = len(names), max(1, len(names) // (2 * k))
    found: list[tuple[int, ...]] = []
    for _ in range(200 * count):
        if len(found) == count:
            break
        picks = tuple(sorted(rng.choice(n, k, replace=False)))
        if min(np.diff(picks), default=gap) >= gap and picks not in found:
            found.append(picks)
    return [[names[i] for i in picks] for picks in found]


CLOSE_MAX_GAP = 3  # frame numbers between neighbouring picks: on the fox, 0.7-7 degrees apart about it


def close_runs(names: list[str], k: int, count: int, rng: np.random.Generator) -> list[list[str]]:
    """Up to `count` distinct runs of k names sorted by frame number, each within CLOSE_MAX_GAP of the last."""
    numbered = sorted((int(Path(n).stem), n) for n in names if Path(n).stem.isdigit())
    starts = [
        i
        for i in range(len(numbered) - k + 1)
        if all(numbered[j + 1][0] - numbered[j][0] <= CLOSE_MAX_GAP for j in range(i, i + k - 1))
    ]
    chosen = rng.permutation(starts)[:count]
    return [[numbered[j][1] for j in range(i, i + k)] for i in sorted(chosen)]


def as_4x4(cam_from_world: np.ndarray) -> np.ndarray:
    return np.vstack([cam_from_world[:3], [0, 0, 0, 1]])


def real_captures(scene: Path, k: int, count: int, rng: np.random.Generator, close: bool = False) -> list[Capture]:
    """Spread-out subsets of a real scene, or with `close` runs of neighbouring video frames."""
    names = sorted(load_true_poses(scene / "transforms.json"))
    subsets = close_runs(names, k, count, rng) if close else spread_subsets(names, k, count, rng)
    return [real_capture(scene, subset, f"{scene.name} close" if close else scene.name) for subset in subsets]


def real_capture(scene: Path, names: list[str], source: str) -> Capture:
    """The photos `names` of a real scene, with their true poses and focal length."""
    truth = load_true_poses(scene / "transforms.json")
    meta = json.loads((scene / "transforms.json").read_text())
    focal = meta.get("fl_x") or meta["frames"][0].get("fl_x")
    return Capture(source, len(names), names, {n: as_4x4(truth[n]) for n in names}, focal, scene / "images")


def capture_again(row: dict, scenes: list[Path], folder: Path) -> Capture:
    """The capture an earlier run's row measured: a real scene's photos by name, a synthetic scene by
    its layout and seed (the last word of its source)."""
    source, views = row["source"], row["views"]
    if source.startswith("synthetic"):
        return synthetic_capture(int(source.split()[-1]), views, folder)
    if source.startswith("walk-around"):
        words = source.split()
        return synthetic_capture(int(words[-1]), views, folder, float(words[1]), "steady" in words, "repeated" in words)
    name = source.removesuffix(" close")
    scene = next((s for s in scenes if s.name == name), None)
    if scene is None:
        raise SystemExit(f"{row['source']}: no scene named {name} among --scene {' '.join(map(str, scenes))}")
    return real_capture(scene, row["names"], source)


def synthetic_capture(
    seed: int, k: int, folder: Path, walkaround_arc: float | None = None, steady: bool = False, repeated: bool = False
) -> Capture:
    """`make_scene`'s room, or with `walkaround_arc` `make_walkaround`'s yard over that arc (`steady`: video
    frames; `repeated`: walls of one repeated tile)."""
    if walkaround_arc is None:
        scene, kind = make_scene(num_views=k, width=384, height=288, seed=seed), "synthetic"
    else:
        scene = make_walkaround(num_views=k, arc_degrees=walkaround_arc, seed=seed, steady=steady, repeated=repeated)
        kind = f"walk-around {walkaround_arc:g}" + (" steady" if steady else "") + (" repeated" if repeated else "")
    scene.write_images(folder)
    names = [scene.image_name(i) for i in range(k)]
    truth = {name: as_4x4(scene.cam_from_world[i]) for i, name in enumerate(names)}
    focal = float(scene.intrinsics[0, 0])
    return Capture(f"{kind} {seed}", k, names, truth, focal, folder, scene.quads, kind)


def measure(capture: Capture, work: Path, focal_prior: float | None = None) -> dict:
    records = [ingest_image(capture.image_dir / n, work, file_sha1(capture.image_dir / n)) for n in capture.names]
    if focal_prior is not None:
        records = [replace(record, focal_prior=capture.focal * (1 + focal_prior)) for record in records]
    start = time.perf_counter()
    try:
        result = run_sfm(work, records, capture.names, [], work / "sfm", SfMConfig())
        model, doubtful = result.train, result.doubtful_images
        robust, second_term = result.robust_adjustment, result.second_radial_term
        global_mapping, disagreement = result.global_mapping, result.mappings_disagreement_deg
        low_parallax, focal_open = result.low_parallax, result.focal_length_undetermined
        explained = result.check.explained_share
        distinctive_refit, distinctive_gain = result.distinctive_refit, result.distinctive_gain
        look_alike_share = result.look_alike_share
    except SfMError:
        model, doubtful, robust, second_term, global_mapping, disagreement = None, [], False, False, False, None
        low_parallax = focal_open = distinctive_refit = False
        distinctive_gain = look_alike_share = None
        explained = None
    seconds = time.perf_counter() - start
    images = [im for im in model.images.values() if im.has_pose] if model else []
    estimated = {im.name: as_4x4(im.cam_from_world().matrix()) for im in images}
    errors = list(pair_errors_deg(estimated, capture.truth).values())
    row = {
        "source": capture.source,
        "kind": capture.kind or capture.source,
        "views": capture.views,
        "names": capture.names,
        "registered": len(estimated),
        "median_pair_error_deg": float(np.median(errors)),
        "mAA@10": mean_average_accuracy(errors),
        "seconds": round(seconds, 2),
        "points": len(model.points3D) if model else 0,
        "doubtful": doubtful,
        "robust_adjustment": robust,
        "second_radial_term": second_term,
        "global_mapping": global_mapping,
        "low_parallax": low_parallax,
        "focal_length_undetermined": focal_open,
        "mappings_disagreement_deg": disagreement,
        "explained_share": explained,
        "distinctive_refit": distinctive_refit,
        "distinctive_gain": distinctive_gain,
        "look_alike_share": look_alike_share,
    }
    if capture.focal and images:
        focals = [model.camera(im.camera_id).mean_focal_length() for im in images]
        row["focal_error"] = float(np.median([abs(f / capture.focal - 1) for f in focals]))
    if capture.quads is not None and len(images) >= 3 and len(model.points3D):
        row["points_to_surface"] = points_to_surface(model, images, capture)
    return row


def points_to_surface(model, images, capture: Capture) -> float:
    """Median distance of the SfM points to the true surfaces, the model mapped onto the truth by
    the Sim3 that best fits its camera centres."""
    centres = np.stack([im.projection_center() for im in images])
    true_centres = np.stack([camera_center(capture.truth[im.name]) for im in images])
    scale, rotation, translation = fit_similarity(centres, true_centres)
    points = np.stack([p.xyz for p in model.points3D.values()])
    mapped = scale * points @ rotation.T + translation
    return float(np.median(distance_to_quads(mapped, capture.quads)))


WRONG_DEG = 5.0  # a capture whose median pair error exceeds this has a wrong model


def summarise(rows: list[dict]) -> list[dict]:
    """One line per source kind (each real scene, all synthetic scenes) and K."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for row in rows:
        # runs from before rows had a kind had only the room among synthetic sources
        kind = row.get("kind") or ("synthetic" if row["source"].startswith("synthetic") else row["source"])
        groups.setdefault((kind, row["views"]), []).append(row)

    def median_and_worst(values):
        values = np.asarray(values, float)
        # "higher": a value some capture had (a failed capture's inf, not an interpolation with it)
        return (
            (float(np.median(values)), float(np.percentile(values, 90, method="higher")))
            if len(values)
            else (float("nan"),) * 2
        )

    summary = []
    for (kind, k), group in groups.items():
        line = {
            "source": kind,
            "views": k,
            "captures": len(group),
            "registered_share": float(np.mean([r["registered"] / r["views"] for r in group])),
            "all_registered": sum(r["registered"] == r["views"] for r in group),
            "pair_error_median_deg": median_and_worst([r["median_pair_error_deg"] for r in group])[0],
            "pair_error_worst_decile_deg": median_and_worst([r["median_pair_error_deg"] for r in group])[1],
            "mAA@10_mean": float(np.mean([r["mAA@10"] for r in group])),
            "mAA@10_worst": float(np.min([r["mAA@10"] for r in group])),
            "seconds_mean": float(np.mean([r["seconds"] for r in group])),
            # A model more than WRONG_DEG off that the model check finds no doubt in: a silent wrong model.
            "silent_wrong": sum(
                r["registered"] >= 2 and r["median_pair_error_deg"] > WRONG_DEG and not r.get("doubtful") for r in group
            ),
            "flagged_right": sum(r["median_pair_error_deg"] <= WRONG_DEG and bool(r.get("doubtful")) for r in group),
            "global_mapping": sum(bool(r.get("global_mapping")) for r in group),
            "low_parallax": sum(bool(r.get("low_parallax")) for r in group),
            "focal_open": sum(bool(r.get("focal_length_undetermined")) for r in group),
            # seed points: a model of every photo with none to start training from is no model
            "points_fewest": min(r["points"] for r in group),
        }
        focal = [r["focal_error"] for r in group if "focal_error" in r]
        line["focal_error_median"], line["focal_error_worst_decile"] = median_and_worst(focal)
        surface = [r["points_to_surface"] for r in group if "points_to_surface" in r]
        line["points_to_surface_median"], line["points_to_surface_worst_decile"] = median_and_worst(surface)
        summary.append(line)
    return summary


COLUMNS = [
    ("registered_share", "registered", "{:.0%}"),
    ("all_registered", "all reg.", "{}"),
    ("pair_error_median_deg", "pair err median (deg)", "{:.2f}"),
    ("pair_error_worst_decile_deg", "worst decile", "{:.2f}"),
    ("mAA@10_mean", "mAA@10 mean", "{:.3f}"),
    ("mAA@10_worst", "worst", "{:.3f}"),
    ("focal_error_median", "focal err median", "{:.2%}"),
    ("focal_error_worst_decile", "worst decile", "{:.2%}"),
    ("points_to_surface_median", "points to surface", "{:.3f}"),
    ("silent_wrong", "silent wrong", "{}"),
    ("flagged_right", "right, flagged", "{}"),
    ("global_mapping", "global", "{}"),
    ("low_parallax", "low parallax", "{}"),
    ("focal_open", "focal open", "{}"),
    ("points_fewest", "fewest points", "{}"),
    ("seconds_mean", "s", "{:.1f}"),
]


def table(summaries: list[tuple[str, list[dict]]]) -> str:
    """Markdown: one row per source and K, and per run when several are compared."""
    runs = len(summaries) > 1
    head = ["source", "K", "captures"] + (["run"] if runs else []) + [title for _, title, _ in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = sorted({(s["source"], s["views"]) for _, summary in summaries for s in summary})
    for source, k in keys:
        for label, summary in summaries:
            line = next((s for s in summary if (s["source"], s["views"]) == (source, k)), None)
            if line is None:
                continue
            cells = [source, str(k), str(line["captures"])] + ([label] if runs else [])
            # None: a run from before a column existed; NaN (never equal to itself): nothing to measure
            cells += [
                "-" if line.get(key) is None or line[key] != line[key] else fmt.format(line[key])
                for key, _, fmt in COLUMNS
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def drawn_captures(args: Args, rng: np.random.Generator, folder: Path) -> list[Capture]:
    """The captures `args` ask for, real ones drawn by `rng`, synthetic ones written under `folder`."""
    captures = [c for k in args.views for scene in args.scene for c in real_captures(scene, k, args.subsets, rng)]
    if args.close:
        captures += [c for k in args.views for s in args.scene for c in real_captures(s, k, args.close, rng, True)]
    for k in args.views:
        for seed in range(args.synthetic):
            captures.append(synthetic_capture(seed, k, folder / f"synthetic_{seed}_{k}"))
        for seed in range(args.walkaround):
            walk = folder / f"walkaround_{seed}_{k}"
            captures.append(synthetic_capture(seed, k, walk, args.arc, args.steady, args.repeated))
    return captures


def cpu_model() -> str:
    """The processor's name: the same code gave other cameras on another processor, where OpenBLAS
    chose other kernels (BENCHMARKS.md, "Other cameras on another processor")."""
    return spars_ns.cpu_info("model name") or platform.processor() or "unknown"


def quiet(package: str) -> None:
    """pycolmap's and our logging down to errors, in this process and in each of `measuring`'s, which
    must also import the package this one measures (`at_revision.py`'s, not the editable install's)."""
    if spars_ns.__file__ != package:
        raise SystemExit(f"a measuring process imported {spars_ns.__file__}, not {package}: use --processes 1")
    pycolmap.logging.minloglevel = 2
    logging.basicConfig(level=logging.ERROR)


@contextmanager
def measuring(processes: int) -> Iterator[Callable]:
    """`map`, over `processes` fresh processes (spawned: nothing of this one's threads or state) when more
    than one; rows in the captures' order either way."""
    if processes <= 1:
        yield map
        return
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, mp_context=spawn, initializer=quiet, initargs=(spars_ns.__file__,)) as pool:
        yield pool.map


def main(args: Args) -> None:
    if args.compare:
        loaded = [(path.stem, json.loads(path.read_text())["summary"]) for path in args.compare]
        print(table(loaded))
        return
    if args.where and not args.again:
        raise SystemExit("--where picks among the captures of --again: give --again too")
    quiet(spars_ns.__file__)
    rng = np.random.default_rng(args.seed)
    rows, earlier = [], []
    with tempfile.TemporaryDirectory() as tmp:
        if args.again:
            earlier = json.loads(args.again.read_text())["captures"]
            earlier = [r for r in earlier if r["views"] in args.views and (args.where is None or r.get(args.where))]
            captures = [capture_again(r, args.scene, Path(tmp) / f"again_{i}") for i, r in enumerate(earlier)]
        else:
            captures = drawn_captures(args, rng, Path(tmp))
        works = [Path(tmp) / f"capture_{i}" for i in range(len(captures))]
        for work in works:
            work.mkdir()
        with measuring(args.processes) as measured:
            for row in measured(partial(measure, focal_prior=args.focal_prior), captures, works):
                rows.append(row)
                print(f"[{len(rows)}/{len(captures)}]", {k: v for k, v in row.items() if k != "names"}, flush=True)
    summary = summarise(rows)
    print(table([(args.again.stem, summarise(earlier)), ("again", summary)] if args.again else [("", summary)]))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(
            json.dumps(
                {
                    "device": "CPU",
                    "cpu": cpu_model(),
                    "blas_kernels": spars_ns.blas_kernels(),
                    "pycolmap": pycolmap.__version__,
                    "numpy": np.__version__,
                    "args": {
                        "views": args.views,
                        "subsets": args.subsets,
                        "synthetic": args.synthetic,
                        "close": args.close,
                        "walkaround": args.walkaround,
                        "arc": args.arc,
                        "steady": args.steady,
                        "repeated": args.repeated,
                        "seed": args.seed,
                        "focal_prior": args.focal_prior,
                        "again": str(args.again) if args.again else None,
                        "where": args.where,
                        "processes": args.processes,
                    },
                    "summary": summary,
                    "captures": rows,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main(tyro.cli(Args))
