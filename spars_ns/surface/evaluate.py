"""A mesh scored against a synthetic scene's true surfaces (`spars_ns/synthetic.py`): Chamfer
distance both ways and F-score, for the tests and `scripts/bench_mesh.py`.

Both surfaces are sampled evenly by area. The true surface counts only where the
training cameras see it: a sample on a true rectangle is kept when it projects into a
training view in front of that view's true depth there (within 2% of its depth), so what
no photo shows is not asked of the mesh. Accuracy is each mesh sample's exact distance to
the nearest true rectangle (any part of it: a surface seen from elsewhere is still right);
completeness is each kept true sample's distance to the nearest mesh sample, which
overstates the distance to the mesh by less than the mesh's sample spacing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from spars_ns.geometry import project, transform
from spars_ns.synthetic import Quad, SyntheticScene

VISIBILITY_TOLERANCE = 0.02  # of the depth: a true sample this close to a view's true depth is seen


@dataclass
class SurfaceScores:
    accuracy: float  # mean distance, mesh -> true surface
    completeness: float  # mean distance, seen true surface -> mesh
    precision: float  # share of the mesh within `threshold` of the true surface
    recall: float  # share of the seen true surface within `threshold` of the mesh
    threshold: float
    extent: float  # diagonal of the seen true surface's bounding box

    @property
    def chamfer(self) -> float:
        """The mean of the two directed distances."""
        return (self.accuracy + self.completeness) / 2

    @property
    def f_score(self) -> float:
        total = self.precision + self.recall
        return 2 * self.precision * self.recall / total if total > 0 else 0.0


def sample_quads(quads: list[Quad], spacing: float) -> np.ndarray:
    """Points on a grid of about `spacing` over every rectangle, at cell centres."""
    samples = []
    for quad in quads:
        steps_u = max(1, round(np.linalg.norm(quad.u) / spacing))
        steps_v = max(1, round(np.linalg.norm(quad.v) / spacing))
        a, b = np.meshgrid((np.arange(steps_u) + 0.5) / steps_u, (np.arange(steps_v) + 0.5) / steps_v)
        samples.append(quad.origin + a.reshape(-1, 1) * quad.u + b.reshape(-1, 1) * quad.v)
    return np.concatenate(samples)


def seen_by(points: np.ndarray, scene: SyntheticScene, views: list[int]) -> np.ndarray:
    """Which points (N, 3) the given views of the scene see."""
    seen = np.zeros(len(points), bool)
    for index in views:
        true_depth = scene.render(index).depth
        cam_from_world = scene.cam_from_world[index]
        uv, z = project(transform(points, cam_from_world), scene.intrinsics)
        inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < scene.width) & (uv[:, 1] >= 0) & (uv[:, 1] < scene.height)
        depth_there = np.full(len(points), np.inf)
        depth_there[inside] = true_depth[uv[inside, 1].astype(int), uv[inside, 0].astype(int)]
        seen |= inside & (z < depth_there * (1 + VISIBILITY_TOLERANCE))
    return seen


def distance_to_quads(points: np.ndarray, quads: list[Quad]) -> np.ndarray:
    """Exact distance of each point (N, 3) to the nearest rectangle."""
    nearest = np.full(len(points), np.inf)
    for quad in quads:
        relative = points - quad.origin
        a = np.clip(relative @ quad.u / (quad.u @ quad.u), 0, 1)
        b = np.clip(relative @ quad.v / (quad.v @ quad.v), 0, 1)
        closest = quad.origin + a[:, None] * quad.u + b[:, None] * quad.v
        nearest = np.minimum(nearest, np.linalg.norm(points - closest, axis=1))
    return nearest


def sample_mesh(vertices: np.ndarray, faces: np.ndarray, spacing: float, seed: int = 0) -> np.ndarray:
    """About one point per `spacing`^2 of area, uniform over the triangles."""
    corners = vertices[faces].astype(np.float64)
    areas = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1) / 2
    count = max(1, int(areas.sum() / spacing**2))
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(faces), count, p=areas / areas.sum())
    r1, r2 = np.sqrt(rng.random(count))[:, None], rng.random(count)[:, None]
    a, b, c = corners[chosen, 0], corners[chosen, 1], corners[chosen, 2]
    return (1 - r1) * a + r1 * (1 - r2) * b + r1 * r2 * c


@dataclass
class SeenSurface:
    """The true surface that some views of a synthetic scene see, sampled, with the F-score
    threshold: `threshold_of_extent` of its bounding-box diagonal."""

    scene: SyntheticScene
    samples: np.ndarray  # (N, 3), about `threshold` / 4 apart
    threshold: float
    extent: float

    @classmethod
    def of(cls, scene: SyntheticScene, views: list[int], threshold_of_extent: float = 0.01) -> SeenSurface:
        coarse = sample_quads(scene.quads, spacing=0.05)
        extent = float(np.linalg.norm(np.ptp(coarse[seen_by(coarse, scene, views)], axis=0)))
        threshold = threshold_of_extent * extent
        samples = sample_quads(scene.quads, spacing=threshold / 4)
        return cls(scene, samples[seen_by(samples, scene, views)], threshold, extent)

    def score(self, vertices: np.ndarray, faces: np.ndarray) -> SurfaceScores:
        """Scores of a mesh in the scene's true frame."""
        mesh_points = sample_mesh(vertices, faces, spacing=self.threshold / 10)
        to_truth = distance_to_quads(mesh_points, self.scene.quads)
        to_mesh, _ = cKDTree(mesh_points).query(self.samples, workers=-1)
        return SurfaceScores(
            accuracy=float(to_truth.mean()),
            completeness=float(to_mesh.mean()),
            precision=float((to_truth < self.threshold).mean()),
            recall=float((to_mesh < self.threshold).mean()),
            threshold=self.threshold,
            extent=self.extent,
        )
