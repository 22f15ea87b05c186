"""Camera maths, written once: conventions, poses, projection and similarity transforms.

Conventions: `cam_from_world` is a 3x4 OpenCV world-to-camera matrix (x right, y down,
z forward), as COLMAP stores it; nerfstudio's `transform_matrix` is a 4x4 OpenGL
camera-to-world matrix (x right, y up, z backward). Pixel centres are at +0.5 (COLMAP's
convention) unless a function says otherwise. Points are rows (N, 3). `transform`,
`inverse_transform`, `rays`, `unproject` and `project` take numpy arrays or torch tensors.
"""

from __future__ import annotations

import numpy as np
import torch

# Flips the camera's y and z axes: OpenCV <-> OpenGL camera frames.
_CV_TO_GL = np.diag([1.0, -1.0, -1.0])


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """OpenCV cam_from_world (3x4) for a camera at `eye` looking at `target`."""
    forward = target - eye
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, up)
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    rot = np.stack([right, down, forward])  # rows: camera axes in world coordinates
    return np.concatenate([rot, (-rot @ eye)[:, None]], axis=1)


def opencv_to_opengl_c2w(cam_from_world: np.ndarray) -> np.ndarray:
    """OpenCV cam_from_world (3x4) -> OpenGL camera-to-world (4x4)."""
    rot, trans = cam_from_world[:3, :3], cam_from_world[:3, 3]
    c2w = np.eye(4)
    c2w[:3, :3] = rot.T @ _CV_TO_GL
    c2w[:3, 3] = -rot.T @ trans
    return c2w


def opengl_c2w_to_opencv(c2w: np.ndarray) -> np.ndarray:
    """OpenGL camera-to-world (4x4 or 3x4) -> OpenCV cam_from_world (3x4)."""
    rot_c2w = np.asarray(c2w)[:3, :3] @ _CV_TO_GL
    center = np.asarray(c2w)[:3, 3]
    return np.concatenate([rot_c2w.T, (-rot_c2w.T @ center)[:, None]], axis=1)


def camera_center(cam_from_world: np.ndarray) -> np.ndarray:
    return -cam_from_world[:3, :3].T @ cam_from_world[:3, 3]


def rotation_angle_deg(rot: np.ndarray) -> float:
    """Angle of a rotation matrix in degrees."""
    cos = np.clip((np.trace(rot) - 1) / 2, -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)))


def angle_between_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle between two vectors in degrees (0 when either is zero-length)."""
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na < 1e-12 or nb < 1e-12:
        return 0.0
    return float(np.degrees(np.arccos(np.clip(a @ b / (na * nb), -1.0, 1.0))))


def axis_angle_rotation(axis: np.ndarray, radians: float) -> np.ndarray:
    """Rotation matrix about `axis` (any length) by `radians` (Rodrigues)."""
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(radians) * k + (1 - np.cos(radians)) * k @ k


def neighbour_pairs(centres: np.ndarray) -> list[tuple[int, int]]:
    """Each camera paired with its nearest other camera (by centre, (N, 3)), each pair once, sorted."""
    distances = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    return sorted({tuple(sorted((i, int(np.argmin(row))))) for i, row in enumerate(distances)})


def fit_similarity(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(scale, rotation, translation) minimising |scale * R @ source + t - target|^2 over (N, 3)
    point pairs, N >= 3 (Umeyama's closed form, no reflection). pycolmap's estimate_sim3d
    returns None on some well-posed three-point sets, which a benchmark cannot skip."""
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    s, t = source - source_mean, target - target_mean
    u, singular, vt = np.linalg.svd(t.T @ s / len(source))
    sign = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ sign @ vt
    scale = float(np.trace(np.diag(singular) @ sign) / (s**2).sum(axis=1).mean())
    return scale, rotation, target_mean - scale * rotation @ source_mean


def transform(points, matrix):
    """Points (..., 3) through a 3x4 [R | t]: R x + t (with a cam_from_world: world to camera)."""
    return points @ matrix[:, :3].T + matrix[:, 3]


def inverse_transform(points, matrix):
    """Points (..., 3) back through a rigid 3x4 [R | t]: R^T (x - t) (with a cam_from_world: camera to world)."""
    return (points - matrix[:, 3]) @ matrix[:, :3]


def relative_pose(cam_from_world_1: np.ndarray, cam_from_world_2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cam2_from_cam1 as (rotation, translation)."""
    r1, t1 = cam_from_world_1[:3, :3], cam_from_world_1[:3, 3]
    r2, t2 = cam_from_world_2[:3, :3], cam_from_world_2[:3, 3]
    rot = r2 @ r1.T
    return rot, t2 - rot @ t1


def pixel_centres(height: int, width: int) -> np.ndarray:
    """(height, width, 3) homogeneous pixel centres (x + 0.5, y + 0.5, 1)."""
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    return np.stack([cols, rows, np.ones_like(cols)], -1)


def _apply(matrices, vectors):
    """One (3, 3) matrix, or one per vector (N, 3, 3), times vectors (..., 3)."""
    if matrices.ndim == 2:
        return vectors @ matrices.T
    einsum = torch.einsum if isinstance(vectors, torch.Tensor) else np.einsum
    return einsum("nij,nj->ni", matrices, vectors)


def _inverse(matrices):
    return torch.linalg.inv(matrices) if isinstance(matrices, torch.Tensor) else np.linalg.inv(matrices)


def rays(pixels, intrinsics):
    """Camera-frame rays at z = 1 through homogeneous pixels (..., 3) of pinhole `intrinsics` (3, 3; or (N, 3, 3))."""
    return _apply(_inverse(intrinsics), pixels)


def unproject(pixels, depth, intrinsics):
    """Camera-frame points of homogeneous pixels (..., 3) at z-depth `depth` (...)."""
    return rays(pixels, intrinsics) * depth[..., None]


def project(points, intrinsics, min_depth: float = 1e-9):
    """(pixels (..., 2), z-depths (...)) of camera-frame points (..., 3) through pinhole `intrinsics`
    (3, 3; or (N, 3, 3)); points at or behind the camera divide by `min_depth`: mask them by z."""
    z = points[..., 2]
    return _apply(intrinsics, points)[..., :2] / z.clip(min_depth)[..., None], z


def centred_pinhole(focal: float, width: int, height: int) -> np.ndarray:
    """Intrinsics (3x3) of a pinhole camera with its principal point at the photo's centre."""
    return np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])


def intrinsics_from_integer_centres(intrinsics: np.ndarray) -> np.ndarray:
    """Intrinsics in OpenCV's and DUSt3R's pixel convention (pixel centres at integers) -> ours
    (centres at +0.5)."""
    return np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]]) @ np.asarray(intrinsics, np.float64)


def intrinsics_to_integer_centres(intrinsics: np.ndarray) -> np.ndarray:
    """Our intrinsics (pixel centres at +0.5) -> OpenCV's (centres at integers)."""
    return np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]]) @ np.asarray(intrinsics, np.float64)


def working_intrinsics(intrinsics: np.ndarray, scale: tuple[float, float], offset: tuple[float, float]) -> np.ndarray:
    """Pinhole `intrinsics` (3, 3) in the pixels of a resized or cropped image, where an original
    pixel is `scale * working + offset`."""
    (sx, sy), (ox, oy) = scale, offset
    return np.array(
        [
            [intrinsics[0, 0] / sx, 0, (intrinsics[0, 2] - ox) / sx],
            [0, intrinsics[1, 1] / sy, (intrinsics[1, 2] - oy) / sy],
            [0, 0, 1],
        ]
    )
