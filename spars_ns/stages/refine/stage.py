"""Refinement: `refine/<stem>.npz` (a `RefinedPrior`) at the prior's working resolution, and at image
size `depth/<stem>.npy` (0 where unknown) with the prior's confidence beside it; `refine/cameras.json`
when poses or focal lengths are refined."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pycolmap

from spars_ns.errors import InputError
from spars_ns.geometry import inverse_transform, pixel_centres, unproject, working_intrinsics
from spars_ns.ply import SOURCE_REFINE
from spars_ns.scene import NpzRecord, SceneFolder, atomic_dir, atomic_write_text, depth_confidence_path
from spars_ns.stages.align.similarity import correspondences, depth_in_camera
from spars_ns.stages.align.stage import AlignedPrior, aligned_path, report_path
from spars_ns.stages.base import Stage, progress
from spars_ns.stages.prior.dense_prior import DensePrior
from spars_ns.stages.prior.stage import load_priors
from spars_ns.stages.refine.frozen_depth import RefineResult, RefineView, refine_depths
from spars_ns.stages.sfm.stage import registered_train

log = logging.getLogger(__name__)


@dataclass
class RefinedPrior(NpzRecord):
    """`refine/<stem>.npz`: a view's refined depth at the prior's working resolution, and its seed
    points where the alignment left none."""

    points: np.ndarray  # (h, w, 3) SfM frame, nan where the alignment has a point or depth is unknown
    depth: np.ndarray  # (h, w) SfM units, nan where unknown
    conf: np.ndarray  # (h, w) the prior's confidence

    def sources(self) -> np.ndarray:
        """(h, w) points.ply source of each pixel's point."""
        return np.full(self.depth.shape, SOURCE_REFINE)


def refined_paths(scene: SceneFolder) -> list[Path]:
    """`refine/<stem>.npz` of every refined view, sorted by name."""
    return sorted(scene.refine_dir.glob("*.npz"))


def cameras_path(scene: SceneFolder) -> Path:
    """Refined poses and focal scales by image name (written only when they are refined)."""
    return scene.refine_dir / "cameras.json"


def unproject_working(depth: np.ndarray, view: RefineView) -> np.ndarray:
    """(h, w) depth at working pixels -> (h, w, 3) SfM-frame points (nan where depth is)."""
    points = unproject(pixel_centres(*depth.shape), depth, view.intrinsics)
    return inverse_transform(points, view.cam_from_world).astype(np.float32)


class RefineStage(Stage):
    name = "refine"
    libraries = ("torch",)

    def __init__(self, scene, config, aligned: bool):
        super().__init__(scene, config)
        self.aligned = aligned  # whether the align stage ran: its depth is refined, else the prior's

    @property
    def kind(self) -> str:
        return "depth" if self.aligned else self.config.refine_options.input

    def enabled(self) -> bool:
        return self.config.refine != "none"

    def outputs(self) -> list[Path]:
        return [self.scene.refine_dir, self.scene.depth_dir]

    def settings(self) -> dict:
        return {"refine": self.config.refine, "input": self.kind, "refine_options": asdict(self.config.refine_options)}

    def _views(self, model: pycolmap.Reconstruction, images, priors: dict[str, DensePrior]) -> dict[str, RefineView]:
        """The refinement's inputs by image name: the views with depth to refine."""
        views = {}
        for image in images:
            prior = priors[image.name]
            if self.aligned:
                path = aligned_path(self.scene, image.name)
                if not path.exists():
                    continue  # kept SfM points only: nothing to refine
                values = AlignedPrior.load(path).depth
            else:
                values = prior.pts3d[..., 2]
            xy, world = correspondences(model, image)
            cam_from_world = image.cam_from_world().matrix()
            views[image.name] = RefineView(
                values,
                prior.conf,
                working_intrinsics(model.camera(image.camera_id).calibration_matrix(), prior.scale, prior.offset),
                cam_from_world,
                prior.to_working(xy),
                depth_in_camera(world, cam_from_world),
                np.array([p.point3D_id for p in image.points2D if p.has_point3D()], np.int64),
                world,
            )
        return views

    def run(self) -> dict:
        scene, config = self.scene, self.config
        model, images = registered_train(scene)
        priors = load_priors(scene, images)
        views = self._views(model, images, priors)
        if not views:
            raise InputError(
                f"--refine {config.refine}: no training view has depth to refine; the alignment kept SfM points only "
                f"for every view ({report_path(scene)} says why). Use --refine none, or check the prior."
            )
        with progress() as bar:
            bar.add_task(f"Refining depth of {len(views)} views ({config.refine})", total=None)
            refined = dict(
                zip(views, refine_depths(list(views.values()), config.refine, self.kind, config.refine_options))
            )
        self._write(refined, views, priors)
        per_image = {
            name: {
                "status": r.status,
                "scale": r.scale,
                "shift": r.shift,
                "sfm_abs_rel_before": r.sfm_abs_rel_before,
                "sfm_abs_rel_after": r.sfm_abs_rel_after,
            }
            for name, r in refined.items()
        }
        for name, entry in per_image.items():
            if not refined[name].refined:
                log.warning("%s: depth %s", name, entry["status"])
        return {"views": len(views), "per_image": per_image}

    def _write(
        self, refined: dict[str, RefineResult], views: dict[str, RefineView], priors: dict[str, DensePrior]
    ) -> None:
        """Every view of the model with test views gets a depth map (all 0 where none was refined)."""
        scene = self.scene
        all_model = pycolmap.Reconstruction(scene.sparse_with_test_dir)
        with atomic_dir(scene.refine_dir) as working, atomic_dir(scene.depth_dir) as full:
            for image in all_model.images.values():
                stem = Path(image.name).stem
                camera = all_model.camera(image.camera_id)
                depth = np.zeros((camera.height, camera.width), np.float32)  # 0: no depth for this pixel
                result = refined.get(image.name)
                if result is not None and result.refined:
                    prior = priors[image.name]
                    depth = np.nan_to_num(
                        prior.resample_to_original(result.depth, camera.width, camera.height), nan=0.0
                    )
                    points = unproject_working(result.depth, views[image.name])
                    aligned = aligned_path(scene, image.name)
                    if self.aligned and aligned.exists():  # seed points only where alignment left none
                        points[np.isfinite(AlignedPrior.load(aligned).points).all(-1)] = np.nan
                    RefinedPrior(points, result.depth, prior.conf).save(working / f"{stem}.npz")
                    confidence = prior.resample_to_original(prior.conf, camera.width, camera.height)
                    np.save(depth_confidence_path(full / f"{stem}.npy"), np.nan_to_num(confidence, nan=0.0))
                np.save(full / f"{stem}.npy", depth.astype(np.float32))
            if self.config.refine_options.refine_poses or self.config.refine_options.refine_focal:
                corrected = {
                    name: {
                        "cam_from_world": r.cam_from_world.tolist() if r.cam_from_world is not None else None,
                        "focal_scale": r.focal_scale,
                    }
                    for name, r in refined.items()
                    if r.refined
                }
                atomic_write_text(working / cameras_path(scene).name, json.dumps(corrected, indent=2))
