"""The spars3r model: splatfacto seeded from the fused points, with a depth loss and no CUDA assumption.

Departures from nerfstudio 1.1.5's splatfacto, and why:
- `populate_modules` is our own: splatfacto's puts the seed colours on CUDA (`.cuda()`) and
  builds LPIPS eagerly, which downloads AlexNet weights, so it cannot be built offline.
- `get_outputs` is our own: splatfacto's moves intrinsics with `.cuda()` and calls gsplat,
  which rasterises only with CUDA; ours takes the device from the model and falls back to
  the pure-PyTorch rasteriser (`cpu_rasterize.py`).
- Densification can be gsplat's MCMCStrategy (a capped budget) instead of splatfacto's.
- The viewer opens looking at the scene (`viewer.py`).
- An optional depth loss against `depth/` from the processed scene (aligned or refined prior
  depth), masked by validity and weighted by the prior's confidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from gsplat.strategy import DefaultStrategy, MCMCStrategy
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.model_components.lib_bilagrid import BilateralGrid
from nerfstudio.models.splatfacto import (
    RGB2SH,
    SplatfactoModel,
    SplatfactoModelConfig,
    get_viewmat,
    num_sh_bases,
    random_quat_tensor,
)
from nerfstudio.utils.colors import get_color
from nerfstudio.utils.rich_utils import CONSOLE
from pytorch_msssim import SSIM
from torch.nn import Parameter
from torchmetrics.image import PeakSignalNoiseRatio
from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

from spars_ns.ns import cpu_rasterize
from spars_ns.ns.viewer import SceneView

VIEWER_BACKGROUND = (0.1490, 0.1647, 0.2157)  # the viewer's background, as splatfacto uses


@dataclass
class Spars3rModelConfig(SplatfactoModelConfig):
    """splatfacto's options, plus the depth loss."""

    _target: type = field(default_factory=lambda: Spars3rModel)
    depth_loss: Literal["pearson", "metric"] = "pearson"
    """pearson: 1 - Pearson correlation of rendered and prior disparity (ignores the prior's
    scale and shift); metric: confidence-weighted L1 between rendered and prior depth."""
    depth_loss_weight: float = 0.1
    """Weight of the depth loss; 0 turns it off. Ignored when the scene has no depth/.
    0.1 measured best of 0, 0.05, 0.1 and 0.2 on a synthetic scene at CPU scale (BENCHMARKS.md)."""
    strategy: Literal["default", "mcmc"] = "default"
    """Densification: splatfacto's (gsplat's DefaultStrategy: split, clone, prune), or gsplat's
    MCMCStrategy (relocate and add Gaussians up to `max_gaussians`, with noise; needs CUDA)."""
    max_gaussians: int = 1_000_000
    """The MCMC strategy's budget of Gaussians."""
    mcmc_noise_lr: float = 5e5
    """Scale of the MCMC strategy's noise on the means, times the means' learning rate."""
    mcmc_opacity_reg: float = 0.01
    """MCMC: weight of the mean opacity in the loss (frees Gaussians for relocation)."""
    mcmc_scale_reg: float = 0.01
    """MCMC: weight of the mean scale in the loss."""


class Spars3rModel(SplatfactoModel):
    config: Spars3rModelConfig

    def populate_modules(self):
        means, rgb = self._initial_points()
        distances, _ = self.k_nearest_sklearn(means, 3)
        mean_distance = torch.from_numpy(distances).float().mean(-1, keepdim=True).clamp_min(1e-7)
        count = len(means)
        dc = RGB2SH(rgb) if self.config.sh_degree > 0 else torch.logit(rgb, eps=1e-10)
        self.gauss_params = torch.nn.ParameterDict(
            {
                "means": Parameter(means),
                "scales": Parameter(torch.log(mean_distance).repeat(1, 3)),
                "quats": Parameter(random_quat_tensor(count)),
                "features_dc": Parameter(dc),
                "features_rest": Parameter(torch.zeros(count, num_sh_bases(self.config.sh_degree) - 1, 3)),
                "opacities": Parameter(torch.logit(torch.full((count, 1), 0.1))),
            }
        )
        self.camera_optimizer = self.config.camera_optimizer.setup(num_cameras=self.num_train_data, device="cpu")
        self.psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.ssim = SSIM(data_range=1.0, size_average=True, channel=3)
        self.lpips = LazyLPIPS()
        self.step = 0
        self.crop_box = None
        if self.config.background_color == "random":
            self.background_color = torch.tensor(VIEWER_BACKGROUND)
        else:
            self.background_color = get_color(self.config.background_color)
        if self.config.use_bilateral_grid:
            self.bil_grids = BilateralGrid(self.num_train_data, *self.config.grid_shape)
        self.strategy = self._strategy()
        if self.config.strategy == "mcmc":
            self.strategy_state = self.strategy.initialize_state()
        else:
            self.strategy_state = self.strategy.initialize_state(scene_scale=1.0)
        self.scene_view = SceneView()  # the viewer finds it and opens looking at the scene

    def _strategy(self) -> DefaultStrategy | MCMCStrategy:
        config = self.config
        if config.strategy == "mcmc":
            if not torch.cuda.is_available():
                raise RuntimeError(
                    "--pipeline.model.strategy mcmc needs CUDA: gsplat's relocation and noise run only there."
                )
            return MCMCStrategy(  # min_opacity stays gsplat's (0.005), as in gsplat's own MCMC training
                cap_max=config.max_gaussians,
                noise_lr=config.mcmc_noise_lr,
                refine_start_iter=config.warmup_length,
                refine_stop_iter=config.stop_split_at,
                refine_every=config.refine_every,
            )
        return DefaultStrategy(
            prune_opa=config.cull_alpha_thresh,
            grow_grad2d=config.densify_grad_thresh,
            grow_scale3d=config.densify_size_thresh,
            grow_scale2d=config.split_screen_size,
            prune_scale3d=config.cull_scale_thresh,
            prune_scale2d=config.cull_screen_size,
            refine_scale2d_stop_iter=config.stop_screen_size_at,
            refine_start_iter=config.warmup_length,
            refine_stop_iter=config.stop_split_at,
            reset_every=config.reset_alpha_every * config.refine_every,
            refine_every=config.refine_every,
            pause_refine_after_reset=self.num_train_data + config.refine_every,
            absgrad=config.use_absgrad,
            revised_opacity=False,
            verbose=False,
        )

    def step_post_backward(self, step):
        if self.config.strategy == "default":
            return super().step_post_backward(step)
        self.strategy.step_post_backward(
            params=self.gauss_params,
            optimizers=self.optimizers,
            state=self.strategy_state,
            step=self.step,
            info=self.info,
            lr=self.optimizers["means"].param_groups[0]["lr"],
        )

    def _initial_points(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Seed means and colours in [0, 1]: the scene's points, or random ones with a warning."""
        if self.seed_points is not None and not self.config.random_init and len(self.seed_points[0]) > 0:
            return self.seed_points[0].float(), self.seed_points[1].float() / 255.0
        if not self.config.random_init:
            CONSOLE.print(
                f"[bold yellow]Warning: the scene has no seed points (empty or missing points.ply); "
                f"starting from {self.config.num_random} random Gaussians in a cube of side {self.config.random_scale}."
            )
        means = (torch.rand(self.config.num_random, 3) - 0.5) * self.config.random_scale
        return means, torch.rand(self.config.num_random, 3)

    @property
    def uses_depth(self) -> bool:
        metadata = self.kwargs.get("metadata") or {}
        return self.config.depth_loss_weight > 0 and metadata.get("depth_filenames") is not None

    def get_outputs(self, camera: Cameras) -> dict[str, torch.Tensor]:
        if not isinstance(camera, Cameras):
            raise TypeError(f"spars3r renders Cameras, not {type(camera).__name__}")
        if self.training:
            assert camera.shape[0] == 1, "Only one camera at a time"
            camera_to_world = self.camera_optimizer.apply_to_camera(camera)
        else:
            camera_to_world = camera.camera_to_worlds
        params = {name: self.gauss_params[name] for name in self.gauss_params}
        if self.crop_box is not None and not self.training:
            inside = self.crop_box.within(self.means).squeeze()
            if inside.sum() == 0:
                return self.get_empty_outputs(
                    int(camera.width.item()), int(camera.height.item()), self.background_color
                )
            params = {name: value[inside] for name, value in params.items()}

        downscale = self._get_downscale_factor()
        camera.rescale_output_resolution(1 / downscale)
        intrinsics = camera.get_intrinsics_matrices().to(self.device)
        width, height = int(camera.width.item()), int(camera.height.item())
        camera.rescale_output_resolution(downscale)
        self.last_size = (height, width)

        with_depth = not self.training or self.config.output_depth_during_training or self.uses_depth
        colours = torch.cat([params["features_dc"][:, None, :], params["features_rest"]], 1)
        sh_degree: int | None = min(self.step // self.config.sh_degree_interval, self.config.sh_degree)
        if self.config.sh_degree == 0:
            colours, sh_degree = torch.sigmoid(colours).squeeze(1), None
        render, alpha, self.info = rasterize(
            means=params["means"],
            quats=params["quats"],
            scales=torch.exp(params["scales"]),
            opacities=torch.sigmoid(params["opacities"]).squeeze(-1),
            colors=colours,
            viewmats=get_viewmat(camera_to_world),
            Ks=intrinsics,
            width=width,
            height=height,
            near_plane=0.01,
            far_plane=1e10,
            sh_degree=sh_degree,
            render_mode="RGB+ED" if with_depth else "RGB",
            rasterize_mode=self.config.rasterize_mode,
            absgrad=self.config.strategy == "default" and self.strategy.absgrad,
        )
        if self.training and self.config.strategy == "default":  # the MCMC strategy needs no 2D gradients
            self.strategy.step_pre_backward(
                self.gauss_params, self.optimizers, self.strategy_state, self.step, self.info
            )

        background = self._get_background_color()
        rgb = torch.clamp(render[..., :3] + (1 - alpha) * background, 0.0, 1.0)
        if self.config.use_bilateral_grid and self.training and camera.metadata and "cam_idx" in camera.metadata:
            rgb = self._apply_bilateral_grid(rgb, camera.metadata["cam_idx"], height, width)
        depth = None
        if with_depth:
            depth = render[..., 3:4]
            depth = torch.where(alpha > 0, depth, depth.detach().max()).squeeze(0)
        if not self.training:
            background = background.expand(height, width, 3)
        return {"rgb": rgb.squeeze(0), "depth": depth, "accumulation": alpha.squeeze(0), "background": background}

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> dict[str, torch.Tensor]:
        losses = super().get_loss_dict(outputs, batch, metrics_dict)
        if self.training and self.config.strategy == "mcmc":
            losses["mcmc_opacity_reg"] = (
                self.config.mcmc_opacity_reg * torch.sigmoid(self.gauss_params["opacities"]).mean()
            )
            losses["mcmc_scale_reg"] = self.config.mcmc_scale_reg * torch.exp(self.gauss_params["scales"]).mean()
        if self.training and self.uses_depth:
            target = self._downscale_depth(batch["depth_image"].to(self.device))
            losses["depth_loss"] = self.config.depth_loss_weight * depth_loss(
                outputs["depth"],
                target[..., :1],
                target[..., 1:] * (outputs["accumulation"] > 0.5),
                self.config.depth_loss,
            )
        return losses

    def _downscale_depth(self, depth: torch.Tensor) -> torch.Tensor:
        """Nearest-neighbour sample of (H, W, C) depth at the current training resolution:
        averaging would blend valid depth with the zeros that mark unknown pixels."""
        factor = self._get_downscale_factor()
        height, width = self.last_size
        return depth[factor // 2 :: factor, factor // 2 :: factor][:height, :width]

    def get_image_metrics_and_images(self, outputs, batch):
        metrics, images = super().get_image_metrics_and_images(outputs, batch)
        if self.lpips.unavailable:
            del metrics["lpips"]
        return metrics, images


def rasterize(**kwargs):
    """gsplat's rasteriser on CUDA tensors; the pure-PyTorch one elsewhere."""
    if kwargs["means"].is_cuda:
        from gsplat.rendering import rasterization

        return rasterization(**kwargs, packed=False, sparse_grad=False)
    return cpu_rasterize.rasterization(**kwargs)


def depth_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, kind: str) -> torch.Tensor:
    """Depth loss over (H, W, 1) maps; pixels count where the target is known (> 0) and weighted."""
    valid = (target > 0) & (weight > 0) & (pred > 0) & torch.isfinite(pred)
    if valid.sum() < 16:
        return pred.new_zeros(())
    w = weight[valid]
    w = w / w.sum()
    if kind == "metric":
        return (w * (pred[valid] - target[valid]).abs()).sum()
    x, y = 1.0 / pred[valid], 1.0 / target[valid]
    x, y = x - (w * x).sum(), y - (w * y).sum()
    correlation = (w * x * y).sum() / torch.sqrt((w * x * x).sum() * (w * y * y).sum()).clamp_min(1e-12)
    return 1.0 - correlation


class LazyLPIPS:
    """torchmetrics' LPIPS, built on first use: it needs torchvision's AlexNet weights, which are
    downloaded then. Where they cannot be had, it says so once and scores NaN, which
    `get_image_metrics_and_images` drops, so PSNR and SSIM still work offline. Not a module, so
    that its weights stay out of checkpoints."""

    def __init__(self):
        self.metric: torch.nn.Module | None = None
        self.unavailable: str | None = None

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.metric is None and self.unavailable is None:
            self._build(a.device)
        if self.metric is None:
            return torch.tensor(math.nan)
        return self.metric(a, b)

    def _build(self, device: torch.device) -> None:
        try:
            self.metric = LearnedPerceptualImagePatchSimilarity(normalize=True).to(device)
        except Exception as err:  # network errors differ by platform (URLError, OSError, RuntimeError)
            self.unavailable = (
                f"LPIPS not computed: torchvision's AlexNet weights could not be loaded ({type(err).__name__}: {err}). "
                f"Put alexnet-owt-7be5be79.pth in {torch.hub.get_dir()}/checkpoints to enable it."
            )
            CONSOLE.print(f"[bold yellow]{self.unavailable}")
