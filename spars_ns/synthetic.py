"""Synthetic textured scenes with exact ground truth, for tests, benchmarks and the demo.

A scene is a set of textured rectangles (a ground plane, walls, and boxes made of six
rectangles each), ray-cast in numpy from pinhole cameras on an arc. Rendering returns the
images together with per-pixel depth and object ids, so every later stage can be checked
against the truth. Textures are multi-octave value noise: blob-like structure at many
scales, which SIFT and learned detectors both find and match.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from spars_ns.geometry import (
    axis_angle_rotation,
    camera_center,
    centred_pinhole,
    inverse_transform,
    look_at,
    opencv_to_opengl_c2w,
    pixel_centres,
    project,
    rays,
    transform,
    unproject,
)

WALL_REPEATS = 4  # tiles along each wall of a `repeated` walk-around: 4 units apart in a 16-unit yard


@dataclass
class Quad:
    """A textured rectangle: corner `origin`, perpendicular edges `u` and `v`."""

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    texture: np.ndarray  # (th, tw, 3) float32 in [0, 1]
    object_id: int


@dataclass
class RenderedView:
    image: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32 z-depth along the optical axis, inf where nothing is hit
    object_ids: np.ndarray  # (H, W) int32, -1 where nothing is hit


@dataclass
class SyntheticScene:
    quads: list[Quad]
    intrinsics: np.ndarray  # (3, 3)
    width: int
    height: int
    cam_from_world: np.ndarray  # (N, 3, 4) OpenCV convention
    num_objects: int

    @property
    def num_views(self) -> int:
        return len(self.cam_from_world)

    def render(self, index: int) -> RenderedView:
        return render_view(self.quads, self.intrinsics, self.cam_from_world[index], self.width, self.height)

    def image_name(self, index: int) -> str:
        return f"view_{index:03d}.png"

    def write_images(self, folder: Path) -> list[Path]:
        """Render every view as a PNG into `folder`; returns the paths in view order."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i in range(self.num_views):
            path = folder / self.image_name(i)
            Image.fromarray(self.render(i).image).save(path)
            paths.append(path)
        return paths

    def write_ground_truth(self, path: Path) -> None:
        """Ground-truth cameras as a nerfstudio `transforms.json` (as in ../shared/data)."""
        fx, fy, cx, cy = self.intrinsics[0, 0], self.intrinsics[1, 1], self.intrinsics[0, 2], self.intrinsics[1, 2]
        frames = []
        for i in range(self.num_views):
            c2w = opencv_to_opengl_c2w(self.cam_from_world[i])
            frames.append({"file_path": f"images/{self.image_name(i)}", "transform_matrix": c2w.tolist()})
        meta = {
            "camera_model": "PINHOLE",
            "fl_x": float(fx),
            "fl_y": float(fy),
            "cx": float(cx),
            "cy": float(cy),
            "w": self.width,
            "h": self.height,
            "frames": frames,
        }
        path.write_text(json.dumps(meta, indent=2))


def noise_texture(rng: np.random.Generator, size: int, octaves: int = 5, falloff: float = 1.4) -> np.ndarray:
    """Coloured multi-octave value noise in [0, 1], contrast-stretched; each octave `falloff`
    times fainter than the one before (1: as strong at every scale)."""
    texture = np.zeros((size, size, 3), np.float32)
    for octave in range(octaves):
        cells = 4 * 2**octave
        coarse = (rng.random((cells, cells, 3)) * 255).astype(np.uint8)
        up = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), np.float32) / 255.0
        texture += up / (falloff**octave)
    texture -= texture.min(axis=(0, 1))
    texture /= texture.max(axis=(0, 1))
    return texture


def box_quads(center, size, yaw: float, texture_fn, object_id: int) -> list[Quad]:
    """Six outward rectangles of a box standing on z = center z - size z / 2, rotated by yaw about z."""
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    half = np.asarray(size, float) / 2
    ex, ey, ez = (rot[:, i] * 2 * half[i] for i in range(3))
    corner = np.asarray(center, float) - rot @ half
    faces = [
        (corner, ex, ez),
        (corner + ey, ez, ex),  # -y, +y
        (corner, ez, ey),
        (corner + ex, ey, ez),  # -x, +x
        (corner, ey, ex),
        (corner + ez, ex, ey),  # -z, +z
    ]
    return [Quad(o, u, v, texture_fn(), object_id) for o, u, v in faces]


def make_scene(
    num_views: int = 8,
    width: int = 320,
    height: int = 240,
    arc_degrees: float = 60.0,
    seed: int = 0,
) -> SyntheticScene:
    """A room corner with four boxes, seen from `num_views` cameras on an arc.

    Object ids: 0 ground, 1 back wall, 2 left wall, 3..6 boxes.
    """
    rng = np.random.default_rng(seed)

    def texture():
        return noise_texture(rng, 384)

    quads = [
        Quad(np.array([-4.0, -4.0, 0.0]), np.array([8.0, 0, 0]), np.array([0, 8.0, 0]), texture(), 0),
        Quad(np.array([-4.0, 3.0, 0.0]), np.array([8.0, 0, 0]), np.array([0, 0, 4.0]), texture(), 1),
        Quad(np.array([-3.5, -4.0, 0.0]), np.array([0, 8.0, 0]), np.array([0, 0, 4.0]), texture(), 2),
    ]
    boxes = [
        ((-1.2, 0.6, 0.5), (1.0, 1.0, 1.0), 0.3),
        ((0.9, 1.2, 0.75), (0.8, 1.2, 1.5), -0.4),
        ((0.3, -0.6, 0.3), (0.6, 0.6, 0.6), 0.8),
        ((-0.4, 2.0, 0.9), (1.4, 0.5, 1.8), 0.1),
    ]
    for k, (center, size, yaw) in enumerate(boxes):
        quads += box_quads(center, size, yaw, texture, 3 + k)

    focal = 0.9 * width
    intrinsics = centred_pinhole(focal, width, height)
    target = np.array([0.0, 0.8, 0.6])
    angles = np.deg2rad(np.linspace(-arc_degrees / 2, arc_degrees / 2, num_views)) - np.pi / 2
    cams = []
    for i, a in enumerate(angles):
        eye = np.array([6.0 * np.cos(a), 0.8 + 6.0 * np.sin(a) * 0.9, 2.2 + 0.3 * np.sin(1.7 * i)])
        cams.append(look_at(eye, target, up=np.array([0.0, 0.0, 1.0])))
    return SyntheticScene(quads, intrinsics, width, height, np.stack(cams), num_objects=3 + len(boxes))


def make_walkaround(
    num_views: int = 8,
    width: int = 384,
    height: int = 288,
    arc_degrees: float = 360.0,
    seed: int = 0,
    steady: bool = False,
    repeated: bool = False,
) -> SyntheticScene:
    """Boxes in the middle of a walled yard, photographed walking around them: `num_views`
    handheld cameras spread over `arc_degrees` of a circle about the middle (360: all round).
    With `steady`, frames of a video walked along the arc instead: every camera at the first one's
    distance and height, aimed at its point, so that a small arc (a few degrees) gives photos from
    nearly one place, the low-parallax captures SfM must still place. With `repeated`, every wall is
    one tile, a quarter of a wall wide, repeated along it, as arcades and rows of windows are: matches
    that fit a wall at the wrong place, the captures where SfM can build a wrong model.

    Unlike `make_scene`'s 60-degree arc, neighbouring views here are 45-120 degrees apart at
    3-8 views all round (26-90 over 180 degrees): the wide captures SfM finds hardest. The seed
    draws the textures, the boxes, the focal length (0.7-1.1 of the width) and each camera's
    place, aim and roll.
    Object ids: 0 ground, 1-4 walls, 5.. boxes.
    """
    rng = np.random.default_rng(seed)
    half, wall_height = 8.0, 5.0

    def texture():  # finer and stronger detail than make_scene's room: 256 cells across 16 units
        return noise_texture(rng, 1024, octaves=7, falloff=1.1)

    def box_texture():
        return noise_texture(rng, 512, octaves=6, falloff=1.1)

    ground = Quad(np.array([-half, -half, 0.0]), np.array([2 * half, 0, 0]), np.array([0, 2 * half, 0]), texture(), 0)
    corners = [np.array(c) for c in ([-half, -half, 0.0], [half, -half, 0.0], [half, half, 0.0], [-half, half, 0.0])]
    up = np.array([0.0, 0.0, wall_height])
    walls = [Quad(a, b - a, up, texture(), 1 + i) for i, (a, b) in enumerate(zip(corners, corners[1:] + corners[:1]))]
    if repeated:  # drawn as above all the same, so that a seed places the boxes and cameras alike
        walls = [
            replace(w, texture=np.tile(w.texture[:, : w.texture.shape[1] // WALL_REPEATS], (1, WALL_REPEATS, 1)))
            for w in walls
        ]
    quads = [ground, *walls]
    num_boxes = 5
    for k in range(num_boxes):
        size = rng.uniform([0.5, 0.5, 0.4], [1.4, 1.4, 1.8])
        radius, angle = rng.uniform(0, 1.8), rng.uniform(0, 2 * np.pi)
        center = (radius * np.cos(angle), radius * np.sin(angle), size[2] / 2)
        quads += box_quads(center, size, rng.uniform(0, np.pi), box_texture, 5 + k)

    focal = rng.uniform(0.7, 1.1) * width
    intrinsics = centred_pinhole(focal, width, height)
    full_circle = arc_degrees >= 360
    step = np.deg2rad(arc_degrees) / (num_views if full_circle else max(num_views - 1, 1))
    angles = rng.uniform(0, 2 * np.pi) + step * np.arange(num_views) + rng.uniform(-0.1, 0.1, num_views) * step
    cams = []
    first = None  # the first camera's distance factor, height and aim, which a steady walk keeps
    for a in angles:
        # drawn for every camera, steady or not, so that a seed gives the same textures and boxes
        placement = (
            rng.uniform(0.9, 1.1),
            rng.uniform(1.4, 2.0),
            np.array([*rng.uniform(-0.4, 0.4, 2), rng.uniform(0.5, 0.9)]),
        )
        first = first or placement
        distance, eye_height, aim = first if steady else placement
        eye = np.array([5.0 * np.cos(a) * distance, 5.0 * np.sin(a) * distance, eye_height])
        cam = look_at(eye, aim, up=np.array([0.0, 0.0, 1.0]))
        roll = axis_angle_rotation(np.array([0.0, 0.0, 1.0]), np.deg2rad(rng.normal(0, 2)))
        cams.append(roll @ cam)
    return SyntheticScene(quads, intrinsics, width, height, np.stack(cams), num_objects=5 + num_boxes)


def render_view(
    quads: list[Quad], intrinsics: np.ndarray, cam_from_world: np.ndarray, width: int, height: int
) -> RenderedView:
    rot = cam_from_world[:, :3]
    eye = camera_center(cam_from_world)
    pixels = pixel_centres(height, width).reshape(-1, 3)
    dirs_cam = rays(pixels, intrinsics)  # z = 1: ray parameter t is z-depth
    dirs = dirs_cam @ rot  # world directions (rot.T @ d for each row)

    depth = np.full(len(pixels), np.inf)
    colour = np.zeros((len(pixels), 3), np.float32)
    ids = np.full(len(pixels), -1, np.int32)
    for quad in quads:
        normal = np.cross(quad.u, quad.v)
        denom = dirs @ normal
        with np.errstate(divide="ignore", invalid="ignore"):
            t = ((quad.origin - eye) @ normal) / denom
        hit_point = eye + t[:, None] * dirs
        rel = hit_point - quad.origin
        a = rel @ quad.u / (quad.u @ quad.u)
        b = rel @ quad.v / (quad.v @ quad.v)
        hit = (t > 1e-6) & (t < depth) & (a >= 0) & (a <= 1) & (b >= 0) & (b <= 1)
        if not hit.any():
            continue
        depth[hit] = t[hit]
        ids[hit] = quad.object_id
        colour[hit] = _sample_bilinear(quad.texture, a[hit], b[hit])

    image = (np.clip(colour, 0, 1) * 255 + 0.5).astype(np.uint8).reshape(height, width, 3)
    return RenderedView(image, depth.reshape(height, width).astype(np.float32), ids.reshape(height, width))


def _sample_bilinear(texture: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    th, tw = texture.shape[:2]
    x = np.clip(a * (tw - 1), 0, tw - 1)
    y = np.clip(b * (th - 1), 0, th - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, tw - 1), np.minimum(y0 + 1, th - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = texture[y0, x0] * (1 - fx) + texture[y0, x1] * fx
    bottom = texture[y1, x0] * (1 - fx) + texture[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def camera_points(scene: SyntheticScene, index: int) -> tuple[np.ndarray, RenderedView]:
    """True points of a view in its camera frame (h, w, 3; inf where nothing is hit) and the render."""
    view = scene.render(index)
    return unproject(pixel_centres(scene.height, scene.width), view.depth, scene.intrinsics), view


def distorted_pointmap(
    scene: SyntheticScene,
    index: int,
    seed: int,
    object_scale: float = 0.1,
    object_shift: float = 0.03,
    noise: float = 0.002,
    wrong_objects: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A pointmap that errs the way learned priors do, for view `index`.

    Every object but the ground is scaled about its centroid by 1 +- `object_scale` and
    shifted by `object_shift` of the median depth; `wrong_objects` boxes get depth that no
    similarity explains; every point gets Gaussian noise of `noise` times its depth; and the
    whole map is put in a foreign frame by a random similarity.
    Returns (pts3d (h, w, 3) float32, conf (h, w) float32, noise-free true camera-frame points).
    """
    rng = np.random.default_rng(seed * 1000 + index)
    points, hit, true_points = _learned_prior_errors(
        scene, index, rng, object_scale, object_shift, noise, wrong_objects
    )
    angle = rng.uniform(0, 2 * np.pi)
    rotation = axis_angle_rotation(rng.normal(size=3), angle)
    foreign = rng.uniform(0.5, 2.0) * points @ rotation.T + rng.normal(size=3)
    conf = hit.astype(np.float32)
    return np.where(hit[..., None], foreign, 0).astype(np.float32), conf, true_points


def _learned_prior_errors(
    scene: SyntheticScene,
    index: int,
    rng: np.random.Generator,
    object_scale: float,
    object_shift: float,
    noise: float,
    wrong_objects: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`distorted_pointmap`'s errors on view `index`'s camera-frame points: (points (h, w, 3),
    hit (h, w), true points)."""
    true_points, view = camera_points(scene, index)
    hit = view.object_ids >= 0
    points = np.where(hit[..., None], true_points, 0.0)
    median_depth = float(np.median(view.depth[hit]))
    boxes = [k for k in np.unique(view.object_ids) if k >= 3]
    wrong = set(rng.choice(boxes, min(wrong_objects, len(boxes)), replace=False).tolist()) if boxes else set()
    for k in np.unique(view.object_ids):
        if k <= 0:
            continue
        mask = view.object_ids == k
        centre = points[mask].mean(0)
        if k in wrong:
            # Depth along each ray scaled by a random smooth ramp: no similarity explains it.
            ramp = 1.0 + 0.6 * (np.linspace(0, 1, mask.sum()) - 0.5) * rng.choice([-1, 1])
            points[mask] = points[mask] * ramp[:, None]
            continue
        scale = 1 + rng.uniform(-object_scale, object_scale)
        points[mask] = (points[mask] - centre) * scale + centre + rng.normal(scale=object_shift * median_depth, size=3)
    points += rng.normal(size=points.shape) * noise * np.where(hit, view.depth, 0)[..., None]
    return points, hit, true_points


def shared_frame_prior(
    scene: SyntheticScene,
    seed: int,
    rotation_error_deg: float = 1.0,
    position_error: float = 0.01,
    focal_error: float = 0.02,
) -> list[dict[str, np.ndarray]]:
    """What a DUSt3R-style global alignment gives: every view's pointmap in ONE foreign frame
    (a random similarity of the true world), with a camera per view in that frame.

    Each camera errs: its orientation by `rotation_error_deg` about a random axis, its centre
    by `position_error` of the view's median depth in a random direction, its focal length by
    up to `focal_error`. Each view's points carry `distorted_pointmap`'s errors and are placed
    by that view's own erring camera, as a prior's points are. Per view: `pts3d` (h, w, 3),
    `conf` (h, w), `cam_from_world` (3x4, foreign frame to OpenCV camera) and `intrinsics`
    (3x3 at the map's resolution, OpenCV's pixel convention: pixel centres at integers).
    """
    frame_rng = np.random.default_rng(seed)
    frame_rotation = axis_angle_rotation(frame_rng.normal(size=3), frame_rng.uniform(0, 2 * np.pi))
    frame_scale, frame_shift = frame_rng.uniform(0.5, 2.0), frame_rng.normal(size=3)
    views = []
    for index in range(scene.num_views):
        rng = np.random.default_rng(seed * 1000 + index)
        points, hit, _ = _learned_prior_errors(scene, index, rng, 0.1, 0.03, 0.002, 1)
        true_rotation, true_translation = scene.cam_from_world[index][:, :3], scene.cam_from_world[index][:, 3]
        rotation = axis_angle_rotation(rng.normal(size=3), np.radians(rotation_error_deg)) @ true_rotation
        direction = rng.normal(size=3)
        median_depth = float(np.median(points[hit][:, 2]))
        centre = -true_rotation.T @ true_translation + position_error * median_depth * direction / np.linalg.norm(
            direction
        )
        world = points @ rotation + centre  # the camera-frame points placed by the erring camera
        foreign = frame_scale * world @ frame_rotation.T + frame_shift
        # x_cam = rotation (x - centre) with x = frame_rotation^T (foreign - frame_shift) / frame_scale, in
        # foreign units.
        cam_rotation = rotation @ frame_rotation.T
        cam_translation = -cam_rotation @ frame_shift - frame_scale * rotation @ centre
        cam_from_world = np.concatenate([cam_rotation, cam_translation[:, None]], 1)
        intrinsics = scene.intrinsics.copy()
        intrinsics[:2, :2] *= 1 + rng.uniform(-focal_error, focal_error)
        intrinsics[:2, 2] -= 0.5  # the scene's pixel centres are at +0.5
        views.append(
            {
                "pts3d": np.where(hit[..., None], foreign, 0).astype(np.float32),
                "conf": hit.astype(np.float32),
                "cam_from_world": cam_from_world,
                "intrinsics": intrinsics,
            }
        )
    return views


def write_prior_files(scene: SyntheticScene, folder: Path, seed: int) -> Path:
    """`distorted_pointmap` of every view as `<stem>.npz` (pts3d, conf): a files prior for `--prior files`."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(scene.num_views):
        pts3d, conf, _ = distorted_pointmap(scene, index, seed=seed)
        np.savez(folder / f"{Path(scene.image_name(index)).stem}.npz", pts3d=pts3d, conf=conf)
    return folder


def sparse_observations(
    scene: SyntheticScene, points_per_view: int = 400, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """What an ideal SfM would give: surface points sampled from every view, and per view the
    ones it sees unoccluded as (pixel xy (N, 2), depth (N,), point ids (N,))."""
    rng = np.random.default_rng(seed)
    renders = [scene.render(i) for i in range(scene.num_views)]
    pool = []
    for i, view in enumerate(renders):
        rows, cols = np.nonzero(view.object_ids >= 0)
        pick = rng.choice(len(rows), min(points_per_view, len(rows)), replace=False)
        uv = np.stack([cols[pick] + 0.5, rows[pick] + 0.5, np.ones(len(pick))], 1)
        cam = unproject(uv, view.depth[rows[pick], cols[pick]], scene.intrinsics)
        pool.append(inverse_transform(cam, scene.cam_from_world[i]))
    world = np.concatenate(pool)
    observations = []
    for i, view in enumerate(renders):
        uv, z = project(transform(world, scene.cam_from_world[i]), scene.intrinsics)
        inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < scene.width) & (uv[:, 1] >= 0) & (uv[:, 1] < scene.height)
        rendered = np.full(len(z), np.inf)
        rendered[inside] = view.depth[uv[inside, 1].astype(int), uv[inside, 0].astype(int)]
        visible = inside & (np.abs(rendered - z) < 0.01 * z)
        observations.append((uv[visible], z[visible], np.flatnonzero(visible)))
    return observations
