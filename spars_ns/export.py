"""Writes the scene as a nerfstudio dataset: `transforms.json`, and the SfM points for `points.ply` (`ply.py`).

The world frame is COLMAP's (no axis permutation); nerfstudio's dataparser orients and
scales poses and points together, so they stay consistent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pycolmap

from spars_ns.errors import SfMError
from spars_ns.geometry import opencv_to_opengl_c2w
from spars_ns.scene import atomic_write_text

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
        raise SfMError(f"Camera model {camera.model_name} cannot be exported; use one of {', '.join(_PARAMS_TO_OPENCV)}.")
    values = dict(zip(names, map(float, camera.params)))
    focal_x = values.get("fx", values.get("f"))
    focal_y = values.get("fy", values.get("f"))
    return {
        "fl_x": focal_x, "fl_y": focal_y, "cx": values["cx"], "cy": values["cy"],
        "w": int(camera.width), "h": int(camera.height),
        "k1": values.get("k1", 0.0), "k2": values.get("k2", 0.0),
        "p1": values.get("p1", 0.0), "p2": values.get("p2", 0.0),
    }


def transforms_dict(
    model: pycolmap.Reconstruction, train_names: list[str], test_names: list[str], ply_name: str,
    with_depth: bool = False, corrected: dict | None = None,
) -> dict:
    """nerfstudio `transforms.json` for the registered images of `model`.

    With `with_depth`, every frame names `depth/<stem>.npy` (nerfstudio needs depth for all
    frames or none; 0 marks pixels, or whole test frames, without depth). `corrected` maps
    image names to cameras refined with the depth: {"cam_from_world": 3x4 or None,
    "focal_scale": f}.

    With no test views, training views double as val/test views (as nerfstudio's own
    `eval_mode all` does) and `eval_on_train_views` says so.
    """
    frames = []
    for image in sorted(model.images.values(), key=lambda im: im.name):
        if not image.has_pose:
            continue
        correction = (corrected or {}).get(image.name, {})
        cam_from_world = correction.get("cam_from_world") or image.cam_from_world().matrix()
        frame = {
            "file_path": f"images/{image.name}",
            "transform_matrix": opencv_to_opengl_c2w(np.asarray(cam_from_world)).tolist(),
            "colmap_im_id": int(image.image_id),
        }
        frame.update(camera_to_opencv(model.camera(image.camera_id)))
        frame["fl_x"] *= correction.get("focal_scale", 1.0)
        frame["fl_y"] *= correction.get("focal_scale", 1.0)
        if with_depth:
            frame["depth_file_path"] = f"depth/{Path(image.name).stem}.npy"
        frames.append(frame)
    registered = {image.name for image in model.images.values() if image.has_pose}
    train = [f"images/{n}" for n in train_names if n in registered]
    test = [f"images/{n}" for n in test_names if n in registered]
    return {
        "camera_model": "OPENCV",
        "frames": frames,
        "train_filenames": train,
        "val_filenames": test or train,
        "test_filenames": test or train,
        "eval_on_train_views": not test,
        "ply_file_path": ply_name,
    }


def write_transforms(path, transforms: dict) -> None:
    atomic_write_text(path, json.dumps(transforms, indent=2))


def sfm_points(model: pycolmap.Reconstruction) -> tuple[np.ndarray, np.ndarray]:
    """(xyz float32 (N, 3), rgb uint8 (N, 3)) of the model's 3D points."""
    points = list(model.points3D.values())
    xyz = np.array([p.xyz for p in points], np.float32).reshape(-1, 3)
    rgb = np.array([p.color for p in points], np.uint8).reshape(-1, 3)
    return xyz, rgb
