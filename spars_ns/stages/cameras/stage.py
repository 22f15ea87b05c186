"""Cameras from the prior: `cameras/report.json`, a camera for each training view SfM did not register
whose prior poses it (and why not, for the others), and `cameras/depth/<stem>.npy` for each (all 0).

A prior that poses its views in one shared frame (MASt3R's global alignment, DUSt3R-style files)
places the views SfM left out. A similarity from the prior's frame to SfM's is fitted by LO-RANSAC
on the camera centres of the registered views that the prior poses, and checked on their
orientations; an unregistered view's prior camera is mapped through it, then refined by absolute
pose against the SfM points that its verified matches reach, when they are enough and the refined
pose stays near the mapped one. Its intrinsics are SfM's when it shares a camera with registered
views, else the prior's. Nothing of SfM's changes: these cameras join `transforms.json` as training
views marked `"camera_source": "prior"`, with a camera only. Their depth maps say "unknown" (0)
because nerfstudio takes depth for every frame or for none; they add no seed points.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pycolmap

from spars_ns.geometry import camera_center, rotation_angle_deg
from spars_ns.scene import SceneFolder, atomic_dir, atomic_write_text
from spars_ns.stages.base import SEED, Stage
from spars_ns.stages.prior.dense_prior import DensePrior
from spars_ns.stages.prior.stage import prior_path
from spars_ns.stages.sfm.stage import database_path, match_graph, registered_train

log = logging.getLogger(__name__)

MIN_FIT_VIEWS = 3
"""Registered views the prior must pose to fit its frame onto SfM's."""
CENTRE_INLIER_DISTANCE = 0.1
"""A mapped prior camera centre this far from SfM's (a fraction of the registered cameras' extent) is an outlier."""
MIN_FLATNESS = 0.05
"""Second over first principal spread of the registered camera centres: below it they stand nearly on a line,
about which their centres leave the prior's frame free to turn."""
MAX_ORIENTATION_ERROR_DEG = 5.0
"""Median angle between the mapped prior orientations and SfM's beyond which the fit is refused."""
MIN_POSE_INLIERS = 10
"""2D-3D inliers an absolute pose needs to refine a mapped camera."""
MAX_REFINEMENT_ROTATION_DEG = 10.0
MAX_REFINEMENT_SHIFT = 0.2
"""A refined pose that turns or moves (a fraction of the extent) further from the mapped prior camera is not trusted."""


def report_path(scene: SceneFolder) -> Path:
    return scene.cameras_dir / "report.json"


def no_depth_path(scene: SceneFolder, image_name: str) -> Path:
    return scene.cameras_dir / "depth" / f"{Path(image_name).stem}.npy"


def prior_cameras(scene: SceneFolder) -> dict[str, tuple[pycolmap.Camera, np.ndarray]]:
    """(camera, cam_from_world 3x4) of each view placed from the prior, by image name."""
    cameras = json.loads(report_path(scene).read_text())["cameras"]
    return {
        name: (pycolmap.Camera(**entry["camera"]), np.array(entry["cam_from_world"])) for name, entry in cameras.items()
    }


def fit_prior_frame(
    views: dict[str, tuple[np.ndarray, np.ndarray]],
    extent: float,
    seed: int,
) -> tuple[pycolmap.Sim3d | None, dict]:
    """Similarity SfM-from-prior from views given as name -> (prior cam_from_world, SfM cam_from_world).

    Returns it (None where it cannot be trusted) and what the report says of the fit: the views,
    the inliers, each view's centre and orientation residual, or why there is no fit.
    """
    names = sorted(views)
    if len(names) < MIN_FIT_VIEWS:
        return None, {
            "why_not": f"the prior poses {len(names)} registered view(s) ({', '.join(names) or 'none'}); "
            f"fitting its frame onto SfM's needs {MIN_FIT_VIEWS}"
        }
    prior_centres = np.stack([camera_center(views[n][0]) for n in names])
    sfm_centres = np.stack([camera_center(views[n][1]) for n in names])
    spread = np.linalg.svd(sfm_centres - sfm_centres.mean(0), compute_uv=False)
    if spread[1] < MIN_FLATNESS * spread[0]:
        return None, {
            "why_not": f"the {len(names)} registered cameras the prior poses stand nearly on a line, which "
            "leaves the prior's frame free to turn about it"
        }
    threshold = CENTRE_INLIER_DISTANCE * extent
    ransac = pycolmap.RANSACOptions(max_error=threshold, random_seed=seed)
    found = pycolmap.estimate_sim3d_robust(prior_centres, sfm_centres, ransac)
    if found is None:
        return None, {"why_not": "no similarity maps the prior's camera centres onto SfM's"}
    sim = found["tgt_from_src"]
    mapped = {n: sim.transform_camera_world(pycolmap.Rigid3d(views[n][0])).matrix() for n in names}
    centre_error = {n: float(np.linalg.norm(camera_center(mapped[n]) - camera_center(views[n][1]))) for n in names}
    orientation_error = {n: rotation_angle_deg(mapped[n][:, :3] @ views[n][1][:, :3].T) for n in names}
    inliers = [n for n, inlier in zip(names, found["inlier_mask"]) if inlier]
    fit = {
        "views": names,
        "inliers": inliers,
        "scale": float(sim.scale),
        "centre_error": {n: e / extent for n, e in centre_error.items()},  # fractions of the extent
        "orientation_error_deg": orientation_error,
    }
    if len(inliers) < MIN_FIT_VIEWS:
        return None, {
            **fit,
            "why_not": f"{len(inliers)} of {len(names)} prior camera centres agree with SfM's "
            f"(within {CENTRE_INLIER_DISTANCE:g} of the extent); the fit needs {MIN_FIT_VIEWS}",
        }
    median_turn = float(np.median([orientation_error[n] for n in inliers]))
    if median_turn > MAX_ORIENTATION_ERROR_DEG:
        return None, {
            **fit,
            "why_not": f"the mapped prior cameras look {median_turn:.1f} degrees away from SfM's (median); "
            "the prior's poses or its frame disagree with SfM's",
        }
    return sim, fit


def refine_by_absolute_pose(
    mapped: np.ndarray,
    camera: pycolmap.Camera,
    points2d: np.ndarray,
    points3d: np.ndarray,
    extent: float,
    seed: int,
) -> tuple[np.ndarray, str]:
    """The mapped camera refined against the SfM points it sees, or as it is; with how it was posed."""
    if len(points2d) < MIN_POSE_INLIERS:
        return mapped, f"the prior's, mapped: {len(points2d)} matches to SfM points (refining needs {MIN_POSE_INLIERS})"
    estimation = pycolmap.AbsolutePoseEstimationOptions()
    estimation.ransac.random_seed = seed
    # Focal length and distortion stay as given (SfM's or the prior's): a few matches cannot improve them.
    refinement = pycolmap.AbsolutePoseRefinementOptions()
    result = pycolmap.estimate_and_refine_absolute_pose(points2d, points3d, camera, estimation, refinement)
    inliers = int(result["num_inliers"]) if result else 0
    if inliers < MIN_POSE_INLIERS:
        return mapped, (
            f"the prior's, mapped: absolute pose kept {inliers} of {len(points2d)} matches (needs {MIN_POSE_INLIERS})"
        )
    refined = result["cam_from_world"].matrix()
    turn = rotation_angle_deg(refined[:, :3] @ mapped[:, :3].T)
    shift = float(np.linalg.norm(camera_center(refined) - camera_center(mapped))) / extent
    if turn > MAX_REFINEMENT_ROTATION_DEG or shift > MAX_REFINEMENT_SHIFT:
        return mapped, (
            f"the prior's, mapped: the absolute pose ({inliers} inliers) lies {turn:.1f} degrees and "
            f"{shift:.2f} of the extent from it, too far to trust"
        )
    return refined, f"refined by absolute pose: {inliers} of {len(points2d)} matches to SfM points"


def database_cameras(database: Path) -> dict[str, pycolmap.Camera]:
    """Each image's camera in SfM's database (for an unregistered image: its size, and a guessed calibration)."""
    db = pycolmap.Database.open(database)
    try:
        cameras = {camera.camera_id: camera for camera in db.read_all_cameras()}
        return {image.name: cameras[image.camera_id] for image in db.read_all_images()}
    finally:
        db.close()


class CamerasStage(Stage):
    name = "cameras"
    libraries = ("pycolmap",)

    def __init__(self, scene: SceneFolder, config, train: list[str]):
        super().__init__(scene, config)
        self.train = train

    def enabled(self) -> bool:
        return self.config.prior != "none"

    def outputs(self) -> list[Path]:
        return [self.scene.cameras_dir]

    def settings(self) -> dict:
        return {
            "min_fit_views": MIN_FIT_VIEWS,
            "centre_inlier_distance": CENTRE_INLIER_DISTANCE,
            "min_flatness": MIN_FLATNESS,
            "max_orientation_error_deg": MAX_ORIENTATION_ERROR_DEG,
            "min_pose_inliers": MIN_POSE_INLIERS,
            "max_refinement_rotation_deg": MAX_REFINEMENT_ROTATION_DEG,
            "max_refinement_shift": MAX_REFINEMENT_SHIFT,
        }

    def run(self) -> dict:
        scene = self.scene
        model, images = registered_train(scene)
        registered = {image.name: image for image in images}
        priors = {n: DensePrior.load(prior_path(scene, n)) for n in self.train if prior_path(scene, n).exists()}
        posed = {n: prior for n, prior in priors.items() if prior.has_pose}
        unregistered = [n for n in self.train if n not in registered]
        report = {
            "fit": None,
            "cameras": {},
            "not_placed": {
                n: "its prior gives no pose" if n in priors else "it has no prior"
                for n in unregistered
                if n not in posed
            },
        }
        to_place = [n for n in unregistered if n in posed]
        if to_place:
            centres = np.stack([image.projection_center() for image in images])
            extent = float(np.linalg.norm(centres[:, None] - centres[None], axis=-1).max())  # SfM units
            views = {
                n: (posed[n].cam_from_world, registered[n].cam_from_world().matrix()) for n in posed if n in registered
            }
            sim, report["fit"] = fit_prior_frame(views, extent, SEED)
            if sim is None:
                report["not_placed"].update(
                    dict.fromkeys(to_place, f"the prior's frame does not fit SfM's: {report['fit']['why_not']}")
                )
            else:
                placing = CameraPlacing(scene, model, sim, extent, SEED)
                report["cameras"] = {n: placing.place(n, posed[n]) for n in to_place}
        with atomic_dir(scene.cameras_dir) as tmp:
            (tmp / "depth").mkdir()
            for name, entry in report["cameras"].items():
                size = (entry["camera"]["height"], entry["camera"]["width"])
                np.save(tmp / "depth" / no_depth_path(scene, name).name, np.zeros(size, np.float32))
            atomic_write_text(tmp / report_path(scene).name, json.dumps(report, indent=2))
        for name, entry in report["cameras"].items():
            log.info("%s: camera from the prior (pose %s; intrinsics %s)", name, entry["pose"], entry["intrinsics"])
        for name, why in report["not_placed"].items():
            log.warning("Training image %s gets no camera from the prior: %s", name, why)
        return {
            "unregistered": len(unregistered),
            "placed": len(report["cameras"]),
            "refined": sum(e["pose"].startswith("refined") for e in report["cameras"].values()),
            "fit_inliers": len((report["fit"] or {}).get("inliers", [])),
        }


class CameraPlacing:
    """Places unregistered views in SfM's frame through the fitted similarity `sim`."""

    def __init__(
        self, scene: SceneFolder, model: pycolmap.Reconstruction, sim: pycolmap.Sim3d, extent: float, seed: int
    ):
        self.model, self.sim, self.extent, self.seed = model, sim, extent, seed
        self.graph, self.cameras = match_graph(scene), database_cameras(database_path(scene))
        self.calibrated = {model.image(i).camera_id for i in model.reg_image_ids()}

    def place(self, name: str, prior: DensePrior) -> dict:
        """The report's entry of a view: how it was posed, its camera and cam_from_world."""
        camera = self.cameras[name]
        if camera.camera_id in self.calibrated:
            camera, intrinsics = self.model.camera(camera.camera_id), "SfM's (a camera shared with registered views)"
        else:
            k = prior.original_intrinsics()
            camera = pycolmap.Camera(
                model="PINHOLE",
                width=camera.width,
                height=camera.height,
                params=[k[0, 0], k[1, 1], k[0, 2], k[1, 2]],
                camera_id=camera.camera_id,
            )
            intrinsics = "the prior's"
        mapped = self.sim.transform_camera_world(pycolmap.Rigid3d(prior.cam_from_world)).matrix()
        points2d, points3d = self.graph.points_seen(self.model, self.graph.image_ids[name])
        cam_from_world, pose = refine_by_absolute_pose(mapped, camera, points2d, points3d, self.extent, self.seed)
        return {
            "camera_source": "prior",
            "pose": pose,
            "intrinsics": intrinsics,
            "camera": {
                "model": camera.model_name,
                "width": int(camera.width),
                "height": int(camera.height),
                "params": [float(v) for v in camera.params],
            },
            "cam_from_world": cam_from_world.tolist(),
        }
