"""The PLY files of a scene and of a trained run, written and read with plyfile.

- `points.ply`: the processed scene's seed points, with their confidence and source.
- `mesh.ply`: `spars-ns mesh`'s coloured triangle mesh, in the layout trimesh, MeshLab and
  Blender read (vertex x y z float, red green blue uchar; face vertex_indices, a list of int).
- `splat.ply`: a trained run's Gaussians in the layout of the 3D Gaussian Splatting
  reference code, which nerfstudio's `ns-export gaussian-splat` writes and splat viewers
  read. Ours needs no open3d: nerfstudio's exporter imports open3d and pymeshlab (500 MB,
  and libusb on Linux) before it runs, which a GPU node installed offline does not have.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement, PlyParseError

from spars_ns.errors import InputError
from spars_ns.scene import temporary_path

# points.ply's `source` of each seed point
SOURCE_SFM, SOURCE_GLOBAL, SOURCE_REGION, SOURCE_REFINE = 0, 1, 2, 3
MIN_OPACITY_LOGIT = -5.5373  # logit(1/255): fainter Gaussians are skipped by the rasteriser, and not exported


def _write_atomic(path: Path, *elements: PlyElement) -> None:
    tmp = temporary_path(path)
    PlyData(list(elements)).write(str(tmp))
    tmp.replace(path)


def write_mesh_ply(path: Path, vertices: np.ndarray, faces: np.ndarray, colours: np.ndarray) -> None:
    """Binary PLY of a triangle mesh: vertices (N, 3), faces (F, 3) vertex indices, colours (N, 3) uint8."""
    vertex = np.empty(
        len(vertices), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    )
    for i, axis in enumerate("xyz"):
        vertex[axis] = vertices[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        vertex[channel] = colours[:, i]
    face = np.empty(len(faces), dtype=[("vertex_indices", "i4", (3,))])
    face["vertex_indices"] = faces
    _write_atomic(
        path,
        PlyElement.describe(vertex, "vertex"),
        PlyElement.describe(face, "face", len_types={"vertex_indices": "u1"}),
    )


def read_mesh_ply(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vertices (N, 3) float32, faces (F, 3) int32, colours (N, 3) uint8) of a `write_mesh_ply` file."""
    data = PlyData.read(str(path))
    vertex = data["vertex"]
    vertices = np.stack([vertex[axis] for axis in "xyz"], 1).astype(np.float32)
    colours = np.stack([vertex[channel] for channel in ("red", "green", "blue")], 1).astype(np.uint8)
    faces = np.stack(data["face"]["vertex_indices"]).astype(np.int32).reshape(-1, 3)
    return vertices, faces, colours


def write_points_ply(path, xyz: np.ndarray, rgb: np.ndarray, confidence: np.ndarray, source: np.ndarray) -> None:
    """Binary PLY: x, y, z (float), red, green, blue (uchar), confidence (float) and source
    (uchar: the SOURCE_* values), readable by open3d, plyfile and nerfstudio."""
    vertices = np.empty(
        len(xyz),
        dtype=[
            ("x", "f4"),
            ("y", "f4"),
            ("z", "f4"),
            ("red", "u1"),
            ("green", "u1"),
            ("blue", "u1"),
            ("confidence", "f4"),
            ("source", "u1"),
        ],
    )
    for i, axis in enumerate("xyz"):
        vertices[axis] = xyz[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        vertices[channel] = rgb[:, i]
    vertices["confidence"] = confidence
    vertices["source"] = source
    _write_atomic(path, PlyElement.describe(vertices, "vertex"))


def read_points_ply(path) -> tuple[np.ndarray, np.ndarray]:
    """(xyz float32 (N, 3), rgb uint8 (N, 3)) from a PLY written by `write_points_ply`; an
    InputError naming the file for anything else (not a PLY, no coloured vertices, non-finite points)."""
    try:
        vertices = PlyData.read(str(path))["vertex"]
        xyz = np.stack([vertices[a] for a in "xyz"], axis=1).astype(np.float32)
        rgb = np.stack([vertices[c] for c in ("red", "green", "blue")], axis=1).astype(np.uint8)
    except (PlyParseError, OSError, ValueError, KeyError, EOFError) as err:
        raise InputError(
            f"{path}: not a point cloud PLY with x, y, z, red, green, blue ({type(err).__name__}: {err})"
        ) from err
    bad = ~np.isfinite(xyz).all(axis=1)
    if bad.any():
        raise InputError(
            f"{path}: {bad.sum()} of {len(xyz)} points have a non-finite coordinate (first: vertex {np.argmax(bad)})"
        )
    return xyz, rgb


def write_splat_ply(
    path: Path,
    means: np.ndarray,
    sh_dc: np.ndarray,
    sh_rest: np.ndarray,
    opacity_logits: np.ndarray,
    log_scales: np.ndarray,
    quats: np.ndarray,
) -> int:
    """Gaussians as a 3DGS PLY: x y z, nx ny nz (zero), f_dc_0..2, f_rest_* (channel-major, as
    the reference code orders them), opacity (logit), scale_0..2 (log), rot_0..3 (wxyz), all
    float. `sh_rest` is (N, K, 3) as splatfacto holds it. Gaussians with a non-finite value or
    an opacity under 1/255 are left out, as nerfstudio's exporter does. Returns the count written."""
    count = len(means)
    sh_rest = sh_rest.transpose(0, 2, 1).reshape(count, -1)
    columns = {
        **{axis: means[:, i] for i, axis in enumerate("xyz")},
        **{normal: np.zeros(count, np.float32) for normal in ("nx", "ny", "nz")},
        **{f"f_dc_{i}": sh_dc[:, i] for i in range(3)},
        **{f"f_rest_{i}": sh_rest[:, i] for i in range(sh_rest.shape[1])},
        "opacity": opacity_logits.reshape(count),
        **{f"scale_{i}": log_scales[:, i] for i in range(3)},
        **{f"rot_{i}": quats[:, i] for i in range(4)},
    }
    keep = np.all([np.isfinite(column) for column in columns.values()], axis=0) & (
        columns["opacity"] >= MIN_OPACITY_LOGIT
    )
    vertices = np.empty(int(keep.sum()), dtype=[(name, "f4") for name in columns])
    for name, column in columns.items():
        vertices[name] = column[keep]
    _write_atomic(path, PlyElement.describe(vertices, "vertex"))
    return len(vertices)
