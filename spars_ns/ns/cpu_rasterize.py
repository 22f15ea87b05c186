"""A pure-PyTorch stand-in for gsplat's `rasterization`, used where CUDA is absent.

gsplat 1.4.0 rasterises only with CUDA. Its PyTorch reference code (`gsplat.cuda._torch_impl`)
covers covariance, projection and spherical harmonics, and those are used here as they are;
its compositing still calls CUDA kernels and nerfacc, so compositing is done here, over the
(pixel, Gaussian) pairs that can matter, with gsplat's rules: 16-pixel tiles decide which Gaussians a pixel
sees, front to back by camera depth, alpha capped at 0.999, contributions under 1/255
skipped, and a pixel stops once its transmittance would fall to 1e-4. The outputs are what
splatfacto and gsplat's `DefaultStrategy` read: colours (and expected depth), alpha, and an
`info` dict with the 2D means (whose `.grad` and, on request, `.absgrad` are filled by the
backward pass) and radii.

It exists for tests and small demos on machines without a GPU: memory grows with the pairs
of pixels and Gaussians that overlap, and it is orders of magnitude slower than gsplat.
"""

from __future__ import annotations

import torch
from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci, _spherical_harmonics

TILE = 16
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
        means,
        covars,
        viewmats,
        Ks,
        width,
        height,
        eps2d=eps2d,
        near_plane=near_plane,
        far_plane=far_plane,
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
            means2d,
            c,
            conics[c],
            opacities[c],
            features[c],
            radii[c],
            depths[c],
            width,
            height,
            absgrad=getattr(means2d, "absgrad", None),
        )
        renders.append(render)
        alphas.append(alpha)
    render, alpha = torch.stack(renders), torch.stack(alphas)
    if render_mode in ("ED", "RGB+ED"):
        render = torch.cat([render[..., :-1], render[..., -1:] / alpha.clamp(min=1e-10)], -1)
    info = {
        "means2d": means2d,
        "radii": radii,
        "depths": depths,
        "conics": conics,
        "opacities": opacities,
        "width": width,
        "height": height,
        "n_cameras": num_cameras,
        "tile_size": TILE,
        "camera_ids": None,
        "gaussian_ids": None,
    }
    return render, alpha, info


def _composite(
    means2d_all: torch.Tensor,
    camera: int,
    conics,
    opacities,
    features,
    radii,
    depths,
    width: int,
    height: int,
    absgrad: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W, D) features and (H, W, 1) alpha of one camera.

    Sparse over (pixel, Gaussian) pairs: a Gaussian reaches only the pixels of a small box, and a
    dense pixels-by-Gaussians product per block spent most of its time on zeros."""
    means2d = means2d_all[camera]
    visible = torch.nonzero(radii > 0).squeeze(-1)
    visible = visible[torch.argsort(depths[visible])]  # front to back, as gsplat sorts each tile
    pairs_gaussian, pixel = _candidate_pairs(
        means2d[visible].detach(), radii[visible], conics[visible].detach(), opacities[visible].detach(), width, height
    )
    ids = visible[pairs_gaussian]
    centres = torch.stack([pixel % width, pixel // width], -1).to(means2d.dtype) + 0.5
    delta = centres - means2d[ids]  # (Q, 2)
    if absgrad is not None and delta.requires_grad:
        delta.register_hook(_accumulate_abs(absgrad[camera], ids))
    conic = conics[ids]
    sigma = (
        0.5 * (conic[:, 0] * delta[:, 0] ** 2 + conic[:, 2] * delta[:, 1] ** 2)
        + conic[:, 1] * delta[:, 0] * delta[:, 1]
    )
    alpha = torch.clamp_max(opacities[ids] * torch.exp(-sigma), ALPHA_MAX)
    keep = (sigma >= 0) & (alpha >= ALPHA_MIN)
    alpha, pixel, ids = alpha[keep], pixel[keep], ids[keep]

    # Transmittance front to back within each pixel's run of pairs: a segmented cumulative
    # product, as a cumulative sum of logs (float64, so that subtracting a run's start is exact enough).
    log_passed = torch.log1p(-alpha).double()
    through = torch.cumsum(log_passed, 0)
    run_start = torch.searchsorted(pixel, pixel)  # pixel is sorted: the first pair of each pixel's run
    offset = (through - log_passed)[run_start]
    before, after = torch.exp(through - log_passed - offset), torch.exp(through - offset)
    weights = torch.where(after > TRANSMITTANCE_MIN, alpha * before.to(alpha.dtype), torch.zeros_like(alpha))

    out = features.new_zeros(height * width, features.shape[-1]).index_add(0, pixel, weights[:, None] * features[ids])
    out_alpha = features.new_zeros(height * width, 1).index_add(0, pixel, weights[:, None])
    return out.reshape(height, width, -1), out_alpha.reshape(height, width, 1)


def _candidate_pairs(means2d, radii, conics, opacities, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(Gaussian index, pixel index) of every pixel that may see each Gaussian (whose alpha may reach
    1/255 in a tile the Gaussian touches, gsplat's rule), sorted by pixel and, within a pixel, in the
    Gaussians' order."""
    radius = radii[:, None].float()
    tile_first = torch.floor((means2d - radius) / TILE) * TILE  # gsplat's isect_tiles: the tiles each Gaussian touches
    tile_end = torch.ceil((means2d + radius) / TILE) * TILE
    # alpha >= 1/255 only where sigma <= log(255 opacity): an ellipse, whose box has half-sides
    # sqrt(2 log(255 opacity) covariance_ii); pixel i's centre is i + 0.5.
    det = (conics[:, 0] * conics[:, 2] - conics[:, 1] ** 2).clamp_min(1e-12)
    covariance_diagonal = torch.stack([conics[:, 2], conics[:, 0]], -1) / det[:, None]
    half = torch.sqrt(2 * torch.log(255 * opacities).clamp_min(0)[:, None] * covariance_diagonal)
    size = torch.tensor([width, height], device=means2d.device)
    first = torch.maximum(tile_first, torch.floor(means2d - half - 0.5)).clamp_min(0).long()
    last = torch.minimum(tile_end - 1, torch.ceil(means2d + half - 0.5)).long()
    last = torch.minimum(last, size - 1)
    extent = (last - first + 1).clamp_min(0)  # (N, 2) pixels across and down
    count = extent[:, 0] * extent[:, 1]
    gaussian = torch.repeat_interleave(torch.arange(len(count), device=count.device), count)
    local = torch.arange(len(gaussian), device=count.device) - (torch.cumsum(count, 0) - count)[gaussian]
    across = extent[gaussian, 0]
    pixel = (first[gaussian, 1] + local // across) * width + first[gaussian, 0] + local % across
    pixel, order = torch.sort(pixel, stable=True)
    return gaussian[order], pixel


def _accumulate_abs(buffer: torch.Tensor, ids: torch.Tensor):
    """Backward hook summing |d loss / d mean2d| pixel by pixel, as gsplat's absgrad does."""

    def hook(grad: torch.Tensor) -> None:
        buffer.index_add_(0, ids, grad.abs())

    return hook
