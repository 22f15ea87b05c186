"""The views `spars-ns mesh` fuses, from a processed scene or rendered from a trained run, in the scene's frame.

- A processed scene is read through its public nerfstudio files only: `transforms.json`
  (OpenGL camera-to-world, OPENCV intrinsics, `depth_file_path` per frame, the training
  split), `depth/<stem>.npy` and the confidence beside it, the photos, and `points.ply`
  for the bounds. Only training views are fused: test views have no depth.
- A trained spars3r run is loaded with `setup_run` (no code runs from its config) and rendered (depth,
  colour, accumulation) at its training cameras and at cameras interpolated between
  neighbouring ones; nerfstudio's world frame (oriented and scaled by its dataparser) is
  mapped back to the scene's with the run's dataparser transform.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.progress import Progress

from spars_ns.errors import InputError
from spars_ns.geometry import neighbour_pairs, opengl_c2w_to_opencv
from spars_ns.ply import read_points_ply
from spars_ns.scene import depth_confidence_path, read_depth_map, read_transforms
from spars_ns.surface.tsdf import Camera, DepthView

# The processing options that write depth/ (README, "Use"), named when a scene has none.
DEPTH_OPTIONS = (
    "`--prior files --prior-options.files.dir DIR --refine global|local`, or `--prior mast3r --refine global|local`"
)
# Rendered pixels with less accumulated opacity than this have no depth worth fusing.
MIN_ACCUMULATION = 0.5
_SUPPORTED_CAMERA_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE")


def scene_views(scene_dir: Path) -> tuple[list[DepthView], np.ndarray]:
    """The training views of a processed scene with their depth, and its seed points (N, 3)."""
    transforms_path = scene_dir / "transforms.json"
    if not transforms_path.is_file():
        raise InputError(f"{transforms_path}: not found; --scene takes a folder made by `spars-ns process`.")
    meta = read_transforms(transforms_path)
    model = meta.get("camera_model", "OPENCV")
    if model not in _SUPPORTED_CAMERA_MODELS:
        supported = ", ".join(_SUPPORTED_CAMERA_MODELS)
        raise InputError(f"{transforms_path}: camera model {model} is not supported (only {supported}).")
    train = set(meta.get("train_filenames") or [frame["file_path"] for frame in meta["frames"]])
    frames = [frame for frame in meta["frames"] if frame["file_path"] in train]
    without_depth = [frame["file_path"] for frame in frames if "depth_file_path" not in frame]
    if without_depth:
        raise InputError(
            f"{transforms_path}: the scene has no depth (no depth_file_path for {len(without_depth)} of "
            f"{len(frames)} training views, e.g. {without_depth[0]}). Process it with a dense prior and "
            f"refinement, which write depth/: {DEPTH_OPTIONS}."
        )
    views = [_scene_view(scene_dir, {**meta, **frame}) for frame in frames]
    points_path = scene_dir / meta.get("ply_file_path", "points.ply")
    seeds = read_points_ply(points_path)[0] if points_path.is_file() else None
    return views, seeds


def _scene_view(scene_dir: Path, frame: dict) -> DepthView:
    """One frame of transforms.json (its keys over the file's top-level ones)."""
    depth_path = scene_dir / frame["depth_file_path"]
    depth = read_depth_map(depth_path)
    confidence_path = depth_confidence_path(depth_path)
    confidence = read_depth_map(confidence_path) if confidence_path.exists() else np.ones_like(depth)
    image_path = scene_dir / frame["file_path"]
    with Image.open(image_path) as image:
        colour = np.asarray(image.convert("RGB"))
    width, height = int(frame["w"]), int(frame["h"])
    for path, shape in ((depth_path, depth.shape), (confidence_path, confidence.shape), (image_path, colour.shape[:2])):
        if shape != (height, width):
            raise InputError(
                f"{path}: {shape[1]}x{shape[0]} pixels, but transforms.json gives its frame {width}x{height}."
            )
    camera = Camera(
        cam_from_world=opengl_c2w_to_opencv(np.asarray(frame["transform_matrix"])),
        fx=float(frame["fl_x"]),
        fy=float(frame.get("fl_y", frame["fl_x"])),
        cx=float(frame["cx"]),
        cy=float(frame["cy"]),
        width=width,
        height=height,
        distortion=tuple(float(frame.get(name, 0.0)) for name in ("k1", "k2", "k3", "p1", "p2")),
    )
    return DepthView(camera, depth, confidence, colour)


def run_views(
    config_path: Path,
    interpolated_views: int,
    render_scale: float,
    progress: Progress | None = None,
) -> tuple[list[DepthView], np.ndarray]:
    """Views rendered from a trained spars3r run, in the scene's frame, and the run's Gaussian
    centres (N, 3) for the bounds. Views are rendered at `render_scale` times the size the run
    trained at: larger, Gaussians fitted to fewer pixels leave gaps and half-transparent
    patches whose depth is neither surface's (F-score 0.74 at the training size, 0.41 at four
    times it, BENCHMARKS.md)."""
    from nerfstudio.cameras.camera_utils import get_interpolated_poses
    from nerfstudio.cameras.cameras import Cameras, CameraType

    from spars_ns.ns.run_config import load_run_config, setup_run

    run = load_run_config(config_path)
    method = run.method_name
    if method != "spars3r":
        raise InputError(
            f"{config_path}: a {method} run; --load-config takes a spars3r run (`ns-train spars3r`), whose "
            f"depth rendering spars-ns knows. For NeRF-type runs (nerfacto), nerfstudio's `ns-export tsdf` serves."
        )
    pipeline = setup_run(run, test_mode="inference")
    model = pipeline.model
    outputs = pipeline.datamanager.train_dataparser_outputs
    cameras = pipeline.datamanager.train_dataset.cameras  # at the training size (camera-res-scale-factor)
    to_scene = _SceneFrame(outputs.dataparser_transform.numpy(), float(outputs.dataparser_scale))

    poses = [c2w.numpy() for c2w in cameras.camera_to_worlds]
    to_render = [(pose, i) for i, pose in enumerate(poses)]  # a pose, and the camera whose intrinsics it takes
    for a, b in neighbour_pairs(np.stack([pose[:3, 3] for pose in poses])):
        between = get_interpolated_poses(poses[a], poses[b], steps=interpolated_views + 2)[1:-1]  # slerp and lerp
        to_render += [(pose, a) for pose in between]

    task = progress.add_task(f"Rendering {len(to_render)} views", total=len(to_render)) if progress else None
    views = []
    for pose, intrinsics_of in to_render:
        camera = Camera(
            cam_from_world=to_scene.cam_from_world(pose),
            fx=float(cameras.fx[intrinsics_of]) * render_scale,
            fy=float(cameras.fy[intrinsics_of]) * render_scale,
            cx=float(cameras.cx[intrinsics_of]) * render_scale,
            cy=float(cameras.cy[intrinsics_of]) * render_scale,
            width=round(int(cameras.width[intrinsics_of]) * render_scale),
            height=round(int(cameras.height[intrinsics_of]) * render_scale),
        )
        rendered = model.get_outputs_for_camera(
            Cameras(
                camera_to_worlds=torch.as_tensor(pose, dtype=torch.float32)[None, :3],
                fx=camera.fx,
                fy=camera.fy,
                cx=camera.cx,
                cy=camera.cy,
                width=camera.width,
                height=camera.height,
                camera_type=CameraType.PERSPECTIVE,
            )
        )
        accumulation = rendered["accumulation"][..., 0].numpy(force=True)
        depth = np.where(accumulation > MIN_ACCUMULATION, rendered["depth"][..., 0].numpy(force=True), 0.0)
        views.append(
            DepthView(
                camera=camera,
                depth=(depth / to_scene.scale).astype(np.float32),
                confidence=accumulation.astype(np.float32),
                colour=(rendered["rgb"].numpy(force=True) * 255).round().astype(np.uint8),
            )
        )
        if progress:
            progress.advance(task)
    return views, to_scene.points(model.means.numpy(force=True))


class _SceneFrame:
    """nerfstudio's world frame back to the scene's: its dataparser maps a scene point p to
    scale * (R p + t), and camera poses alike (rotations by R alone)."""

    def __init__(self, transform: np.ndarray, scale: float):
        self.rotation, self.translation, self.scale = transform[:3, :3], transform[:3, 3], scale

    def points(self, points: np.ndarray) -> np.ndarray:
        return (points / self.scale - self.translation) @ self.rotation

    def cam_from_world(self, camera_to_world: np.ndarray) -> np.ndarray:
        """OpenCV cam_from_world (3x4) in the scene's frame of a nerfstudio OpenGL camera-to-world."""
        c2w = np.eye(4)
        c2w[:3, :3] = self.rotation.T @ camera_to_world[:3, :3]
        c2w[:3, 3] = self.points(camera_to_world[None, :3, 3])[0]
        return opengl_c2w_to_opencv(c2w)
