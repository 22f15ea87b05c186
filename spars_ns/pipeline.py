"""Runs the processing stages in order, each skipped when its fingerprint is current."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import pycolmap
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from spars_ns import __version__
from spars_ns.errors import InputError
from spars_ns.export import sfm_points, transforms_dict, write_points_ply, write_transforms
from spars_ns.images import ImageRecord, file_sha1, ingest_image, list_images
from spars_ns.scene import SceneFolder, atomic_dir, atomic_write_text, fingerprint, library_versions
from spars_ns.sfm import SfMConfig, run_sfm

log = logging.getLogger(__name__)


@dataclass
class ProcessConfig:
    """Turn a folder of photos into a processed scene (a nerfstudio dataset)."""

    images: Path
    """Folder of input photos (never modified)."""
    output: Path
    """Processed-scene folder to create or update."""
    test_every: int = 0
    """Every Nth image by sorted name (the 1st, N+1th, ...) is held out as a test view; 0: none."""
    prior: Literal["none"] = "none"
    """Dense prior: none (SfM points only)."""
    sfm: SfMConfig = field(default_factory=SfMConfig)


def split_names(names: list[str], test_every: int) -> tuple[list[str], list[str]]:
    """(train, test) by sorted name: indices 0, N, 2N, ... are test views."""
    if test_every < 0:
        raise InputError(f"--test-every must be 0 (no test views) or positive, got {test_every}.")
    names = sorted(names)
    test = [n for i, n in enumerate(names) if test_every and i % test_every == 0]
    train = [n for n in names if n not in test]
    if len(train) < 2:
        raise InputError(f"--test-every {test_every} leaves {len(train)} training image(s) of {len(names)}; SfM needs at least 2.")
    return train, test


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        transient=True,
    )


def ingest_stage(scene: SceneFolder, images_folder: Path) -> tuple[list[ImageRecord], str]:
    sources = list_images(images_folder)
    hashes = [file_sha1(p) for p in sources]
    stage_fp = fingerprint("ingest", __version__, [(p.name, h) for p, h in zip(sources, hashes)])
    if scene.is_current("ingest", stage_fp, [scene.images_dir, scene.images_json]):
        log.info("ingest: %d images unchanged, skipping", len(sources))
        return [ImageRecord(**r) for r in json.loads(scene.images_json.read_text())], stage_fp

    start = time.perf_counter()
    with atomic_dir(scene.images_dir) as tmp, _progress() as progress:
        task = progress.add_task("Reading images", total=len(sources))
        records = []
        for source, sha1 in zip(sources, hashes):
            records.append(ingest_image(source, tmp, sha1))
            progress.advance(task)
    atomic_write_text(scene.images_json, json.dumps([r.to_json() for r in records], indent=2))
    rewritten = [r for r in records if r.rewritten]
    for r in rewritten:
        log.info("%s: %s", r.name, r.rewritten)
    scene.record(
        "ingest", stage_fp, {"images": str(images_folder)}, time.perf_counter() - start,
        {"images": len(records), "rewritten": len(rewritten), "with_focal_prior": sum(r.focal_prior is not None for r in records)},
        library_versions("pillow"),
    )
    return records, stage_fp


def sfm_stage(scene: SceneFolder, records: list[ImageRecord], train: list[str], test: list[str], config: SfMConfig, upstream: str) -> str:
    stage_fp = fingerprint("sfm", __version__, upstream, asdict(config), train, test, pycolmap.__version__)
    report_path = scene.sfm_dir / "report.json"
    outputs = [scene.sparse_dir, scene.sparse_with_test_dir, report_path]
    if scene.is_current("sfm", stage_fp, outputs):
        log.info("sfm: cameras unchanged, skipping")
        return stage_fp

    start = time.perf_counter()
    with _progress() as progress:
        task = progress.add_task(f"SfM on {len(train)} training views", total=None)
        with atomic_dir(scene.sfm_dir) as work:
            result = run_sfm(
                scene.images_dir, records, train, test, work, config,
                on_attempt=lambda i: progress.update(task, description=f"SfM on {len(train)} training views, initial pair {i + 1}"),
            )
            registered_test = sorted(n for n in test if n not in result.unregistered)
            report = {
                "registered_train": sorted(result.train.image(i).name for i in result.train.reg_image_ids()),
                "registered_test": registered_test,
                "unregistered": result.unregistered,
                "init_pairs_tried": result.init_pairs_tried,
                "points3D": result.train.num_points3D(),
                "mean_reprojection_error_px": result.train.compute_mean_reprojection_error(),
                "cameras": {int(c.camera_id): c.summary() for c in result.train.cameras.values()},
            }
            atomic_write_text(work / "report.json", json.dumps(report, indent=2))
        for model, target in ((result.train, scene.sparse_dir), (result.with_test, scene.sparse_with_test_dir)):
            with atomic_dir(target) as tmp:
                model.write(tmp)
    scene.record(
        "sfm", stage_fp, asdict(config), time.perf_counter() - start,
        {
            "train_registered": len(report["registered_train"]), "train_total": len(train),
            "test_registered": len(registered_test), "test_total": len(test),
            "points3D": report["points3D"], "init_pairs_tried": result.init_pairs_tried,
        },
        library_versions("pycolmap"),
    )
    return stage_fp


def export_stage(scene: SceneFolder, train: list[str], test: list[str], upstream: str) -> str:
    stage_fp = fingerprint("export", __version__, upstream)
    if scene.is_current("export", stage_fp, [scene.transforms_path, scene.points_path]):
        return stage_fp
    start = time.perf_counter()
    model = pycolmap.Reconstruction(scene.sparse_with_test_dir)
    xyz, rgb = sfm_points(pycolmap.Reconstruction(scene.sparse_dir))
    write_points_ply(scene.points_path, xyz, rgb)
    transforms = transforms_dict(model, train, test, scene.points_path.name)
    write_transforms(scene.transforms_path, transforms)
    scene.record(
        "export", stage_fp, {}, time.perf_counter() - start,
        {"frames": len(transforms["frames"]), "points": len(xyz)}, library_versions("plyfile"),
    )
    return stage_fp


def process(config: ProcessConfig) -> SceneFolder:
    """Run every stage whose inputs changed; returns the processed scene."""
    images = config.images.resolve()
    output = config.output.resolve()
    if output == images or images in output.parents:
        raise InputError(f"--output {output} must not be the image folder or inside it.")
    pycolmap.logging.minloglevel = 2  # COLMAP's per-step INFO lines drown the progress display
    scene = SceneFolder(output)
    output.mkdir(parents=True, exist_ok=True)
    records, ingest_fp = ingest_stage(scene, images)
    train, test = split_names([r.name for r in records], config.test_every)
    sfm_fp = sfm_stage(scene, records, train, test, config.sfm, ingest_fp)
    export_stage(scene, train, test, sfm_fp)
    return scene
