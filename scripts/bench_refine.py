"""Refinement benchmark on synthetic scenes with true depth.

    python scripts/bench_refine.py --views 12 --width 256 --height 192

A synthetic scene with true cameras and the sparse points an ideal SfM would give
(`synthetic.sparse_observations`). Per view, a prior made from the true depth by a smooth
low-frequency warp (a multiplicative 1 +- `warp` field), noise of `noise` times the
depth, and a per-image scale and shift, applied to depth or to disparity. Reports AbsRel
and the share of pixels with max(d/d*, d*/d) < 1.05 for the prior as given, after the
per-image scale and shift fitted to the SfM points (`global`), after `local` refinement,
and for the noise floor (the true depth with the noise alone), with seconds.
"""

from __future__ import annotations

import spars_ns  # noqa: F401  # isort: skip  # first: it pins OpenBLAS's kernels before numpy and pycolmap load

import time
from dataclasses import dataclass, field

import numpy as np
import tyro
from constants import apply  # this script's folder is on sys.path

from spars_ns.stages.refine.config import RefineConfig
from spars_ns.stages.refine.frozen_depth import RefineView, refine_depths
from spars_ns.synthetic import make_scene, sparse_observations


@dataclass
class Args:
    views: int = 12
    width: int = 256
    height: int = 192
    warp: float = 0.15
    noise: float = 0.01
    seed: int = 0
    refine: RefineConfig = field(default_factory=RefineConfig)
    set: list[str] = field(default_factory=list)
    """Constants of the solver at other values, e.g. spars_ns.stages.refine.frozen_depth.SAMPLES_PER_PAIR=2048
    (scripts/constants.py)."""


def smooth_warp(rng: np.random.Generator, height: int, width: int, amplitude: float) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    field_ = np.zeros((height, width))
    for _ in range(3):
        fx, fy, phase = rng.uniform(0.25, 0.75), rng.uniform(0.25, 0.75), rng.uniform(0, 2 * np.pi)
        field_ += np.sin(2 * np.pi * fx * xs + phase) * np.cos(2 * np.pi * fy * ys + phase)
    return 1 + amplitude * field_ / np.abs(field_).max()


def metrics(depths: list[np.ndarray], truths: list[np.ndarray]) -> tuple[float, float]:
    estimated = np.concatenate([d.ravel() for d in depths])
    true = np.concatenate([t.ravel() for t in truths])
    ok = np.isfinite(estimated) & np.isfinite(true) & (estimated > 0)
    ratio = np.maximum(estimated[ok] / true[ok], true[ok] / estimated[ok])
    return float(np.mean(np.abs(estimated[ok] - true[ok]) / true[ok])), float(np.mean(ratio < 1.05))


def main(args: Args) -> None:
    apply(args.set)
    scene = make_scene(num_views=args.views, width=args.width, height=args.height, arc_degrees=60, seed=args.seed)
    renders = [scene.render(i) for i in range(scene.num_views)]
    observations = sparse_observations(scene, seed=args.seed)
    truths = [np.where(r.object_ids >= 0, r.depth, np.nan) for r in renders]
    rng = np.random.default_rng(args.seed)
    noisy = [t * (1 + args.noise * rng.normal(size=t.shape)) for t in truths]
    warped = [n * smooth_warp(rng, args.height, args.width, args.warp) for n in noisy]

    print(f"\n{args.views} views at {args.width}x{args.height}, warp +-{args.warp}, noise {args.noise} of depth\n")
    print("| input | result | AbsRel | ratio < 1.05 | seconds |")
    print("|---|---|---|---|---|")
    for kind in ("depth", "disparity"):
        views, raw = [], []
        for i, (w, (uv, depth, ids)) in enumerate(zip(warped, observations)):
            scale, shift = rng.uniform(0.3, 3.0), rng.uniform(-0.2, 0.2)
            value = w if kind == "depth" else 1.0 / w
            prior = scale * value + shift * np.nanmedian(value)
            raw.append(prior if kind == "depth" else 1.0 / prior)
            views.append(
                RefineView(prior, np.ones_like(prior), scene.intrinsics, scene.cam_from_world[i], uv, depth, ids)
            )
        abs_rel, delta = metrics(raw, truths)
        print(f"| {kind} | prior as given | {abs_rel:.4f} | {delta:.3f} | - |")
        for mode in ("global", "local"):
            start = time.perf_counter()
            results = refine_depths(views, mode, kind, args.refine)
            seconds = time.perf_counter() - start
            abs_rel, delta = metrics([r.depth for r in results], truths)
            print(f"| {kind} | {mode} | {abs_rel:.4f} | {delta:.3f} | {seconds:.1f} |")
    abs_rel, delta = metrics(noisy, truths)
    print(f"| - | noise floor | {abs_rel:.4f} | {delta:.3f} | - |")


if __name__ == "__main__":
    main(tyro.cli(Args))
