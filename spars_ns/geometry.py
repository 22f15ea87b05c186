"""Camera conventions and rigid/similarity transforms (numpy).

Conventions: `cam_from_world` is a 3x4 OpenCV world-to-camera matrix (x right, y down,
z forward), as COLMAP stores it; nerfstudio's `transform_matrix` is a 4x4 OpenGL
camera-to-world matrix (x right, y up, z backward).
"""

from __future__ import annotations

import numpy as np

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
