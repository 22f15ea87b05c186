"""Frozen-depth refinement (after FrozenRecon, with Dust to Tower's confidence weighting).

The depth model stays frozen; per image only a few numbers are solved: a global scale
and shift, and a G x G grid of local scale multipliers and shifts, bilinearly
interpolated into smooth maps (2 + 2 G^2 numbers, 52 for G = 5). For a prior map m
(depth, or disparity), refined depth is

    depth:      D = s * A(p) * m + t + B(p)
    disparity:  D = 1 / (s * A(p) * m + t + B(p))

The global stage fits s, t per image to the SfM points it sees (weighted least squares,
in disparity space for disparity, refit without the worst 10%); an image with no SfM
points is fitted the same way to the depth its overlapping, fitted neighbours see there.
The local stage then solves all images jointly with Adam on: agreement with SfM points,
consistency of each depth map reprojected into overlapping views, and a pull of A toward 1
and B toward 0; residuals are log depth ratios, every term is weighted by the prior's
confidence, and after a warm-up the worst residuals are dropped (as FrozenRecon does) so
occlusions and outliers stop pulling.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from spars_ns.geometry import inverse_transform, project, transform, unproject
from spars_ns.stages.base import SEED
from spars_ns.stages.refine.config import RefineConfig

# Measured with scripts/bench_refine.py (BENCHMARKS.md, "Refinement"):
LEARNING_RATE = 0.02
FINAL_LR_RATIO = 0.01  # the step decays to this share of LEARNING_RATE by the last iteration
SFM_WEIGHT = 1.0
CONSISTENCY_WEIGHT = 1.0
GRID_WEIGHT = 1e-3  # pull of the local grid toward identity
TRIM_AFTER = 60  # iterations before the worst residuals are dropped
TRIM_FRACTION = 0.1
SAMPLES_PER_PAIR = (
    256  # pixels of each view checked in each overlapping view per step (2048: same AbsRel, 2.5x the time)
)
MIN_SHARED_POINTS = 20  # SfM points two views must share to be checked for consistency


@dataclass
class RefineView:
    """One image's inputs at the prior's working resolution (h, w)."""

    prior: np.ndarray  # (h, w) depth or disparity; invalid where not finite or <= 0
    conf: np.ndarray  # (h, w) >= 0
    intrinsics: np.ndarray  # (3, 3) pinhole at working resolution
    cam_from_world: np.ndarray  # (3, 4)
    sfm_uv: np.ndarray  # (N, 2) working pixel coordinates of SfM points seen by the image
    sfm_depth: np.ndarray  # (N,) their depth in this camera
    sfm_ids: np.ndarray  # (N,) SfM point ids, to find overlapping views
    sfm_world: np.ndarray | None = None  # (N, 3) the SfM points; needed to refine poses


class Fit(Enum):
    """Where a view's global scale and shift came from."""

    SFM = "sfm"  # its own SfM points
    NEIGHBOURS = "neighbours"  # the depth its overlapping, fitted views see there
    NONE = "unrefined"  # neither: the view gets no depth


@dataclass
class RefineResult:
    depth: np.ndarray  # (h, w) refined depth, nan where invalid or unrefined
    scale: float
    shift: float
    fit: Fit
    sfm_abs_rel_before: float
    sfm_abs_rel_after: float
    cam_from_world: np.ndarray | None = None  # (3, 4) when poses were refined
    focal_scale: float = 1.0
    local_rejected: bool = False  # the local stage worsened the SfM agreement: the global fit is kept

    @property
    def refined(self) -> bool:
        return self.fit is not Fit.NONE

    @property
    def status(self) -> str:
        """How the view was refined, for the report."""
        if self.fit is Fit.NONE:
            return "unrefined: no SfM points and no overlapping view with any"
        return self.fit.value + (
            " (local refinement rejected: it worsened the SfM agreement)" if self.local_rejected else ""
        )


def _valid(view: RefineView) -> np.ndarray:
    return np.isfinite(view.prior) & (view.prior > 0) & np.isfinite(view.conf) & (view.conf > 0)


def _sample(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear samples at working pixel coordinates; NaN next to a NaN pixel."""
    return _bilinear(
        torch.as_tensor(image, dtype=torch.float64)[None],
        torch.zeros(len(uv), dtype=torch.long),
        torch.as_tensor(uv, dtype=torch.float64),
    ).numpy()


def fit_global(view: RefineView, kind: Literal["depth", "disparity"]) -> tuple[float, float] | None:
    """Weighted least-squares scale and shift of the prior onto the view's SfM depths."""
    if len(view.sfm_uv) < 2:
        return None
    valid = _valid(view)
    values = _sample(np.where(valid, view.prior, np.nan), view.sfm_uv)
    weights = _sample(np.where(valid, view.conf, 0.0), view.sfm_uv)
    ok = np.isfinite(values) & (weights > 0) & (view.sfm_depth > 0)
    if ok.sum() < 2:
        return None
    values, target = values[ok], (view.sfm_depth[ok] if kind == "depth" else 1.0 / view.sfm_depth[ok])
    weights = weights[ok] / target if kind == "depth" else weights[ok]  # depth: relative error
    keep = np.ones(len(values), bool)
    for _ in range(2):  # fit, drop the worst residuals (points across depth edges), refit
        design = np.stack([values[keep], np.ones(keep.sum())], 1) * np.sqrt(weights[keep])[:, None]
        solution, *_ = np.linalg.lstsq(design, target[keep] * np.sqrt(weights[keep]), rcond=None)
        residual = np.abs(solution[0] * values + solution[1] - target) / np.abs(target)
        keep = residual <= np.quantile(residual, 0.9)
    return float(solution[0]), float(solution[1])


def _global_depth(view: RefineView, fit: tuple[float, float], kind: str) -> np.ndarray:
    value = fit[0] * np.where(_valid(view), view.prior, np.nan) + fit[1]
    return value if kind == "depth" else 1.0 / value


def _observed_by(views, i, others, depths, count, seed) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (N, 2) and depths (N,) in view i of points of the `others` views' depth maps."""
    rng = np.random.default_rng(seed)
    target = views[i]
    h, w = target.prior.shape
    uvs, zs = [np.zeros((0, 2))], [np.zeros(0)]
    for j in others:
        rows, cols = np.nonzero(np.isfinite(depths[j]) & (depths[j] > 0))
        pick = rng.choice(len(rows), min(count, len(rows)), replace=False)
        pixels = np.stack([cols[pick] + 0.5, rows[pick] + 0.5, np.ones(len(pick))], 1)
        cam_j = unproject(pixels, depths[j][rows[pick], cols[pick]], views[j].intrinsics)
        cam_i = transform(inverse_transform(cam_j, views[j].cam_from_world), target.cam_from_world)
        uv, z = project(cam_i, target.intrinsics)
        inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
        uvs.append(uv[inside])
        zs.append(z[inside])
    return np.concatenate(uvs), np.concatenate(zs)


def _to_depth(affine: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "depth":
        return affine
    return 1.0 / affine.clamp_min(1e-6)


def refine_depths(
    views: list[RefineView], mode: Literal["global", "local"], kind: Literal["depth", "disparity"], config: RefineConfig
) -> list[RefineResult]:
    """Refine every view's prior into depth in the SfM frame's units: a scale and shift per view,
    then (`local`) the smooth grids, and the cameras if asked, of all views jointly."""
    neighbours = _overlapping_pairs(views, MIN_SHARED_POINTS)
    fits = global_fits(views, kind, neighbours)
    torch.manual_seed(SEED)
    maps = _AffineMaps(views, [scale_shift or (1.0, 0.0) for scale_shift, _ in fits], config.grid, kind)
    local = mode == "local"
    cameras = _Cameras(views, config.refine_poses and local, config.refine_focal and local)
    moving = torch.tensor([fit is not Fit.NONE for _, fit in fits])
    if local and moving.any() and config.iterations > 0:
        solve_jointly(views, neighbours, maps, cameras, moving, config.iterations)
    with torch.no_grad():
        canvas = maps.depth_maps().numpy()
    return [_result(view, i, fit, canvas[i], maps, cameras) for i, (view, (_, fit)) in enumerate(zip(views, fits))]


def global_fits(
    views: list[RefineView], kind: str, neighbours: list[tuple[int, int]]
) -> list[tuple[tuple[float, float] | None, Fit]]:
    """Each view's scale and shift, and where they came from: its SfM points, or, for a view
    without, the depth that overlapping, fitted views see there."""
    fits = [fit_global(v, kind) for v in views]
    sources = [Fit.SFM if fit is not None else Fit.NONE for fit in fits]
    fitted = {i: _global_depth(v, fits[i], kind) for i, v in enumerate(views) if fits[i] is not None}
    for i, view in enumerate(views):
        if fits[i] is None:
            others = [j for pair in neighbours if i in pair for j in pair if j != i and j in fitted]
            uv, depth = _observed_by(views, i, others, fitted, SAMPLES_PER_PAIR, SEED)
            fits[i] = fit_global(replace(view, sfm_uv=uv, sfm_depth=depth), kind)
            sources[i] = Fit.NEIGHBOURS if fits[i] is not None else Fit.NONE
    return list(zip(fits, sources))


class _AffineMaps:
    """Refined depth of every view, D = s * A(p) * m + t + B(p) (or its inverse for disparity), with
    all views on one canvas (top-left aligned, padding invalid) for one batched pass per step."""

    def __init__(self, views: list[RefineView], init: list[tuple[float, float]], grid: int, kind: str):
        self.init, self.kind, self.grid = init, kind, grid
        self.height = max(v.prior.shape[0] for v in views)
        self.width = max(v.prior.shape[1] for v in views)
        self.priors = torch.zeros(len(views), self.height, self.width)
        self.confs = torch.zeros(len(views), self.height, self.width)
        for i, v in enumerate(views):
            h, w = v.prior.shape
            self.priors[i, :h, :w] = torch.as_tensor(np.where(_valid(v), v.prior, 0.0))
            self.confs[i, :h, :w] = torch.as_tensor(np.where(_valid(v), v.conf, 0.0))
        init_scale = torch.tensor([s for s, _ in init], dtype=torch.float32)
        self.init_shift = torch.tensor([t for _, t in init], dtype=torch.float32)
        # Shifts are learnt in units of the typical affine value, so one learning rate suits
        # any scene scale and both depth and disparity.
        typical = [init_scale[i].abs() * p[p > 0].median() for i, p in enumerate(self.priors) if (p > 0).any()]
        self.shift_unit = float(torch.stack(typical).median()) if typical else 1.0
        self.scale = init_scale.clone().requires_grad_(True)
        self.shift_delta = torch.zeros(len(views), requires_grad=True)
        self.grid_scale = torch.ones(len(views), 1, grid, grid, requires_grad=True)
        self.grid_shift = torch.zeros(len(views), 1, grid, grid, requires_grad=True)

    def parameters(self) -> list[torch.Tensor]:
        return [self.scale, self.shift_delta, self.grid_scale, self.grid_shift]

    def depth_maps(self) -> torch.Tensor:
        size = (self.height, self.width)
        local_scale = F.interpolate(self.grid_scale, size=size, mode="bilinear", align_corners=True)[:, 0]
        local_shift = F.interpolate(self.grid_shift, size=size, mode="bilinear", align_corners=True)[:, 0]
        shift = self.init_shift[:, None, None] + self.shift_unit * (self.shift_delta[:, None, None] + local_shift)
        return _to_depth(self.scale[:, None, None] * local_scale * self.priors + shift, self.kind)

    def depth_at(self, view: torch.Tensor, uv: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """Refined depth at points, from the prior value there: the same model as depth_maps,
        evaluated only where the losses look (the grids are interpolated like F.interpolate)."""
        g = self.grid
        grid_uv = torch.stack(
            [(uv[:, 0] - 0.5) / max(self.width - 1, 1), (uv[:, 1] - 0.5) / max(self.height - 1, 1)], 1
        ) * (g - 1)
        local_scale = _bilinear(self.grid_scale[:, 0], view, grid_uv + 0.5)
        local_shift = _bilinear(self.grid_shift[:, 0], view, grid_uv + 0.5)
        shift = self.init_shift[view] + self.shift_unit * (self.shift_delta[view] + local_shift)
        return _to_depth(self.scale[view] * local_scale * prior + shift, self.kind)

    def scale_shift(self, index: int) -> tuple[float, float]:
        return float(self.scale[index]), float(self.init_shift[index] + self.shift_unit * self.shift_delta[index])


def solve_jointly(
    views: list[RefineView],
    neighbours: list[tuple[int, int]],
    maps: _AffineMaps,
    cameras: _Cameras,
    moving: torch.Tensor,
    iterations: int,
) -> None:
    """The local stage: Adam on agreement with SfM points, consistency between overlapping views and
    the grids' pull toward identity; views in `moving` only."""
    sfm = _SfMTerm(views, maps.priors, maps.confs, cameras)
    pairs = _PairTerm(views, neighbours, SAMPLES_PER_PAIR, SEED, maps.priors, maps.confs)
    params = maps.parameters() + cameras.parameters()
    optimiser = torch.optim.Adam(
        [
            {"params": maps.parameters()},
            # Camera corrections are small: radians, depth units and log focal; steps of 0.03 degrees.
            {"params": cameras.parameters(), "lr": LEARNING_RATE * 0.025},
        ],
        lr=LEARNING_RATE,
    )
    # L1 gradients keep their size at the optimum: over the last 40% of the iterations
    # the step decays exponentially to settle there.
    settle = int(0.6 * iterations)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda t: FINAL_LR_RATIO ** (max(t - settle, 0) / max(iterations - settle, 1))
    )
    keep_sfm = torch.ones(len(sfm.view), dtype=torch.bool)
    keep_pair = torch.ones(len(pairs.src), dtype=torch.bool)
    for iteration in range(iterations):
        optimiser.zero_grad()
        sfm_res, sfm_weight = sfm.residuals(maps.depth_at, cameras)
        pair_res, pair_weight = pairs.residuals(maps.depth_at, maps.priors, maps.confs, cameras)
        loss = GRID_WEIGHT * (((maps.grid_scale - 1) ** 2).mean() + (maps.grid_shift**2).mean())
        loss = loss + SFM_WEIGHT * _weighted_l1(sfm_res, sfm_weight * keep_sfm)
        loss = loss + CONSISTENCY_WEIGHT * _weighted_l1(pair_res, pair_weight * keep_pair)
        if cameras.moves_poses or cameras.moves_focal:
            loss = loss + SFM_WEIGHT * _weighted_l1(sfm.reprojection(cameras), sfm_weight * keep_sfm)
        loss.backward()
        for p in params:
            p.grad[~moving] = 0
        optimiser.step()
        schedule.step()
        if iteration == TRIM_AFTER and TRIM_FRACTION > 0:
            keep_sfm = _keep_best(sfm_res.detach(), sfm_weight > 0, TRIM_FRACTION)
            keep_pair = _keep_best(pair_res.detach(), pair_weight > 0, TRIM_FRACTION)


@torch.no_grad()
def _result(
    view: RefineView, index: int, fit: Fit, canvas: np.ndarray, maps: _AffineMaps, cameras: _Cameras
) -> RefineResult:
    """A view's refined depth (its part of the `canvas`); the global fit's where the local stage
    worsened its SfM agreement."""
    if fit is Fit.NONE:
        return RefineResult(np.full(view.prior.shape, np.nan, np.float32), 1.0, 0.0, fit, np.nan, np.nan)
    valid = _valid(view)

    def usable(depth: np.ndarray) -> np.ndarray:
        return np.where(valid & np.isfinite(depth) & (depth > 0), depth, np.nan).astype(np.float32)

    h, w = view.prior.shape
    before = usable(_global_depth(view, maps.init[index], maps.kind))
    depth = usable(canvas[:h, :w])
    pose, focal_scale = cameras.refined(index)
    # With a corrected pose the SfM points' depths are those in the corrected camera.
    seen_after = view if pose is None else replace(view, sfm_depth=view.sfm_world @ pose[2, :3] + pose[2, 3])
    error_before, error_after = _sfm_abs_rel(before, view), _sfm_abs_rel(depth, seen_after)
    if error_after > error_before:  # local refinement must not undo the SfM agreement
        return RefineResult(before, *maps.init[index], fit, error_before, error_before, local_rejected=True)
    return RefineResult(depth, *maps.scale_shift(index), fit, error_before, error_after, pose, focal_scale)


def _sfm_abs_rel(depth: np.ndarray, view: RefineView) -> float:
    if len(view.sfm_uv) == 0:
        return float("nan")
    values = _sample(depth, view.sfm_uv)
    ok = np.isfinite(values) & (view.sfm_depth > 0)
    return float(np.mean(np.abs(values[ok] - view.sfm_depth[ok]) / view.sfm_depth[ok])) if ok.any() else float("nan")


def _log_ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(a / b): the relative error for small errors, symmetric, and tame when a depth from
    a disparity near zero blows up."""
    return torch.log(a.clamp_min(1e-6)) - torch.log(b.clamp_min(1e-6))


def _weighted_l1(residuals: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean of |residual|, saturating at 1 so that no single blown-up depth steers."""
    total = weights.sum()
    return (weights * residuals.abs().clamp(max=1.0)).sum() / total if total > 0 else residuals.sum() * 0


def _keep_best(residuals: torch.Tensor, counted: torch.Tensor, fraction: float) -> torch.Tensor:
    """Drops the worst `fraction` of the residuals that count."""
    if not counted.any():
        return counted
    return counted & (residuals.abs() <= torch.quantile(residuals.abs()[counted], 1 - fraction))


def _bilinear(maps: torch.Tensor, view: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """maps (V, h, w) sampled at uv (N, 2) working pixels of views `view` (N,), border-clamped."""
    _, h, w = maps.shape
    x = (uv[:, 0] - 0.5).clamp(0, w - 1)
    y = (uv[:, 1] - 0.5).clamp(0, h - 1)
    x0, y0 = x.floor().long().clamp(max=w - 2), y.floor().long().clamp(max=h - 2)
    fx, fy = x - x0, y - y0
    flat = maps.reshape(-1)
    base = view * h * w + y0 * w + x0
    top = flat[base] * (1 - fx) + flat[base + 1] * fx
    bottom = flat[base + w] * (1 - fx) + flat[base + w + 1] * fx
    return top * (1 - fy) + bottom * fy


def _overlapping_pairs(views: list[RefineView], min_shared: int) -> list[tuple[int, int]]:
    pairs = []
    for i in range(len(views)):
        for j in range(i + 1, len(views)):
            if len(np.intersect1d(views[i].sfm_ids, views[j].sfm_ids)) >= min_shared:
                pairs.append((i, j))
    return pairs


class _SfMTerm:
    """Refined depth against the SfM depth of every view's SfM points, relative."""

    def __init__(self, views: list[RefineView], priors: torch.Tensor, confs: torch.Tensor, cameras: _Cameras):
        self.view = torch.cat([torch.full((len(v.sfm_uv),), i) for i, v in enumerate(views)]).long()
        self.uv = torch.cat([torch.as_tensor(v.sfm_uv, dtype=torch.float32).reshape(-1, 2) for v in views])
        self.target = torch.cat([torch.as_tensor(v.sfm_depth, dtype=torch.float32).reshape(-1) for v in views])
        self.prior = _bilinear(priors, self.view, self.uv)
        self.weight = _bilinear(confs, self.view, self.uv) * (self.target > 0)
        self.world = None
        if cameras.moves_poses or cameras.moves_focal:
            if any(v.sfm_world is None for v in views):
                raise ValueError("refining cameras needs each view's SfM points (RefineView.sfm_world)")
            self.world = torch.cat([torch.as_tensor(v.sfm_world, dtype=torch.float32).reshape(-1, 3) for v in views])

    def residuals(self, depth_at, cameras: _Cameras) -> tuple[torch.Tensor, torch.Tensor]:
        target = self.target
        if self.world is not None and cameras.moves_poses:  # the SfM point's depth in the corrected camera
            rotation, translation = cameras.poses()
            target = torch.einsum("nj,nj->n", rotation[self.view, 2], self.world) + translation[self.view, 2]
        predicted = depth_at(self.view, self.uv, self.prior)
        return _log_ratio(predicted, target), self.weight

    def reprojection(self, cameras: _Cameras) -> torch.Tensor:
        """Angle (radians, approximately) between each SfM point's projection and its keypoint."""
        rotation, translation = cameras.poses()
        intrinsics = cameras.intrinsics()[self.view]
        cam = torch.einsum("nij,nj->ni", rotation[self.view], self.world) + translation[self.view]
        uv, _ = project(cam, intrinsics, min_depth=1e-6)
        return torch.linalg.norm(uv - self.uv, dim=1) / intrinsics[:, 0, 0]


class _PairTerm:
    """Depth of pixels of view i, moved into overlapping view j, against j's depth there."""

    def __init__(self, views, pairs, count, seed, priors: torch.Tensor, confs: torch.Tensor):
        rng = np.random.default_rng(seed)
        src, dst, uvs = [], [], []
        for a, b in pairs:
            for i, j in ((a, b), (b, a)):
                rows, cols = np.nonzero(_valid(views[i]))
                pick = rng.choice(len(rows), min(count, len(rows)), replace=False)
                uvs.append(np.stack([cols[pick] + 0.5, rows[pick] + 0.5], 1))
                src.append(np.full(len(pick), i))
                dst.append(np.full(len(pick), j))
        self.src = torch.as_tensor(np.concatenate(src) if src else np.zeros(0), dtype=torch.long)
        self.dst = torch.as_tensor(np.concatenate(dst) if dst else np.zeros(0), dtype=torch.long)
        self.uv = torch.as_tensor(np.concatenate(uvs) if uvs else np.zeros((0, 2)), dtype=torch.float32)
        self.prior = _bilinear(priors, self.src, self.uv)
        self.conf = _bilinear(confs, self.src, self.uv)
        self.homogeneous = torch.cat([self.uv, torch.ones(len(self.uv), 1)], 1)

    def residuals(self, depth_at, priors: torch.Tensor, confs: torch.Tensor, cameras: _Cameras):
        if len(self.src) == 0:
            return torch.zeros(0), torch.zeros(0)
        _, h, w = priors.shape
        intrinsics = cameras.intrinsics()
        rotation, translation = cameras.poses()
        cam_i = unproject(self.homogeneous, depth_at(self.src, self.uv, self.prior), intrinsics[self.src])
        # cam_j = R_j R_i^T (cam_i - t_i) + t_j
        rot_ji = rotation[self.dst] @ rotation[self.src].transpose(1, 2)
        cam_j = torch.einsum("nij,nj->ni", rot_ji, cam_i - translation[self.src]) + translation[self.dst]
        uv_j, z = project(cam_j, intrinsics[self.dst], min_depth=1e-6)
        uv_j = uv_j.detach()
        inside = (z > 0) & (uv_j[:, 0] >= 0) & (uv_j[:, 0] < w) & (uv_j[:, 1] >= 0) & (uv_j[:, 1] < h)
        depth_j = depth_at(self.dst, uv_j, _bilinear(priors, self.dst, uv_j))
        weight = self.conf * _bilinear(confs, self.dst, uv_j) * inside
        return _log_ratio(z, depth_j), weight


class _Cameras:
    """The views' poses and pinhole intrinsics, with optional learnt corrections: a rotation
    vector and a translation (in units of the median SfM depth) per view, and a log focal
    factor per view. Without corrections they are constants."""

    def __init__(self, views: list[RefineView], moves_poses: bool, moves_focal: bool):
        import roma

        self._rotvec_to_rotmat = roma.rotvec_to_rotmat
        self.moves_poses, self.moves_focal = moves_poses, moves_focal
        poses = torch.as_tensor(np.stack([v.cam_from_world for v in views]), dtype=torch.float32)
        self.rotation, self.translation = poses[:, :, :3], poses[:, :, 3]
        self.base_intrinsics = torch.as_tensor(np.stack([v.intrinsics for v in views]), dtype=torch.float32)
        depths = np.concatenate([v.sfm_depth for v in views] + [np.ones(1)])
        self.unit = float(np.median(depths))
        self.rotvec = torch.zeros(len(views), 3, requires_grad=moves_poses)
        self.shift = torch.zeros(len(views), 3, requires_grad=moves_poses)
        self.log_focal = torch.zeros(len(views), requires_grad=moves_focal)

    def parameters(self) -> list[torch.Tensor]:
        return ([self.rotvec, self.shift] if self.moves_poses else []) + ([self.log_focal] if self.moves_focal else [])

    def poses(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(R (V, 3, 3), t (V, 3)) of cam = R world + t, after the correction cam' = dR cam + dt."""
        if not self.moves_poses:
            return self.rotation, self.translation
        delta = self._rotvec_to_rotmat(self.rotvec)
        rotation = delta @ self.rotation
        translation = torch.einsum("nij,nj->ni", delta, self.translation) + self.unit * self.shift
        return rotation, translation

    def intrinsics(self) -> torch.Tensor:
        if not self.moves_focal:
            return self.base_intrinsics
        intrinsics = self.base_intrinsics.clone()
        intrinsics[:, 0, 0] = self.base_intrinsics[:, 0, 0] * self.log_focal.exp()
        intrinsics[:, 1, 1] = self.base_intrinsics[:, 1, 1] * self.log_focal.exp()
        return intrinsics

    def refined(self, index: int) -> tuple[np.ndarray | None, float]:
        with torch.no_grad():
            rotation, translation = self.poses()
            pose = torch.cat([rotation[index], translation[index, :, None]], 1).numpy().astype(float)
            return (pose if self.moves_poses else None), float(self.log_focal[index].exp())
