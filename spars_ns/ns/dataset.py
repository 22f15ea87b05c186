"""Images plus the scene's depth maps (`depth/<stem>.npy`) and their confidence, for the depth loss.

nerfstudio's `DepthDataset` would generate pseudo-depth with a downloaded model where none is
given, and does not undistort depth; this one reads only what the processed scene holds.
Depth arrives as `depth_image`, (H, W, 2): depth in the dataparser's scaled units, then the
confidence (1 where the scene gives none). One tensor, so that the datamanager's
undistortion crop applies to both.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.datasets.base_dataset import InputDataset
from PIL import Image

from spars_ns.errors import InputError
from spars_ns.scene import depth_confidence_path, read_depth_map


class SparsDataset(InputDataset):
    exclude_batch_keys_from_device: ClassVar[list[str]] = [*InputDataset.exclude_batch_keys_from_device, "depth_image"]

    def __init__(self, dataparser_outputs, scale_factor: float = 1.0):
        super().__init__(dataparser_outputs, scale_factor)
        self.depth_filenames = self.metadata.get("depth_filenames")
        self.depth_scale = self.metadata.get("depth_unit_scale_factor", 1.0) * dataparser_outputs.dataparser_scale

    def get_metadata(self, data: dict) -> dict:
        if not self.depth_filenames:
            return {}
        index = data["image_idx"]
        path = Path(self.depth_filenames[index])
        depth = read_depth_map(path)
        image_path = self._dataparser_outputs.image_filenames[index]
        with Image.open(image_path) as image:
            image_size = image.size
        if depth.shape != image_size[::-1]:
            raise InputError(
                f"{path}: depth map is {depth.shape[1]}x{depth.shape[0]} pixels but its image {image_path} is "
                f"{image_size[0]}x{image_size[1]}; depth must be given at the image's own size."
            )
        conf_file = depth_confidence_path(path)
        confidence = read_depth_map(conf_file) if conf_file.exists() else np.ones_like(depth)
        if confidence.shape != depth.shape:
            raise InputError(
                f"{conf_file}: confidence is {confidence.shape[::-1]} pixels, its depth {depth.shape[::-1]}"
            )
        maps = np.stack([np.nan_to_num(depth * self.depth_scale), np.nan_to_num(confidence)], -1).astype(np.float32)
        height, width = data["image"].shape[:2]
        if maps.shape[:2] != (height, width):
            maps = cv2.resize(maps, (width, height), interpolation=cv2.INTER_NEAREST)
        camera = self.cameras[index].reshape(())
        if camera.distortion_params is not None and torch.any(camera.distortion_params != 0):
            maps = undistort_nearest(maps, camera)
        return {"depth_image": torch.from_numpy(maps)}


def undistort_nearest(maps: np.ndarray, camera: Cameras) -> np.ndarray:
    """Resample per-pixel maps onto the undistorted image nerfstudio's full-image datamanager
    makes (same new intrinsics, before its crop), by nearest neighbour so that unknown (0)
    pixels do not bleed into known ones."""
    k = camera.distortion_params.numpy()
    # nerfstudio's order (k1, k2, k3, k4, p1, p2) to OpenCV's, and its pixel-centre convention.
    coefficients = np.array([k[0], k[1], k[4], k[5], k[2], k[3], 0, 0])
    intrinsics = camera.get_intrinsics_matrices().numpy().copy()
    intrinsics[:2, 2] -= 0.5
    size = (maps.shape[1], maps.shape[0])
    new_intrinsics, _ = cv2.getOptimalNewCameraMatrix(intrinsics, coefficients, size, 0)
    map_x, map_y = cv2.initUndistortRectifyMap(intrinsics, coefficients, None, new_intrinsics, size, cv2.CV_32FC1)
    return cv2.remap(maps, map_x, map_y, cv2.INTER_NEAREST)
