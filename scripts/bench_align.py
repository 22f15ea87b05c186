"""Alignment benchmark on synthetic scenes with ground-truth geometry.

    python scripts/bench_align.py --views 12 --width 512 --height 384

Renders a synthetic scene, runs our SfM stage on it, makes a dense prior per view by
distorting the true pointmap the way learned priors err (`synthetic.distorted_pointmap`:
a per-image similarity, a scale and offset per object, noise, one box with depth no
similarity explains), then aligns it onto the SfM frame: global only, two-stage with
superpixel regions, and two-stage with the true object masks as regions (an oracle for
the region step). Reports the point error against the truth (median, and the share
within 1% of the depth, both relative to depth), pixels kept, and seconds of alignment
(model inference excluded). The noise floor is the global alignment of a prior that has
only the noise (no object or wrong-region errors): what any alignment onto this SfM
model can reach, SfM's own errors included.
"""

from __future__ import annotations

import spars_ns  # noqa: F401  # isort: skip  # first: it pins OpenBLAS's kernels before numpy and pycolmap load

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pycolmap
import tyro
from constants import apply  # this script's folder is on sys.path

from spars_ns.geometry import inverse_transform, transform
from spars_ns.process import ProcessConfig, process
from spars_ns.stages.align.regions import superpixel_regions
from spars_ns.stages.align.similarity import align_scene
from spars_ns.stages.prior.dense_prior import DensePrior
from spars_ns.synthetic import distorted_pointmap, make_scene


@dataclass
class Args:
    views: int = 12
    width: int = 512
    height: int = 384
    seed: int = 0
    noise: float = 0.002
    """Prior noise, a fraction of depth (per axis)."""
    set: list[str] = field(default_factory=list)
    """Constants of the alignment at other values, e.g. spars_ns.stages.align.similarity.INLIER_THRESHOLD=0.02
    (scripts/constants.py)."""


def main(args: Args) -> None:
    apply(args.set)
    pycolmap.logging.minloglevel = 2
    scene = make_scene(num_views=args.views, width=args.width, height=args.height, arc_degrees=60, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        scene.write_images(photos)
        processed = process(ProcessConfig(images=photos, output=Path(tmp) / "scene"))
        model = pycolmap.Reconstruction(processed.sparse_dir)

    names = [scene.image_name(i) for i in range(scene.num_views)]
    true_centres = np.stack([-c[:, :3].T @ c[:, 3] for c in scene.cam_from_world])
    est_centres = np.stack([model.find_image_with_name(n).projection_center() for n in names])
    sfm_from_true = pycolmap.estimate_sim3d(true_centres, est_centres).matrix()
    sfm_scale = np.linalg.norm(sfm_from_true[:, 0])

    priors, noise_only, truth, object_ids, images, depth = {}, {}, {}, {}, {}, {}
    for i, name in enumerate(names):
        pts3d, conf, true_cam = distorted_pointmap(scene, i, seed=args.seed, noise=args.noise)
        view = scene.render(i)
        world = inverse_transform(np.where(np.isfinite(true_cam), true_cam, 0), scene.cam_from_world[i])
        truth[name] = transform(world, sfm_from_true)
        priors[name] = DensePrior(pts3d, conf, (1.0, 1.0), (0.0, 0.0))
        noisy, _, _ = distorted_pointmap(
            scene, i, args.seed, object_scale=0, object_shift=0, noise=args.noise, wrong_objects=0
        )
        noise_only[name] = DensePrior(noisy, conf, (1.0, 1.0), (0.0, 0.0))
        object_ids[name], images[name], depth[name] = view.object_ids, view.image, view.depth * sfm_scale

    def error_stats(aligned: dict[str, np.ndarray]) -> tuple[float, float]:
        errors = []
        for name in aligned:
            ok = (object_ids[name] >= 0) & np.isfinite(aligned[name]).all(-1)
            errors.append(np.linalg.norm(aligned[name][ok] - truth[name][ok], axis=1) / depth[name][ok])
        errors = np.concatenate(errors)
        return float(np.median(errors)), float(np.mean(errors < 0.01))

    rows = []
    variants = {
        "global": None,
        "two-stage, superpixels": lambda name, prior: lambda _: superpixel_regions(images[name]),
        "two-stage, true object masks": lambda name, prior: lambda _: [object_ids[name] + 1],
    }
    for label, proposer in variants.items():
        start = time.perf_counter()
        result = align_scene(model, priors, proposer)
        seconds = time.perf_counter() - start
        median, within = error_stats({n: a.points for n, a in result.images.items()})
        kept = np.mean([np.isfinite(a.points).all(-1)[object_ids[n] >= 0].mean() for n, a in result.images.items()])
        rows.append((label, median, within, kept, seconds))
    floor = align_scene(model, noise_only, None)
    rows.append(("noise floor", *error_stats({n: a.points for n, a in floor.images.items()}), 1.0, 0.0))

    print(f"\n{args.views} views at {args.width}x{args.height}, prior noise {args.noise:.3f} of depth\n")
    print("| alignment | median error / depth | within 1% of depth | pixels kept | seconds |")
    print("|---|---|---|---|---|")
    for label, median, within, kept, seconds in rows:
        print(f"| {label} | {median:.4f} | {within:.3f} | {kept:.3f} | {seconds:.2f} |")


if __name__ == "__main__":
    main(tyro.cli(Args))
