"""Photos forward-warped into pseudo views with their depth, for warped-view supervision.

Dust to Tower's fine stage supervises viewpoints between the training cameras with the
training photos warped there by their refined depth. Each source pixel is unprojected with its
depth, moved into the pseudo camera and splatted to the nearest pixel, the nearest point
winning (a z-buffer), so a source's own occlusions resolve. What one source cannot see (a
disocclusion) is a hole, and what it sees wrongly through a gap of its foreground disagrees with
the other source: a pseudo pixel is kept only where both neighbours' warps land with the same
depth. Dust to Tower fills the holes with an inpainting network; without its weights the holes
stay out of the loss.

Cameras are OpenCV camera-to-world (3x4: x right, y down, z forward) with pixel centres at
integer + 0.5, as nerfstudio's intrinsics are; torch throughout, so it runs where training runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import roma
import torch

from spars_ns.geometry import inverse_transform, project, transform, unproject


@dataclass
class Warped:
    image: torch.Tensor  # (H, W, 3)
    depth: torch.Tensor  # (H, W), 0 where nothing landed
    landed: torch.Tensor  # (H, W) bool


def forward_warp(
    image: torch.Tensor,
    depth: torch.Tensor,
    intrinsics: torch.Tensor,
    camera_to_world: torch.Tensor,
    target_intrinsics: torch.Tensor,
    target_camera_to_world: torch.Tensor,
    width: int,
    height: int,
) -> Warped:
    """`image` (h, w, 3) with z-depth `depth` (h, w; <= 0 unknown) seen from the target camera."""
    rows, cols = torch.meshgrid(
        torch.arange(depth.shape[0], device=depth.device),
        torch.arange(depth.shape[1], device=depth.device),
        indexing="ij",
    )
    known = depth > 0
    pixels = torch.stack([cols[known] + 0.5, rows[known] + 0.5, torch.ones_like(depth[known])], -1)
    world = transform(unproject(pixels, depth[known], intrinsics), camera_to_world)
    uv, z = project(inverse_transform(world, target_camera_to_world), target_intrinsics)  # R^T (x - c): into the target
    u, v = uv.unbind(-1)
    inside = (z > 1e-6) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    index = v[inside].long() * width + u[inside].long()
    z, colours = z[inside], image[known][inside]

    nearest = torch.full((height * width,), float("inf"), device=depth.device, dtype=z.dtype)
    nearest = nearest.scatter_reduce(0, index, z, reduce="amin")
    wins = z <= nearest[index]  # ties: any of the equally near points
    warped = image.new_zeros(height * width, image.shape[-1])
    warped[index[wins]] = colours[wins]
    landed = torch.isfinite(nearest)
    return Warped(
        warped.reshape(height, width, -1),
        torch.where(landed, nearest, 0).reshape(height, width),
        landed.reshape(height, width),
    )


def consistent_target(
    first: Warped, second: Warped, relative_tolerance: float = 0.02
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pseudo view's target image (mean of the two warps) and its mask: both landed, at depths
    that agree within `relative_tolerance`."""
    both = first.landed & second.landed
    agree = (first.depth - second.depth).abs() <= relative_tolerance * torch.minimum(first.depth, second.depth)
    mask = both & agree
    return torch.where(mask[..., None], 0.5 * (first.image + second.image), 0), mask


def interpolate_camera(first: torch.Tensor, second: torch.Tensor, t: float) -> torch.Tensor:
    """Camera-to-world (3x4) a fraction `t` of the way from `first` to `second` (slerp of the
    rotation, straight line between the centres; t outside [0, 1] goes beyond them)."""
    rotations = roma.rotmat_to_unitquat(torch.stack([first[:, :3], second[:, :3]]))
    rotation = roma.unitquat_to_rotmat(
        roma.utils.unitquat_slerp(
            rotations[0], rotations[1], torch.tensor([t], dtype=first.dtype, device=first.device)
        )[0]
    )
    centre = (1 - t) * first[:, 3] + t * second[:, 3]
    return torch.cat([rotation, centre[:, None]], 1)
