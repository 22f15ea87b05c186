"""Export: the scene as a nerfstudio dataset, `transforms.json` (SfM's cameras and those placed
from the prior) and `points.ply` (SfM points and the aligned and refined priors' points, format in `ply.py`),
and for photos over 1,600 px the smaller copies nerfstudio's dataparser picks from (`images_2/`, `depths_2/`,
..., as ns-process-data makes them): the first within 1,600 px, or the one `--downscale-factor` names.

The world frame is COLMAP's (no axis permutation); nerfstudio's dataparser orients and
scales poses and points together, so they stay consistent.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pycolmap
from PIL import Image

from spars_ns.errors import SfMError
from spars_ns.geometry import opencv_to_opengl_c2w
from spars_ns.ply import SOURCE_GLOBAL, SOURCE_REFINE, SOURCE_REGION, SOURCE_SFM, write_points_ply
from spars_ns.scene import (
    DOWNSCALE_FACTORS,
    SceneFolder,
    atomic_dir,
    atomic_write_text,
    depth_confidence_path,
    read_depth_map,
)
from spars_ns.stages.align.stage import AlignedPrior, aligned_paths
from spars_ns.stages.base import SEED, Stage, progress
from spars_ns.stages.cameras.stage import no_depth_path, prior_cameras
from spars_ns.stages.ingest.stage import load_records
from spars_ns.stages.prior.dense_prior import DensePrior
from spars_ns.stages.prior.stage import prior_path
from spars_ns.stages.refine.stage import RefinedPrior, cameras_path, refined_paths

if TYPE_CHECKING:
    from spars_ns.options import ProcessConfig

# COLMAP parameter names -> nerfstudio's OPENCV intrinsics.
_PARAMS_TO_OPENCV = {
    "SIMPLE_PINHOLE": ("f", "cx", "cy"),
    "PINHOLE": ("fx", "fy", "cx", "cy"),
    "SIMPLE_RADIAL": ("f", "cx", "cy", "k1"),
    "RADIAL": ("f", "cx", "cy", "k1", "k2"),
    "OPENCV": ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2"),
}


def camera_to_opencv(camera: pycolmap.Camera) -> dict:
    """nerfstudio per-frame intrinsics (OPENCV model) of a COLMAP camera."""
    names = _PARAMS_TO_OPENCV.get(camera.model_name)
    if names is None:
        raise SfMError(
            f"Camera model {camera.model_name} cannot be exported; use one of {', '.join(_PARAMS_TO_OPENCV)}."
        )
    values = dict(zip(names, map(float, camera.params)))
    focal_x = values.get("fx", values.get("f"))
    focal_y = values.get("fy", values.get("f"))
    return {
        "fl_x": focal_x,
        "fl_y": focal_y,
        "cx": values["cx"],
        "cy": values["cy"],
        "w": int(camera.width),
        "h": int(camera.height),
        "k1": values.get("k1", 0.0),
        "k2": values.get("k2", 0.0),
        "p1": values.get("p1", 0.0),
        "p2": values.get("p2", 0.0),
    }


def transforms_dict(
    model: pycolmap.Reconstruction,
    train_names: list[str],
    test_names: list[str],
    ply_name: str,
    with_depth: bool = False,
    corrected: dict | None = None,
    from_prior: dict | None = None,
) -> dict:
    """nerfstudio `transforms.json` for the registered images of `model`, and the training views
    placed from the prior (`from_prior`: name -> (camera, cam_from_world 3x4, depth path)).

    With `with_depth`, every frame names `depth/<stem>.npy` (nerfstudio needs depth for all
    frames or none; 0 marks pixels, or whole test frames, without depth), a frame from the
    prior its own all-0 map. `corrected` maps image names to cameras refined with the depth:
    {"cam_from_world": 3x4 or None, "focal_scale": f}. Each frame's `camera_source` says
    whether SfM or the prior placed it.

    With no test views, training views double as val/test views (as nerfstudio's own
    `eval_mode all` does) and `eval_on_train_views` says so.
    """
    frames = []
    for image in model.images.values():
        if not image.has_pose:
            continue
        correction = (corrected or {}).get(image.name, {})
        cam_from_world = correction.get("cam_from_world") or image.cam_from_world().matrix()
        frame = {
            "file_path": f"images/{image.name}",
            "transform_matrix": opencv_to_opengl_c2w(np.asarray(cam_from_world)).tolist(),
            "colmap_im_id": int(image.image_id),
            "camera_source": "sfm",
        }
        frame.update(camera_to_opencv(model.camera(image.camera_id)))
        frame["fl_x"] *= correction.get("focal_scale", 1.0)
        frame["fl_y"] *= correction.get("focal_scale", 1.0)
        if with_depth:
            frame["depth_file_path"] = f"depth/{Path(image.name).stem}.npy"
        frames.append(frame)
    for name, (camera, cam_from_world, depth_path) in (from_prior or {}).items():
        frame = {
            "file_path": f"images/{name}",
            "transform_matrix": opencv_to_opengl_c2w(np.asarray(cam_from_world)).tolist(),
            "camera_source": "prior",
            **camera_to_opencv(camera),
        }
        if with_depth:
            frame["depth_file_path"] = depth_path
        frames.append(frame)
    frames.sort(key=lambda frame: frame["file_path"])
    placed = {image.name for image in model.images.values() if image.has_pose} | set(from_prior or {})
    train = [f"images/{n}" for n in train_names if n in placed]
    test = [f"images/{n}" for n in test_names if n in placed]
    return {
        "camera_model": "OPENCV",
        "frames": frames,
        "train_filenames": train,
        "val_filenames": test or train,
        "test_filenames": test or train,
        "eval_on_train_views": not test,
        "ply_file_path": ply_name,
    }


# nerfstudio's dataparser trains photos whose larger side is over this on the first of `images_2/`,
# `images_4/`, ... that brings them within it (its MAX_AUTO_RESOLUTION; it makes no such folder itself,
# ns-process-data does), and reads each frame's depth from `depths_<factor>/` then.
NERFSTUDIO_MAX_AUTO_RESOLUTION = 1600
# The copies ns-process-data makes (its --num-downscales 3), which `--downscale-factor` picks from.
PROCESS_DATA_FACTORS = (2, 4, 8)


def downscale_factors(largest_side: int) -> list[int]:
    """The factors a scene's smaller copies are made at for photos of this size: none within
    NERFSTUDIO_MAX_AUTO_RESOLUTION (they train at their own size); over it ns-process-data's, and more
    where nerfstudio's choice walks further (2, 4, ... up to the first within it)."""
    needed = [f for f in DOWNSCALE_FACTORS if largest_side / (f // 2) > NERFSTUDIO_MAX_AUTO_RESOLUTION]
    return sorted({*PROCESS_DATA_FACTORS, *needed}) if needed else []


def write_downscaled(scene: SceneFolder, frames: list[dict], factors: list[int]) -> None:
    """The frames' photos, and their depth maps with their confidence where they have them, at each
    of `factors`."""
    with_depth = any("depth_file_path" in frame for frame in frames)
    with progress() as bar:
        task = bar.add_task("Smaller copies for nerfstudio", total=len(factors) * len(frames))
        for factor in factors:
            with ExitStack() as stack:
                images = stack.enter_context(atomic_dir(scene.downscaled_dir("images", factor)))
                depths = stack.enter_context(atomic_dir(scene.downscaled_dir("depths", factor))) if with_depth else None
                for frame in frames:
                    downscale_frame(scene.root, frame, factor, images, depths)
                    bar.advance(task)


def downscale_frame(root: Path, frame: dict, factor: int, images: Path, depths: Path | None) -> None:
    """A frame's photo at 1/factor into `images`, and where `depths` is given its depth map and confidence."""
    photo = root / frame["file_path"]
    downscale_photo(photo, images / photo.name, factor)
    if depths is None:
        return
    depth_path = root / frame["depth_file_path"]
    confidence_path = depth_confidence_path(depth_path)
    confidence = read_depth_map(confidence_path) if confidence_path.exists() else None
    depth, confidence = downscale_depth(read_depth_map(depth_path), confidence, factor)
    np.save(depths / depth_path.name, depth)
    if confidence is not None:
        np.save(depth_confidence_path(depths / depth_path.name), confidence)


def downscale_photo(source: Path, target: Path, factor: int) -> None:
    """The photo at 1/factor of its size, each pixel the mean of a factor x factor block (the rows and
    columns that fill no block dropped, as nerfstudio rounds the size down): pixel centres then lie
    where nerfstudio's cameras scaled by 1/factor put them."""
    with Image.open(source) as photo:
        kind = photo.format
        width, height = photo.width // factor * factor, photo.height // factor * factor
        reduced = photo.crop((0, 0, width, height)).reduce(factor)
    reduced.save(target, format=kind, **({"quality": 95} if kind == "JPEG" else {}))


def downscale_depth(
    depth: np.ndarray, confidence: np.ndarray | None, factor: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """A depth map (0 or nan: unknown) and its confidence at 1/factor of their size: each factor x factor
    block's lower median over its known depths, with that pixel's confidence; 0 where none is known.
    One of the block's own samples, never a blend: a mean would put points between a foreground edge
    and the background behind it, and take the unknown 0s in."""
    height, width = depth.shape[0] // factor, depth.shape[1] // factor

    def blocks(values: np.ndarray) -> np.ndarray:
        cropped = values[: height * factor, : width * factor]
        return cropped.reshape(height, factor, width, factor).transpose(0, 2, 1, 3).reshape(height, width, -1)

    samples = blocks(np.where(depth > 0, depth, np.inf))  # unknown sorts last
    known = np.isfinite(samples).sum(-1)
    order = np.argsort(samples, -1, kind="stable")
    pick = np.take_along_axis(order, (np.maximum(known, 1) - 1)[..., None] // 2, -1)
    reduced = np.where(known > 0, np.take_along_axis(samples, pick, -1)[..., 0], 0).astype(np.float32)
    if confidence is None:
        return reduced, None
    picked = np.take_along_axis(blocks(confidence), pick, -1)[..., 0]
    return reduced, np.where(known > 0, picked, 0).astype(np.float32)


def write_transforms(path, transforms: dict) -> None:
    atomic_write_text(path, json.dumps(transforms, indent=2))


def sfm_points(model: pycolmap.Reconstruction) -> tuple[np.ndarray, np.ndarray]:
    """(xyz float32 (N, 3), rgb uint8 (N, 3)) of the model's 3D points."""
    points = list(model.points3D.values())
    xyz = np.array([p.xyz for p in points], np.float32).reshape(-1, 3)
    rgb = np.array([p.color for p in points], np.uint8).reshape(-1, 3)
    return xyz, rgb


def dense_points(
    scene: SceneFolder, aligned: bool, refined: bool, max_points: int, seed: int
) -> tuple[np.ndarray, ...]:
    """(xyz, rgb, confidence, source) sampled from the aligned and refined priors of the stages
    that ran (as the caller knows from their fingerprints), evenly over images."""
    files = [(p, AlignedPrior) for p in aligned_paths(scene) if aligned]
    files += [(p, RefinedPrior) for p in refined_paths(scene) if refined]
    rng = np.random.default_rng(seed)
    chunks = []
    for path, record_type in files:
        record = record_type.load(path)
        valid = np.isfinite(record.points).all(-1) & (record.conf > 0)
        index = np.flatnonzero(valid)
        index = rng.choice(index, min(len(index), max_points // max(len(files), 1)), replace=False)
        image_path = next(scene.images_dir.glob(f"{path.stem}.*"))
        prior = DensePrior.load(prior_path(scene, path.name))
        colours = prior.resample(np.asarray(Image.open(image_path).convert("RGB"))).reshape(-1, 3)
        chunks.append(
            (
                record.points.reshape(-1, 3)[index],
                colours[index],
                record.conf.ravel()[index],
                record.sources().ravel()[index],
            )
        )
    if not chunks:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.float32), np.zeros(0, np.uint8)
    return tuple(np.concatenate(parts) for parts in zip(*chunks))


class ExportStage(Stage):
    name = "export"
    libraries = ("plyfile",)

    def __init__(
        self,
        scene: SceneFolder,
        config: ProcessConfig,
        train: list[str],
        test: list[str],
        aligned: bool,
        refined: bool,
        cameras: bool,
    ):
        super().__init__(scene, config)
        self.train, self.test = train, test
        self.aligned, self.refined, self.cameras = aligned, refined, cameras  # which of those stages ran

    @cached_property
    def factors(self) -> list[int]:
        """The smaller copies' factors for the ingested photos (read once they are: after ingest)."""
        return downscale_factors(max((max(r.width, r.height) for r in load_records(self.scene)), default=0))

    def outputs(self) -> list[Path]:
        kinds = ("images", "depths") if self.refined else ("images",)  # depth maps come with refinement
        downscaled = [self.scene.downscaled_dir(kind, f) for f in self.factors for kind in kinds]
        return [self.scene.transforms_path, self.scene.points_path, *downscaled]

    def settings(self) -> dict:
        return {"max_dense_points": self.config.max_dense_points, "downscale_factors": self.factors}

    def run(self) -> dict:
        scene = self.scene
        model = pycolmap.Reconstruction(scene.sparse_with_test_dir)
        xyz, rgb = sfm_points(pycolmap.Reconstruction(scene.sparse_dir))
        confidence, source = np.ones(len(xyz), np.float32), np.full(len(xyz), SOURCE_SFM, np.uint8)
        if self.aligned or self.refined:
            dense = dense_points(scene, self.aligned, self.refined, self.config.max_dense_points, SEED)
            xyz, rgb, confidence, source = (
                np.concatenate([a, b]) for a, b in zip((xyz, rgb, confidence, source), dense)
            )
        write_points_ply(scene.points_path, xyz, rgb, confidence, source.astype(np.uint8))
        corrected_path = cameras_path(scene)
        corrected = json.loads(corrected_path.read_text()) if self.refined and corrected_path.exists() else {}
        from_prior = {}
        if self.cameras:
            from_prior = {
                name: (camera, cam_from_world, no_depth_path(scene, name).relative_to(scene.root).as_posix())
                for name, (camera, cam_from_world) in prior_cameras(scene).items()
            }
        transforms = transforms_dict(
            model, self.train, self.test, scene.points_path.name, self.refined, corrected, from_prior
        )
        write_transforms(scene.transforms_path, transforms)
        write_downscaled(scene, transforms["frames"], self.factors)
        return {
            "frames": len(transforms["frames"]),
            "downscaled": self.factors,
            "prior_cameras": len(from_prior),
            "points": len(xyz),
            **{
                name: int((source == value).sum())
                for name, value in (
                    ("sfm_points", SOURCE_SFM),
                    ("global_points", SOURCE_GLOBAL),
                    ("region_points", SOURCE_REGION),
                    ("refine_points", SOURCE_REFINE),
                )
            },
        }
