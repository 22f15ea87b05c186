"""Dense priors behind one small interface.

A backend turns the scene's images (and, for depth, the SfM cameras) into one
`DensePrior` per image: 3D points at a working resolution, a confidence, the affine
map from working pixels to the original image's pixels, and, where the prior has one, the
view's camera in the prior's shared frame. Backends: `files` (any external model's depth or
pointmaps), `mast3r` (MASt3R with its sparse global alignment), `stereo` (two-view stereo on
SfM's cameras, no learned weights), `none`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from spars_ns.scene import NpzRecord


@dataclass
class DensePrior(NpzRecord):
    """One image's dense prior at its working resolution (h, w).

    `pts3d` is in the prior's own frame (the camera frame for depth, the model's world
    frame for pointmaps); alignment maps it into the SfM frame. Pixel coordinates are
    continuous with pixel centres at +0.5 (COLMAP's convention): an original pixel
    coordinate is `scale * working + offset`.

    A prior that poses its views in one shared frame (MASt3R's global alignment, DUSt3R-style
    files) also gives the view's camera there: `cam_from_world` and `intrinsics` at the working
    resolution, in the same pixel convention; both nan for a prior without poses.
    """

    VERSION: ClassVar[int] = 2  # 2: with the camera; the prior stage records it, so records without are remade

    pts3d: np.ndarray  # (h, w, 3) float32
    conf: np.ndarray  # (h, w) float32, 0 where invalid
    scale: tuple[float, float]  # (sx, sy)
    offset: tuple[float, float]  # (ox, oy)
    cam_from_world: np.ndarray = field(default_factory=lambda: np.full((3, 4), np.nan))  # (3, 4) OpenCV, shared frame
    intrinsics: np.ndarray = field(default_factory=lambda: np.full((3, 3), np.nan))  # (3, 3) working pixels

    def __post_init__(self):
        self.scale = tuple(float(v) for v in self.scale)  # loaded from a file, they are arrays
        self.offset = tuple(float(v) for v in self.offset)
        self.cam_from_world = np.asarray(self.cam_from_world, np.float64)
        self.intrinsics = np.asarray(self.intrinsics, np.float64)

    @property
    def shape(self) -> tuple[int, int]:
        return self.pts3d.shape[:2]

    @property
    def has_pose(self) -> bool:
        return bool(np.isfinite(self.cam_from_world).all() and np.isfinite(self.intrinsics).all())

    def original_intrinsics(self) -> np.ndarray:
        """The camera's intrinsics in the original image's pixels."""
        (sx, sy), (ox, oy) = self.scale, self.offset
        return np.array([[sx, 0, ox], [0, sy, oy], [0, 0, 1]]) @ self.intrinsics

    def valid(self) -> np.ndarray:
        return np.isfinite(self.pts3d).all(-1) & (self.conf > 0)

    def to_working(self, xy: np.ndarray) -> np.ndarray:
        """Original pixel coordinates (N, 2) -> working pixel coordinates."""
        return (xy - np.asarray(self.offset)) / np.asarray(self.scale)

    def to_original(self, xy: np.ndarray) -> np.ndarray:
        return xy * np.asarray(self.scale) + np.asarray(self.offset)

    def sample(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest prior point and confidence at original pixel coordinates; conf 0 outside or invalid."""
        h, w = self.shape
        col_row = np.floor(self.to_working(xy)).astype(int)
        inside = (col_row[:, 0] >= 0) & (col_row[:, 0] < w) & (col_row[:, 1] >= 0) & (col_row[:, 1] < h)
        cols, rows = np.clip(col_row[:, 0], 0, w - 1), np.clip(col_row[:, 1], 0, h - 1)
        points = self.pts3d[rows, cols].astype(np.float64)
        conf = np.where(inside & self.valid()[rows, cols], self.conf[rows, cols], 0.0)
        return points, conf

    def resample(self, image: np.ndarray) -> np.ndarray:
        """An original-resolution image (H, W, ...) sampled at the working pixel centres (nearest)."""
        h, w = self.shape
        cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
        xy = self.to_original(np.stack([cols.ravel(), rows.ravel()], 1))
        x = np.clip(np.floor(xy[:, 0]).astype(int), 0, image.shape[1] - 1)
        y = np.clip(np.floor(xy[:, 1]).astype(int), 0, image.shape[0] - 1)
        return image[y, x].reshape(h, w, *image.shape[2:])

    def resample_to_original(self, values: np.ndarray, width: int, height: int) -> np.ndarray:
        """A working-resolution map (h, w) sampled at the original pixel centres (nearest; nan outside)."""
        h, w = self.shape
        cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
        working = self.to_working(np.stack([cols.ravel(), rows.ravel()], 1))
        x, y = np.floor(working[:, 0]).astype(int), np.floor(working[:, 1]).astype(int)
        inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
        out = np.full(width * height, np.nan, np.float32)
        out[inside] = values[y[inside], x[inside]]
        return out.reshape(height, width)
