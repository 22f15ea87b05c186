"""Truncated signed-distance fusion of depth maps on a voxel grid, in torch (on the GPU when there is one).

Our own code, because no library at hand has it: scikit-image has marching cubes but no
fusion, and open3d's TSDF volume comes with open3d (400 MB), which is not a dependency and
not on a GPU node installed from `scripts/offline_wheels.sh`. It is the projective fusion of
Curless and Levoy (1996) as KinectFusion runs it: every voxel centre is projected into every
view; its signed distance there is the view's depth at that pixel minus the voxel's own
depth (positive in front of the surface, negative behind it), kept where it is above
-truncation (further behind, the view knows nothing) and clamped to +truncation (free
space in front, which carves away what other views put there by mistake); the volume holds
the confidence-weighted mean over the views. Voxels are processed in chunks, so memory is
the two volumes (sdf and weight) plus a fixed working set.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from spars_ns import machine
from spars_ns.errors import InputError
from spars_ns.geometry import inverse_transform

# Voxels per chunk of the fusion: its working set is about 100 bytes a voxel, 100 MB.
CHUNK_VOXELS = 1 << 20
# Memory of a `spars-ns mesh` run: per voxel, the sdf and weight volumes (float32) and the
# temporaries of marching cubes and of the npz writer; besides, the imports (0.65 GiB), a
# chunk's temporaries and the views. Measured on the CPU (peak resident set, BENCHMARKS.md):
# 15 bytes a voxel at 256^3, 12.5 at 512^3, over 0.65 GiB; rounded up.
BYTES_PER_VOXEL = 16
WORKING_SET_BYTES = 1 << 30


@dataclass
class Camera:
    """A view's camera. `cam_from_world` is OpenCV's world-to-camera (3x4); intrinsics in pixels
    with COLMAP's and nerfstudio's convention (pixel (0, 0) covers [0, 1) x [0, 1));
    `distortion` is OPENCV's (k1, k2, k3, p1, p2)."""

    cam_from_world: np.ndarray
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    distortion: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)


@dataclass
class DepthView:
    """One view to fuse, in the frame of the volume: z-depth along the optical axis (0 where
    unknown), the fusion weight of each pixel, and the colour that the mesh's vertices take."""

    camera: Camera
    depth: np.ndarray  # (H, W) float32
    confidence: np.ndarray  # (H, W) float32, >= 0
    colour: np.ndarray  # (H, W, 3) uint8


@dataclass(frozen=True)
class VoxelGrid:
    """A cube of resolution^3 voxels; voxel (i, j, k) is centred at origin + (i, j, k) * voxel_size."""

    origin: np.ndarray  # (3,)
    voxel_size: float
    resolution: int

    def centres(self, start: int, stop: int, device: torch.device) -> torch.Tensor:
        """Centres (N, 3) of the voxels with flat indices start..stop-1 (C order: i slowest)."""
        index = torch.arange(start, stop, device=device)
        side = self.resolution
        ijk = torch.stack([index // (side * side), (index // side) % side, index % side], -1)
        return torch.as_tensor(self.origin, dtype=torch.float32, device=device) + ijk.float() * self.voxel_size


class ViewOnDevice:
    """A DepthView's camera and maps as tensors, and where voxel centres fall in it."""

    def __init__(self, view: DepthView, device: torch.device):
        camera = view.camera
        self.camera = camera
        self.rotation_t = torch.as_tensor(camera.cam_from_world[:3, :3].T, dtype=torch.float32, device=device)
        self.translation = torch.as_tensor(camera.cam_from_world[:3, 3], dtype=torch.float32, device=device)
        self.focal = torch.tensor([camera.fx, camera.fy], dtype=torch.float32, device=device)
        self.principal_point = torch.tensor([camera.cx, camera.cy], dtype=torch.float32, device=device)
        self.size = torch.tensor([camera.width, camera.height], dtype=torch.float32, device=device)
        depth = np.nan_to_num(view.depth, nan=0.0, posinf=0.0, neginf=0.0).clip(min=0)
        self.depth = torch.as_tensor(depth, dtype=torch.float32, device=device).reshape(-1)
        confidence = np.nan_to_num(view.confidence).clip(min=0)
        self.confidence = torch.as_tensor(confidence, dtype=torch.float32, device=device).reshape(-1)
        self.colour = torch.as_tensor(np.array(view.colour), device=device).reshape(-1, 3)
        # Beyond 1.5 times the image's corner radius (undistorted) the distortion polynomial may
        # fold far-away points back into the image: those are never taken as seen.
        corner_x = max(camera.cx, camera.width - camera.cx) / camera.fx
        corner_y = max(camera.cy, camera.height - camera.cy) / camera.fy
        self.max_radius2 = 2.25 * (corner_x**2 + corner_y**2)

    def sample(self, points: torch.Tensor, truncation: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For world points (N, 3): their signed distance to this view's surface along its optical
        axis (clamped to +truncation), the weight of that measurement (0 where the view does not
        see the point, has no depth there, or the point is more than `truncation` behind the
        surface), and the flat index of the pixel it falls in."""
        cam = torch.addmm(self.translation, points, self.rotation_t)
        z = cam[:, 2]
        undistorted = cam[:, :2] / z[:, None]
        radius2 = (undistorted * undistorted).sum(1)
        k1, k2, k3, p1, p2 = self.camera.distortion
        xy = undistorted
        if k1 or k2 or k3:  # the terms are skipped where zero: SfM's cameras usually have k1 alone
            xy = xy * (1 + radius2 * (k1 + radius2 * (k2 + radius2 * k3)))[:, None]
        if p1 or p2:
            x, y = undistorted[:, 0], undistorted[:, 1]
            tangential = [2 * p1 * x * y + p2 * (radius2 + 2 * x * x), p1 * (radius2 + 2 * y * y) + 2 * p2 * x * y]
            xy = xy + torch.stack(tangential, 1)
        uv = torch.addcmul(self.principal_point, xy, self.focal)
        outside = (z <= 1e-6) | (radius2 >= self.max_radius2) | ((uv < 0) | (uv >= self.size)).any(1)
        uv = uv.long()  # rounding towards zero: the floor, for the pixels inside
        pixel = (uv[:, 1] * self.camera.width + uv[:, 0]).masked_fill_(outside, 0)
        depth = self.depth[pixel]
        distance = depth - z
        unobserved = outside | (depth <= 0) | (distance < -truncation)
        weight = self.confidence[pixel].masked_fill_(unobserved, 0.0)
        return distance.clamp_(max=truncation).masked_fill_(unobserved, 0.0), weight, pixel


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def fuse(
    views: list[DepthView],
    grid: VoxelGrid,
    truncation: float,
    device: torch.device,
    advance: Callable[[], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(sdf, weight), each (D, D, D) float32: the confidence-weighted mean truncated signed distance
    of every voxel (scene units, in [-truncation, truncation]; +truncation where no view
    observed it) and the sum of the weights. `advance` is called after each chunk of voxels
    (`fusion_steps(grid)` in all)."""
    on_device = [ViewOnDevice(view, device) for view in views]
    count = grid.resolution**3
    weighted_sum = torch.zeros(count, dtype=torch.float32, device=device)
    weights = torch.zeros(count, dtype=torch.float32, device=device)
    for start in range(0, count, CHUNK_VOXELS):
        stop = min(start + CHUNK_VOXELS, count)
        points = grid.centres(start, stop, device)
        for view in on_device:
            distance, weight, _ = view.sample(points, truncation)
            weighted_sum[start:stop] += distance * weight
            weights[start:stop] += weight
        if advance is not None:
            advance()
    sdf = weighted_sum.div_(weights.clamp_min(1e-12)).masked_fill_(
        weights == 0, truncation
    )  # in place: no third volume
    shape = (grid.resolution,) * 3
    return sdf.reshape(shape).cpu().numpy(), weights.reshape(shape).cpu().numpy()


def fusion_steps(grid: VoxelGrid) -> int:
    return math.ceil(grid.resolution**3 / CHUNK_VOXELS)


def grid_around(views: list[DepthView], seed_points: np.ndarray | None, resolution: int, margin: float) -> VoxelGrid:
    """The cube of `resolution`^3 voxels around what the views see: the union of their view
    frusta (from the camera to the 99th percentile of its depth; the pinhole corners, which
    bound the box up to the distortion) intersected with the seed
    points' robust extent (their 1st to 99th percentiles per axis, widened by `margin` times
    that extent on each side), centred on that box. Without seed points, the frusta alone."""
    corners = []
    for view in views:
        known = view.depth[np.isfinite(view.depth) & (view.depth > 0)]
        if known.size == 0:
            continue
        far = float(np.percentile(known, 99))
        camera = view.camera
        u = np.array([0.0, camera.width, 0.0, camera.width])
        v = np.array([0.0, 0.0, camera.height, camera.height])
        rays = np.stack([(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, np.ones(4)], 1)
        in_camera = np.concatenate([np.zeros((1, 3)), rays * far])
        corners.append(inverse_transform(in_camera, camera.cam_from_world))
    if not corners:
        raise InputError(
            f"no valid depth in any of the {len(views)} views to fuse (every depth map is 0 everywhere): "
            f"nothing to make a surface from."
        )
    corners = np.concatenate(corners)
    low, high = corners.min(0), corners.max(0)
    if seed_points is not None and len(seed_points) > 0:
        seed_low, seed_high = np.percentile(seed_points, [1, 99], axis=0)
        widen = margin * (seed_high - seed_low)
        low, high = np.maximum(low, seed_low - widen), np.minimum(high, seed_high + widen)
    if np.any(high <= low):
        raise InputError("the seed points lie outside every view's frustum: the cameras and the points disagree.")
    side = float(np.max(high - low))
    voxel_size = side / resolution
    origin = (low + high) / 2 - side / 2 + voxel_size / 2
    return VoxelGrid(origin.astype(np.float64), voxel_size, resolution)


def memory_needed_gib(resolution: int) -> float:
    return (resolution**3 * BYTES_PER_VOXEL + WORKING_SET_BYTES) / 2**30


def memory_available_gib(device: torch.device) -> float:
    """What the machine lends now (`machine.free_memory`), and on a GPU the smaller of that and the
    GPU's free memory."""
    host = machine.free_memory()
    if device.type == "cuda":
        return min(host, torch.cuda.mem_get_info(device)[0]) / 2**30
    return host / 2**30
