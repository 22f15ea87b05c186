"""Runs the processing stages in order, each skipped when its fingerprint is current."""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pycolmap
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from spars_ns import __version__
from spars_ns.align import AlignedPrior, align_scene, correspondences, depth_in_camera
from spars_ns.errors import InputError
from spars_ns.export import sfm_points, transforms_dict, write_transforms
from spars_ns.figures import residual_picture
from spars_ns.images import ImageRecord, file_sha1, ingest_image, list_images, scene_name
from spars_ns.options import ProcessConfig, ProcessOptions, check_options
from spars_ns.ply import SOURCE_GLOBAL, SOURCE_REFINE, SOURCE_REGION, SOURCE_SFM, write_points_ply
from spars_ns.priors import DensePrior
from spars_ns.priors.files import load_file_prior
from spars_ns.priors.mast3r import load_model, predict_priors
from spars_ns.refine import RefinedPrior, RefineView, refine_depths
from spars_ns.regions import SamRegions, superpixel_regions
from spars_ns.scene import SceneFolder, atomic_dir, atomic_write_text, depth_confidence_path, fingerprint, library_versions
from spars_ns.sfm import run_sfm

log = logging.getLogger(__name__)


def split_names(names: list[str], test_every: int, test_views: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """(train, test) by sorted name: the named test views, or else indices 0, N, 2N, ..."""
    names = sorted(names)
    if test_views:  # by the scene's stem: the scene's copy may be renamed (scene_name) or rewritten as PNG
        by_stem = {Path(scene_name(n)).stem: n for n in names}
        missing = [v for v in test_views if Path(scene_name(v)).stem not in by_stem]
        if missing:
            raise InputError(f"--test-views names photos that are not in the image folder: {', '.join(missing)}")
        test = [by_stem[Path(scene_name(v)).stem] for v in test_views]
    else:
        test = [n for i, n in enumerate(names) if test_every and i % test_every == 0]
    train = [n for n in names if n not in test]
    if len(train) < 2:
        chosen = "--test-views" if test_views else f"--test-every {test_every}"
        raise InputError(f"{chosen} leaves {len(train)} training image(s) of {len(names)}; SfM needs at least 2.")
    return train, test


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        transient=True,
    )


def ingest_stage(scene: SceneFolder, images_folder: Path, sources: list[Path]) -> tuple[list[ImageRecord], str]:
    """The scene's copies of `sources` (the photos of `images_folder`, from `list_images`)."""
    hashes = [file_sha1(p) for p in sources]
    stage_fp = fingerprint("ingest", __version__, [(p.name, h) for p, h in zip(sources, hashes)])
    if not scene.begin("ingest", stage_fp, [scene.images_dir, scene.images_json]):
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


def sfm_stage(
    scene: SceneFolder, records: list[ImageRecord], train: list[str], test: list[str], options: ProcessOptions, upstream: str,
) -> str:
    config = options.sfm
    learned = asdict(options.learned_features) if options.features != "sift" else None
    stage_fp = fingerprint("sfm", __version__, upstream, asdict(config), options.features, learned, train, test, pycolmap.__version__)
    report_path = scene.sfm_dir / "report.json"
    outputs = [scene.sparse_dir, scene.sparse_with_test_dir, report_path]
    if not scene.begin("sfm", stage_fp, outputs):
        log.info("sfm: cameras unchanged, skipping")
        return stage_fp

    start = time.perf_counter()
    with _progress() as progress:
        task = progress.add_task(f"SfM on {len(train)} training views", total=None)
        with atomic_dir(scene.sfm_dir) as work:
            result = run_sfm(
                scene.images_dir, records, train, test, work, config,
                on_attempt=lambda i: progress.update(task, description=f"SfM on {len(train)} training views, initial pair {i + 1}"),
                features=options.features, learned=options.learned_features,
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
        "sfm", stage_fp, {**asdict(config), "features": options.features, "learned_features": learned}, time.perf_counter() - start,
        {
            "train_registered": len(report["registered_train"]), "train_total": len(train),
            "test_registered": len(registered_test), "test_total": len(test),
            "points3D": report["points3D"], "init_pairs_tried": result.init_pairs_tried,
        },
        library_versions("pycolmap"),
    )
    return stage_fp


def registered_train(scene: SceneFolder) -> tuple[pycolmap.Reconstruction, list[pycolmap.Image]]:
    model = pycolmap.Reconstruction(scene.sparse_dir)
    return model, sorted((im for im in model.images.values() if im.has_pose), key=lambda im: im.name)


def prior_stage(scene: SceneFolder, config: ProcessConfig, upstream: str) -> str | None:
    """Dense priors of the registered training views, into prior/<stem>.npz."""
    if config.prior == "none":
        scene.clear("prior", [scene.prior_dir])
        return None
    model, images = registered_train(scene)
    if config.prior == "files":
        sources = sorted(p for p in config.prior_dir.iterdir() if p.suffix in (".npy", ".npz"))
        settings = [(p.name, file_sha1(p)) for p in sources]
    else:
        settings = asdict(config.mast3r)
    stage_fp = fingerprint("prior", __version__, upstream, config.prior, settings)
    if not scene.begin("prior", stage_fp, [scene.prior_dir]):
        return stage_fp

    start = time.perf_counter()
    with atomic_dir(scene.prior_dir) as tmp, _progress() as progress:
        task = progress.add_task(f"Dense prior ({config.prior})", total=len(images))
        if config.prior == "files":
            priors = []
            for image in images:
                priors.append(load_file_prior(config.prior_dir, image.name, model.camera(image.camera_id)))
                progress.advance(task)
        else:
            network = load_model(config.mast3r.checkpoint, config.mast3r.device)
            priors = predict_priors([scene.images_dir / im.name for im in images], network, config.mast3r, tmp / "cache")
            shutil.rmtree(tmp / "cache")
            progress.update(task, completed=len(images))
        for image, prior in zip(images, priors):
            prior.save(tmp / f"{Path(image.name).stem}.npz")
    versions = library_versions("instantsplat", "torch") if config.prior == "mast3r" else {}
    scene.record("prior", stage_fp, {"prior": config.prior, "settings": settings}, time.perf_counter() - start,
                 {"images": len(images)}, versions)
    return stage_fp


def _region_proposer(config: ProcessConfig, working_images: dict[str, np.ndarray]):
    """(image name, prior) -> the proposer of that image's regions, or None for global alignment."""
    if config.alignment != "two-stage":
        return None
    sam = SamRegions(config.region_options) if config.regions == "sam" else None

    def proposer_for(name: str, prior: DensePrior):
        image = working_images[name]
        if sam is not None:
            return lambda outliers: [sam(image, outliers)]
        return lambda _outliers: superpixel_regions(image, config.region_options)

    return proposer_for


def align_stage(scene: SceneFolder, config: ProcessConfig, upstream: str | None) -> str | None:
    """Aligned priors into align/: per image points, depth, region ids, inlier mask, residual picture."""
    if upstream is None or config.alignment == "none":
        scene.clear("align", [scene.align_dir])
        return None
    region_settings = (config.regions, asdict(config.region_options)) if config.alignment == "two-stage" else None
    stage_fp = fingerprint("align", __version__, upstream, config.alignment, region_settings, asdict(config.align))
    if not scene.begin("align", stage_fp, [scene.align_dir / "report.json"]):
        return stage_fp

    start = time.perf_counter()
    model, images = registered_train(scene)
    priors = {im.name: DensePrior.load(scene.prior_dir / f"{Path(im.name).stem}.npz") for im in images}
    working_images = {
        name: prior.resample(np.asarray(Image.open(scene.images_dir / name).convert("RGB"))) for name, prior in priors.items()
    }
    result = align_scene(model, priors, _region_proposer(config, working_images), config.align)
    with atomic_dir(scene.align_dir) as tmp:
        (tmp / "residuals").mkdir()
        for image in images:
            aligned = result.images.get(image.name)
            if aligned is None:
                continue
            prior, stem = priors[image.name], Path(image.name).stem
            depth = depth_in_camera(aligned.points, image.cam_from_world().matrix())
            AlignedPrior(aligned.points, depth.astype(np.float32), prior.conf, aligned.region_ids, aligned.inlier_mask).save(
                tmp / f"{stem}.npz"
            )
            picture = residual_picture(
                working_images[image.name],
                prior.to_working(aligned.correspondences_xy), aligned.residual_global, aligned.residual_final,
                result.threshold,
            )
            picture.save(tmp / "residuals" / f"{stem}.png")
        report = {
            "inlier_threshold": result.threshold,
            "images": {name: a.report for name, a in result.images.items()},
            "sfm_points_only": result.skipped,
        }
        atomic_write_text(tmp / "report.json", json.dumps(report, indent=2))
    for name, why in result.skipped.items():
        log.warning("%s keeps its SfM points only: %s", name, why)
    reports = list(report["images"].values())
    scene.record(
        "align", stage_fp, {"alignment": config.alignment, "regions": region_settings, **asdict(config.align)},
        time.perf_counter() - start,
        {
            "aligned": len(reports), "sfm_only": len(result.skipped),
            "regions_accepted": sum(r["regions_accepted"] for r in reports),
            "regions_rejected": sum(r["regions_rejected"] for r in reports),
        },
        library_versions("pycolmap", "scikit-image", "segment-anything"),
    )
    return stage_fp


def working_intrinsics(camera: pycolmap.Camera, prior: DensePrior) -> np.ndarray:
    """Pinhole intrinsics of the camera at the prior's working resolution (distortion ignored)."""
    (sx, sy), (ox, oy) = prior.scale, prior.offset
    return np.array([
        [camera.focal_length_x / sx, 0, (camera.principal_point_x - ox) / sx],
        [0, camera.focal_length_y / sy, (camera.principal_point_y - oy) / sy],
        [0, 0, 1],
    ])


def refine_stage(scene: SceneFolder, config: ProcessConfig, prior_fp: str | None, align_fp: str | None) -> str | None:
    """Refined depth: refine/<stem>.npz at working resolution; depth/<stem>.npy and the prior's
    confidence, depth/<stem>.confidence.npy, at image size."""
    if config.refine == "none":
        scene.clear("refine", [scene.refine_dir, scene.depth_dir])
        return None
    kind = "depth" if align_fp else config.refine_input
    stage_fp = fingerprint("refine", __version__, prior_fp, align_fp, config.refine, kind, asdict(config.refine_options))
    if not scene.begin("refine", stage_fp, [scene.refine_dir, scene.depth_dir]):
        return stage_fp

    start = time.perf_counter()
    model, images = registered_train(scene)
    priors = {im.name: DensePrior.load(scene.prior_dir / f"{Path(im.name).stem}.npz") for im in images}
    views, names = [], []
    for image in images:
        prior, stem = priors[image.name], Path(image.name).stem
        if align_fp:
            aligned = scene.align_dir / f"{stem}.npz"
            if not aligned.exists():
                continue  # kept SfM points only: nothing to refine
            values = AlignedPrior.load(aligned).depth
        else:
            values = prior.pts3d[..., 2]
        xy, world = correspondences(model, image)
        cam_from_world = image.cam_from_world().matrix()
        views.append(RefineView(
            values, prior.conf, working_intrinsics(model.camera(image.camera_id), prior), cam_from_world,
            prior.to_working(xy), depth_in_camera(world, cam_from_world),
            np.array([p.point3D_id for p in image.points2D if p.has_point3D()], np.int64), world,
        ))
        names.append(image.name)
    if not views:
        raise InputError(
            f"--refine {config.refine}: no training view has depth to refine; the alignment kept SfM points only "
            f"for every view ({scene.align_dir / 'report.json'} says why). Use --refine none, or check the prior."
        )
    with _progress() as progress:
        progress.add_task(f"Refining depth of {len(views)} views ({config.refine})", total=None)
        results = refine_depths(views, config.refine, kind, config.refine_options)

    all_model = pycolmap.Reconstruction(scene.sparse_with_test_dir)
    refined = dict(zip(names, results))
    with atomic_dir(scene.refine_dir) as working, atomic_dir(scene.depth_dir) as full:
        for image in all_model.images.values():
            stem = Path(image.name).stem
            camera = all_model.camera(image.camera_id)
            depth = np.zeros((camera.height, camera.width), np.float32)  # 0: no depth for this pixel
            result = refined.get(image.name)
            if result is not None and not result.status.startswith("unrefined"):
                prior = priors[image.name]
                depth = np.nan_to_num(prior.resample_to_original(result.depth, camera.width, camera.height), nan=0.0)
                points = unproject_working(result.depth, views[names.index(image.name)])
                aligned_points = scene.align_dir / f"{stem}.npz"
                if align_fp and aligned_points.exists():  # seed points only where alignment left none
                    points[np.isfinite(AlignedPrior.load(aligned_points).points).all(-1)] = np.nan
                RefinedPrior(points, result.depth, prior.conf).save(working / f"{stem}.npz")
                confidence = prior.resample_to_original(prior.conf, camera.width, camera.height)
                np.save(depth_confidence_path(full / f"{stem}.npy"), np.nan_to_num(confidence, nan=0.0))
            np.save(full / f"{stem}.npy", depth.astype(np.float32))
        corrected = {
            name: {"cam_from_world": r.cam_from_world.tolist() if r.cam_from_world is not None else None,
                   "focal_scale": r.focal_scale}
            for name, r in refined.items() if not r.status.startswith("unrefined")
        }
        if config.refine_options.refine_poses or config.refine_options.refine_focal:
            atomic_write_text(working / "cameras.json", json.dumps(corrected, indent=2))
    per_image = {
        name: {"status": r.status, "scale": r.scale, "shift": r.shift,
               "sfm_abs_rel_before": r.sfm_abs_rel_before, "sfm_abs_rel_after": r.sfm_abs_rel_after}
        for name, r in refined.items()
    }
    for name, entry in per_image.items():
        if entry["status"].startswith("unrefined"):
            log.warning("%s: depth %s", name, entry["status"])
    scene.record(
        "refine", stage_fp, {"refine": config.refine, "input": kind, **asdict(config.refine_options)},
        time.perf_counter() - start, {"views": len(views), "per_image": per_image}, library_versions("torch"),
    )
    return stage_fp


def unproject_working(depth: np.ndarray, view: RefineView) -> np.ndarray:
    """(h, w) depth at working pixels -> (h, w, 3) SfM-frame points (nan where depth is)."""
    h, w = depth.shape
    cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    rays = np.stack([cols, rows, np.ones_like(cols)], -1) @ np.linalg.inv(view.intrinsics).T
    cam = rays * depth[..., None]
    return ((cam - view.cam_from_world[:, 3]) @ view.cam_from_world[:, :3]).astype(np.float32)


def dense_points(scene: SceneFolder, aligned: bool, refined: bool, max_points: int, seed: int) -> tuple[np.ndarray, ...]:
    """(xyz, rgb, confidence, source) sampled from the aligned and refined priors of the stages
    that ran (as the caller knows from their fingerprints), evenly over images."""
    files = [(p, AlignedPrior) for p in sorted(scene.align_dir.glob("*.npz")) if aligned]
    files += [(p, RefinedPrior) for p in sorted(scene.refine_dir.glob("*.npz")) if refined]
    rng = np.random.default_rng(seed)
    chunks = []
    for path, record_type in files:
        record = record_type.load(path)
        valid = np.isfinite(record.points).all(-1) & (record.conf > 0)
        index = np.flatnonzero(valid)
        index = rng.choice(index, min(len(index), max_points // max(len(files), 1)), replace=False)
        image_path = next(scene.images_dir.glob(f"{path.stem}.*"))
        prior = DensePrior.load(scene.prior_dir / path.name)
        colours = prior.resample(np.asarray(Image.open(image_path).convert("RGB"))).reshape(-1, 3)
        chunks.append((record.points.reshape(-1, 3)[index], colours[index], record.conf.ravel()[index], record.sources().ravel()[index]))
    if not chunks:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.float32), np.zeros(0, np.uint8)
    return tuple(np.concatenate(parts) for parts in zip(*chunks))


def export_stage(
    scene: SceneFolder, train: list[str], test: list[str], upstream: str, dense_fp: list[str | None], config: ProcessConfig
) -> str:
    """transforms.json and points.ply; `dense_fp` are the align and refine fingerprints (None when not run)."""
    stage_fp = fingerprint("export", __version__, upstream, dense_fp, config.max_dense_points)
    if not scene.begin("export", stage_fp, [scene.transforms_path, scene.points_path]):
        return stage_fp
    start = time.perf_counter()
    model = pycolmap.Reconstruction(scene.sparse_with_test_dir)
    xyz, rgb = sfm_points(pycolmap.Reconstruction(scene.sparse_dir))
    confidence, source = np.ones(len(xyz), np.float32), np.full(len(xyz), SOURCE_SFM, np.uint8)
    if any(dense_fp):
        dense = dense_points(scene, dense_fp[0] is not None, dense_fp[1] is not None, config.max_dense_points, config.sfm.seed)
        xyz, rgb, confidence, source = (np.concatenate([a, b]) for a, b in zip((xyz, rgb, confidence, source), dense))
    write_points_ply(scene.points_path, xyz, rgb, confidence, source.astype(np.uint8))
    with_depth = dense_fp[1] is not None
    cameras_path = scene.refine_dir / "cameras.json"
    corrected = json.loads(cameras_path.read_text()) if with_depth and cameras_path.exists() else {}
    transforms = transforms_dict(model, train, test, scene.points_path.name, with_depth, corrected)
    write_transforms(scene.transforms_path, transforms)
    scene.record(
        "export", stage_fp, {"max_dense_points": config.max_dense_points}, time.perf_counter() - start,
        {"frames": len(transforms["frames"]), "points": len(xyz), **{
            name: int((source == value).sum()) for name, value in
            (("sfm_points", SOURCE_SFM), ("global_points", SOURCE_GLOBAL), ("region_points", SOURCE_REGION),
             ("refine_points", SOURCE_REFINE))
        }},
        library_versions("plyfile"),
    )
    return stage_fp


def process(config: ProcessConfig) -> SceneFolder:
    """Run every stage whose inputs changed; a stage switched off leaves no outputs and no
    manifest entry. Returns the processed scene."""
    check_options(config)
    images = config.images.resolve()
    output = config.output.resolve()
    if output == images or images in output.parents:
        raise InputError(f"--output {output} must not be the image folder or inside it.")
    if output in images.parents:  # e.g. nerfstudio's layout, proj/images with --output proj: ingest would replace proj/images
        raise InputError(
            f"--images {images} is inside --output {output}; processing rewrites that folder and must never touch your "
            f"photos. Choose an output folder that does not hold them, e.g. --output {output.parent / (output.name + '-spars')}."
        )
    sources = list_images(images)
    split_names([p.name for p in sources], config.test_every, config.test_views)  # refused before any work
    pycolmap.logging.minloglevel = 2  # COLMAP's per-step INFO lines drown the progress display
    scene = SceneFolder(output)
    output.mkdir(parents=True, exist_ok=True)
    with scene.lock():
        scene.remove_leftovers()
        records, ingest_fp = ingest_stage(scene, images, sources)
        train, test = split_names([r.name for r in records], config.test_every, config.test_views)
        sfm_fp = sfm_stage(scene, records, train, test, config, ingest_fp)
        prior_fp = prior_stage(scene, config, sfm_fp)
        align_fp = align_stage(scene, config, prior_fp)
        refine_fp = refine_stage(scene, config, prior_fp, align_fp)
        export_stage(scene, train, test, sfm_fp, [align_fp, refine_fp], config)
    return scene
