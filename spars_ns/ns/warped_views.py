"""Pseudo views between the training cameras, supervised by the training photos warped there.

Dust to Tower's fine stage, without its inpainting network (no weights for it here): each
training camera and its nearest training neighbour span a few pseudo cameras (between them and
a little beyond); both photos are forward-warped into each with their refined depth
(`spars_ns.warp`), and the pixels where the two warps agree are the pseudo view's target.
Built once from the training data: test photos never enter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from nerfstudio.cameras.cameras import Cameras

from spars_ns.warp import consistent_target, forward_warp, interpolate_camera

_GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0]))  # flips a camera's y and z axes; its own inverse


@dataclass
class PseudoView:
    camera: Cameras  # (1,), intrinsics of the first source
    image: torch.Tensor  # (H, W, 3) in [0, 1]
    mask: torch.Tensor  # (H, W, 1) float: 1 where both warps agree
    sources: tuple[int, int]  # training-image indices


def build_pseudo_views(cameras: Cameras, images: list[torch.Tensor], depths: list[torch.Tensor],
                       positions: tuple[float, ...]) -> list[PseudoView]:
    """Pseudo views for each training camera and its nearest neighbour, at `positions` along the way
    (0: the camera, 1: its neighbour). `images` (H, W, 3) in [0, 1] and `depths` (H, W; 0 unknown) in
    the cameras' order and scale."""
    camera_to_world = cameras.camera_to_worlds.float()
    opencv = torch.cat([camera_to_world[:, :, :3] @ _GL_TO_CV, camera_to_world[:, :, 3:]], -1)
    centres = camera_to_world[:, :, 3]
    distances = torch.cdist(centres, centres).fill_diagonal_(float("inf"))
    pairs = sorted({tuple(sorted((i, int(distances[i].argmin())))) for i in range(len(centres))})
    intrinsics = cameras.get_intrinsics_matrices().float()
    views = []
    for first, second in pairs:
        for t in positions:
            pose = interpolate_camera(opencv[first], opencv[second], t)
            width, height = int(cameras.width[first]), int(cameras.height[first])
            warps = [forward_warp(images[k].float(), depths[k].float(), intrinsics[k], opencv[k], intrinsics[first], pose, width, height)
                     for k in (first, second)]
            image, mask = consistent_target(*warps)
            camera = Cameras(
                camera_to_worlds=torch.cat([pose[:, :3] @ _GL_TO_CV, pose[:, 3:]], -1)[None],
                fx=cameras.fx[first : first + 1], fy=cameras.fy[first : first + 1], cx=cameras.cx[first : first + 1],
                cy=cameras.cy[first : first + 1], width=width, height=height, camera_type=cameras.camera_type[first : first + 1],
            )
            views.append(PseudoView(camera, image, mask[..., None].float(), (first, second)))
    return views


def masked_photometric_loss(rendered: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, ssim, ssim_lambda: float) -> torch.Tensor:
    """splatfacto's L1 + D-SSIM on the masked pixels: outside the mask the render is replaced by the
    target, so that those pixels add no error (SSIM needs a whole image)."""
    filled = rendered * mask + target * (1 - mask)
    l1 = ((rendered - target).abs() * mask).sum() / (3 * mask.sum()).clamp_min(1)
    dssim = 1 - ssim(filled.permute(2, 0, 1)[None], target.permute(2, 0, 1)[None])
    return (1 - ssim_lambda) * l1 + ssim_lambda * dssim
