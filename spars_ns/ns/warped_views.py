"""Pseudo views between the training cameras, supervised by the training photos warped there.

Dust to Tower's fine stage, without its inpainting network (no weights for it here): each
training camera and its nearest training neighbour span a few pseudo cameras (between them and
a little beyond); both photos are forward-warped into each with their refined depth
(`spars_ns.ns.warp`), and the pixels where the two warps agree are the pseudo view's target.
Built once from the training data: test photos never enter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from nerfstudio.cameras.cameras import Cameras

from spars_ns.geometry import neighbour_pairs
from spars_ns.ns.warp import consistent_target, forward_warp, interpolate_camera

_GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0]))  # flips a camera's y and z axes; its own inverse


@dataclass
class PseudoView:
    camera: Cameras  # (1,), intrinsics of the first source
    image: torch.Tensor  # (H, W, 3) in [0, 1]
    mask: torch.Tensor  # (H, W, 1) float: 1 where both warps agree
    sources: tuple[int, int]  # training-image indices


def warp_source(data: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """A training image's colour (H, W, 3) in [0, 1] and its depth (0 where unknown or untrusted),
    from a dataset item or the datamanager's cache (which may hold uint8 images)."""
    image = data["image"].float() / 255 if data["image"].dtype == torch.uint8 else data["image"]
    depth, confidence = data["depth_image"][..., 0], data["depth_image"][..., 1]
    return image[..., :3], depth * (confidence > 0)


def build_pseudo_views(
    cameras: Cameras, images: Sequence[torch.Tensor], depths: Sequence[torch.Tensor], positions: tuple[float, ...]
) -> list[PseudoView]:
    """Pseudo views for each training camera and its nearest neighbour, at `positions` along the way
    (0: the camera, 1: its neighbour). `images` (H, W, 3) in [0, 1] and `depths` (H, W; 0 unknown) in
    the cameras' order and scale."""
    device = images[0].device  # the datamanager may cache images on the GPU; its cameras stay on the CPU
    flip = _GL_TO_CV.to(device)
    camera_to_world = cameras.camera_to_worlds.float().to(device)
    opencv = torch.cat([camera_to_world[:, :, :3] @ flip, camera_to_world[:, :, 3:]], -1)
    intrinsics = cameras.get_intrinsics_matrices().float().to(device)
    views = []
    for first, second in neighbour_pairs(camera_to_world[:, :, 3].numpy(force=True)):
        for t in positions:
            pose = interpolate_camera(opencv[first], opencv[second], t)
            width, height = int(cameras.width[first]), int(cameras.height[first])
            warps = [
                forward_warp(
                    images[k].float(),
                    depths[k].float(),
                    intrinsics[k],
                    opencv[k],
                    intrinsics[first],
                    pose,
                    width,
                    height,
                )
                for k in (first, second)
            ]
            image, mask = consistent_target(*warps)
            camera = Cameras(
                camera_to_worlds=torch.cat([pose[:, :3] @ flip, pose[:, 3:]], -1)[None].cpu(),
                fx=cameras.fx[first : first + 1],
                fy=cameras.fy[first : first + 1],
                cx=cameras.cx[first : first + 1],
                cy=cameras.cy[first : first + 1],
                width=width,
                height=height,
                camera_type=cameras.camera_type[first : first + 1],
            )
            views.append(PseudoView(camera, image, mask[..., None].float(), (first, second)))
    return views


def masked_photometric_loss(
    rendered: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, ssim, ssim_lambda: float
) -> torch.Tensor:
    """splatfacto's L1 + D-SSIM on the masked pixels: outside the mask the render is replaced by the
    target, so that those pixels add no error (SSIM needs a whole image)."""
    filled = rendered * mask + target * (1 - mask)
    l1 = ((rendered - target).abs() * mask).sum() / (3 * mask.sum()).clamp_min(1)
    dssim = 1 - ssim(filled.permute(2, 0, 1)[None], target.permute(2, 0, 1)[None])
    return (1 - ssim_lambda) * l1 + ssim_lambda * dssim
