"""The outputs of `spars-ns mesh`: the signed-distance volume (`sdf.npz`) and its zero level set
as a coloured triangle mesh (`mesh.ply`).

Marching cubes is scikit-image's; connected pieces are scipy's graph components; the PLY is
`ply.write_mesh_ply`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from spars_ns.scene import NpzRecord
from spars_ns.surface.tsdf import DepthView, ViewOnDevice, VoxelGrid

UNSEEN_GREY = 128  # the colour of a vertex that no view sees


@dataclass
class SignedDistanceVolume(NpzRecord):
    """`sdf.npz`, in the frame of the scene (the processed scene's SfM frame). Voxel (i, j, k) is
    centred at origin + (i, j, k) * voxel_size."""

    sdf: np.ndarray
    """(D, D, D) float32: truncated signed distance in scene units, positive in front of the
    surface, in [-truncation, truncation]; +truncation where `weight` is 0."""
    weight: np.ndarray
    """(D, D, D) float32: sum of the fused views' confidences; 0 where no view observed the voxel."""
    origin: np.ndarray
    """(3,) float64: centre of voxel (0, 0, 0)."""
    voxel_size: np.ndarray
    """() float64: edge of a voxel, scene units."""
    truncation: np.ndarray
    """() float64: the truncation distance, scene units."""

    @property
    def grid(self) -> VoxelGrid:
        return VoxelGrid(np.asarray(self.origin), float(self.voxel_size), self.sdf.shape[0])


@dataclass
class Mesh:
    vertices: np.ndarray  # (N, 3) float32, scene frame
    faces: np.ndarray  # (F, 3) int32, counter-clockwise seen from the observed (free-space) side
    colours: np.ndarray  # (N, 3) uint8


def extract_surface(volume: SignedDistanceVolume, min_component_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (N, 3) float32 in the scene frame, faces (F, 3) int32) of the zero level set, both
    empty where there is none. Only crossings between observed voxels count: marching cubes
    also puts vertices on edges to unobserved voxels (which hold +truncation), the far side
    of the band behind every surface, and the faces that use one are dropped. So are
    connected pieces with fewer than `min_component_fraction` of the faces."""
    from skimage.measure import marching_cubes  # scikit-image takes a second to import

    observed = volume.weight > 0
    if not (volume.sdf[observed] < 0).any() or not (volume.sdf[observed] > 0).any():
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32)
    try:
        # With scikit-image's default winding ("descent") faces are counter-clockwise seen from the
        # larger values: from free space, the side the views saw (checked in tests/test_mesh.py).
        index_vertices, faces, _, _ = marching_cubes(volume.sdf, level=0.0)
    except RuntimeError:  # scikit-image's "no surface found"
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32)
    # A vertex lies on a grid edge (or, where Lewiner's method resolves an ambiguous cube, on a
    # cube's face or inside it): the voxels at the floor and ceiling of its coordinates are the
    # ends of that edge (or the corners of that face or cube).
    side = volume.sdf.shape[0] - 1
    ends = [np.clip(rounding(index_vertices).astype(np.int64), 0, side) for rounding in (np.floor, np.ceil)]
    between_observed = np.ones(len(index_vertices), bool)
    for choice in np.ndindex(2, 2, 2):
        corner = tuple(ends[end][:, axis] for axis, end in enumerate(choice))
        between_observed &= observed[corner]
    faces = faces[between_observed[faces].all(1)]
    faces = drop_small_components(faces, len(index_vertices), min_component_fraction)
    used, faces = np.unique(faces, return_inverse=True)
    vertices = volume.origin + index_vertices[used] * float(volume.voxel_size)
    return vertices.astype(np.float32), faces.reshape(-1, 3).astype(np.int32)


def drop_small_components(faces: np.ndarray, vertex_count: int, min_fraction: float) -> np.ndarray:
    """The faces of the connected pieces (faces sharing vertices) that hold at least `min_fraction` of all faces."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(faces) == 0:
        return faces
    edges_from, edges_to = faces.ravel(), faces[:, [1, 2, 0]].ravel()
    graph = coo_matrix((np.ones(len(edges_from), np.int32), (edges_from, edges_to)), shape=(vertex_count, vertex_count))
    _, labels = connected_components(graph, directed=False)
    face_labels = labels[faces[:, 0]]
    faces_per_piece = np.bincount(face_labels)
    return faces[faces_per_piece[face_labels] >= min_fraction * len(faces)]


def colour_vertices(
    vertices: np.ndarray, views: list[DepthView], truncation: float, device: torch.device
) -> np.ndarray:
    """(N, 3) uint8: per vertex, the mean colour of the views that see it (it lies within
    `truncation` of their depth there), weighted by their confidence and by how close to their
    depth it lies (a view that sees the surface at a grazing angle puts a pixel's colour on a
    long stretch of it); grey where no view sees it."""
    points = torch.as_tensor(vertices, dtype=torch.float32, device=device)
    colour_sum = torch.zeros((len(vertices), 3), device=device)
    weight_sum = torch.zeros(len(vertices), device=device)
    for view in views:
        on_device = ViewOnDevice(view, device)
        distance, weight, pixel = on_device.sample(points, truncation)
        weight = weight * (1 - distance.abs() / truncation).clamp_(min=0)
        colour_sum += weight[:, None] * on_device.colour[pixel].float()
        weight_sum += weight
    colours = torch.where(
        weight_sum[:, None] > 0, colour_sum / weight_sum.clamp_min(1e-12)[:, None], float(UNSEEN_GREY)
    )
    return colours.round().clamp(0, 255).to(torch.uint8).cpu().numpy()
