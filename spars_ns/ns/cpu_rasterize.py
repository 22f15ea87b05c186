"""A pure-PyTorch stand-in for gsplat's `rasterization`, used where CUDA is absent.

gsplat 1.4.0 rasterises only with CUDA. Its PyTorch reference code (`gsplat.cuda._torch_impl`)
covers covariance, projection and spherical harmonics, and those are used here as they are;
its compositing still calls CUDA kernels and nerfacc, so compositing is done here, densely
over blocks of pixels, with gsplat's rules: 16-pixel tiles decide which Gaussians a pixel
sees, front to back by camera depth, alpha capped at 0.999, contributions under 1/255
skipped, and a pixel stops once its transmittance would fall to 1e-4. The outputs are what
splatfacto and gsplat's `DefaultStrategy` read: colours (and expected depth), alpha, and an
`info` dict with the 2D means (whose `.grad` and, on request, `.absgrad` are filled by the
backward pass) and radii.

It exists for tests and small demos on machines without a GPU: memory grows with pixels
times Gaussians per block, and it is orders of magnitude slower than gsplat.
"""

from __future__ import annotations

import torch
from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci, _spherical_harmonics

TILE = 16
BLOCK = 2 * TILE  # side of the square of pixels composited at once (2 tiles measured fastest on CPU)
ALPHA_MAX = 0.999
ALPHA_MIN = 1.0 / 255.0
TRANSMITTANCE_MIN = 1e-4


def rasterization(
    means: torch.Tensor,  # (N, 3)
    quats: torch.Tensor,  # (N, 4), normalised here
    scales: torch.Tensor,  # (N, 3)
    opacities: torch.Tensor,  # (N,)
    colors: torch.Tensor,  # (N, D) post-activation, or (N, K, 3) SH coefficients with sh_degree
    viewmats: torch.Tensor,  # (C, 4, 4) world to camera
    Ks: torch.Tensor,  # (C, 3, 3)
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    sh_degree: int | None = None,
    render_mode: str = "RGB",
    rasterize_mode: str = "classic",
    absgrad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Same arguments and results as `gsplat.rasterization` (unpacked, no backgrounds)."""
    if render_mode not in ("RGB", "D", "ED", "RGB+D", "RGB+ED"):
        raise ValueError(f"unknown render_mode {render_mode!r}")
    num_cameras = viewmats.shape[0]
    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_covar=True, compute_preci=False)
    radii, means2d, depths, conics, compensations = _fully_fused_projection(
        means, covars, viewmats, Ks, width, height, eps2d=eps2d, near_plane=near_plane, far_plane=far_plane,
        calc_compensations=rasterize_mode == "antialiased",
    )
    opacities = opacities.expand(num_cameras, -1)
    if compensations is not None:
        opacities = opacities * compensations

    if sh_degree is None:
        features = colors.expand(num_cameras, *colors.shape)
    else:
        camera_centres = torch.linalg.inv(viewmats)[:, None, :3, 3]
        shs = colors.expand(num_cameras, *colors.shape)
        features = torch.clamp_min(_spherical_harmonics(sh_degree, means[None] - camera_centres, shs) + 0.5, 0.0)
    if render_mode in ("RGB+D", "RGB+ED"):
        features = torch.cat([features, depths[..., None]], -1)
    elif render_mode in ("D", "ED"):
        features = depths[..., None]

    if absgrad and means2d.requires_grad:
        means2d.absgrad = torch.zeros_like(means2d)
    renders, alphas = [], []
    for c in range(num_cameras):
        render, alpha = _composite(
            means2d, c, conics[c], opacities[c], features[c], radii[c], depths[c], width, height,
            absgrad=getattr(means2d, "absgrad", None),
        )
        renders.append(render)
        alphas.append(alpha)
    render, alpha = torch.stack(renders), torch.stack(alphas)
    if render_mode in ("ED", "RGB+ED"):
        render = torch.cat([render[..., :-1], render[..., -1:] / alpha.clamp(min=1e-10)], -1)
    info = {
        "means2d": means2d, "radii": radii, "depths": depths, "conics": conics, "opacities": opacities,
        "width": width, "height": height, "n_cameras": num_cameras, "tile_size": TILE,
        "camera_ids": None, "gaussian_ids": None,
    }
    return render, alpha, info


def _composite(
    means2d_all: torch.Tensor, camera: int, conics, opacities, features, radii, depths, width: int, height: int,
    absgrad: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W, D) features and (H, W, 1) alpha of one camera."""
    means2d = means2d_all[camera]
    visible = torch.nonzero(radii > 0).squeeze(-1)
    visible = visible[torch.argsort(depths[visible])]  # front to back, as gsplat sorts each tile
    # The tiles each Gaussian touches, as gsplat's isect_tiles computes them.
    radius = radii[visible, None].float()
    tile_min = torch.floor((means2d[visible] - radius).detach() / TILE)
    tile_max = torch.ceil((means2d[visible] + radius).detach() / TILE)

    out = features.new_zeros(height, width, features.shape[-1])
    out_alpha = features.new_zeros(height, width, 1)
    for y0 in range(0, height, BLOCK):
        for x0 in range(0, width, BLOCK):
            y1, x1 = min(y0 + BLOCK, height), min(x0 + BLOCK, width)
            rows, cols = torch.meshgrid(
                torch.arange(y0, y1, device=means2d.device), torch.arange(x0, x1, device=means2d.device), indexing="ij"
            )
            tx, ty = (cols // TILE).reshape(-1, 1), (rows // TILE).reshape(-1, 1)
            in_block = (
                (tile_max[:, 0] > x0 // TILE) & (tile_min[:, 0] <= (x1 - 1) // TILE)
                & (tile_max[:, 1] > y0 // TILE) & (tile_min[:, 1] <= (y1 - 1) // TILE)
            )
            ids = visible[in_block]
            if len(ids) == 0:
                continue
            sees = (tile_min[in_block, 0] <= tx) & (tx < tile_max[in_block, 0])
            sees = sees & (tile_min[in_block, 1] <= ty) & (ty < tile_max[in_block, 1])  # (P, M)
            pixels = torch.stack([cols.reshape(-1), rows.reshape(-1)], -1).to(means2d.dtype) + 0.5
            delta = pixels[:, None, :] - means2d[ids][None]  # (P, M, 2)
            if absgrad is not None:
                delta.register_hook(_accumulate_abs(absgrad[camera], ids))
            conic = conics[ids]
            sigma = 0.5 * (conic[:, 0] * delta[..., 0] ** 2 + conic[:, 2] * delta[..., 1] ** 2)
            sigma = sigma + conic[:, 1] * delta[..., 0] * delta[..., 1]
            alpha = torch.clamp_max(opacities[ids] * torch.exp(-sigma), ALPHA_MAX)
            alpha = torch.where(sees & (sigma >= 0) & (alpha >= ALPHA_MIN), alpha, torch.zeros_like(alpha))
            after = torch.cumprod(1 - alpha, dim=1)
            before = torch.cat([torch.ones_like(after[:, :1]), after[:, :-1]], 1)
            weights = torch.where(after > TRANSMITTANCE_MIN, alpha * before, torch.zeros_like(alpha))
            block_h, block_w = y1 - y0, x1 - x0
            out[y0:y1, x0:x1] = (weights @ features[ids]).reshape(block_h, block_w, -1)
            out_alpha[y0:y1, x0:x1] = weights.sum(1).reshape(block_h, block_w, 1)
    return out, out_alpha


def _accumulate_abs(buffer: torch.Tensor, ids: torch.Tensor):
    """Backward hook summing |d loss / d mean2d| pixel by pixel, as gsplat's absgrad does."""

    def hook(grad: torch.Tensor) -> None:
        buffer.index_add_(0, ids, grad.abs().sum(0))

    return hook
