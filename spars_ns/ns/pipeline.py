"""Evaluation with test-time pose optimisation (TPO).

With sparse views a test camera registered by SfM is off by a fraction of a degree, which
costs several dB of PSNR that say nothing about the scene. As SPARS3R and InstantSplat do,
each test view's pose gets a correction (a rotation vector and a translation, in the
camera's frame) optimised against its image with every Gaussian frozen, before
PSNR/SSIM/LPIPS are scored. Test images never reach the Gaussians: their parameters stop
taking gradients for the duration, and no optimiser of the trainer is stepped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import roma
import torch
import torchvision.utils as vutils
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.models.splatfacto import SplatfactoModel
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from pytorch_msssim import SSIM
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from spars_ns.errors import InputError
from spars_ns.ns.warped_views import PseudoView, build_pseudo_views, masked_photometric_loss, warp_source

# nerfstudio's exponential learning-rate schedule leaves numpy floats in the optimiser and
# scheduler state, which torch >= 2.6 refuses to unpickle by default, so `ns-eval` and
# `ns-viewer` could not load a checkpoint. Numpy scalars are plain data: allow them.
_NUMPY_SCALAR = np.float64(0).__reduce__()[0]  # numpy's scalar reconstructor, wherever this numpy keeps it
torch.serialization.add_safe_globals([_NUMPY_SCALAR, np.dtype, type(np.dtype(np.float64))])


@dataclass
class Spars3rPipelineConfig(VanillaPipelineConfig):
    _target: type = field(default_factory=lambda: Spars3rPipeline)
    test_pose_steps: int = 500
    """Steps of test-time pose optimisation per test view before scoring (0: score the registered pose)."""
    test_pose_lr: float = 1e-3
    """Adam learning rate of the test-pose correction (radians, and scene units after nerfstudio's scaling)."""
    warped_views: bool = False
    """Supervise pseudo views between neighbouring training cameras with the training photos
    warped there by their depth (Dust to Tower's fine stage, without inpainting). Needs a scene with depth."""
    warped_views_weight: float = 0.1
    """Weight of the pseudo-view loss at the start; it falls linearly to 0 at `warped_views_until`."""
    warped_views_until: int = 15000
    """Step at which the pseudo-view loss has decayed to 0."""
    warped_views_positions: tuple[float, ...] = (-0.25, 0.25, 0.5, 0.75, 1.25)
    """Where pseudo cameras sit between a camera (0) and its nearest training neighbour (1)."""


@dataclass
class PoseCorrection:
    rotation: torch.Tensor  # (3,) rotation vector, camera frame
    translation: torch.Tensor  # (3,) camera frame, scene units

    def apply(self, camera: Cameras) -> Cameras:
        """The camera moved by this correction (differentiable in the correction)."""
        camera_to_world = camera.camera_to_worlds  # (1, 3, 4)
        rotation = camera_to_world[..., :3] @ roma.rotvec_to_rotmat(self.rotation)
        position = camera_to_world[..., 3] + (camera_to_world[..., :3] @ self.translation[:, None])[..., 0]
        return Cameras(
            camera_to_worlds=torch.cat([rotation, position[..., None]], -1),
            fx=camera.fx,
            fy=camera.fy,
            cx=camera.cx,
            cy=camera.cy,
            width=camera.width,
            height=camera.height,
            distortion_params=camera.distortion_params,
            camera_type=camera.camera_type,
            metadata=camera.metadata,
        )


@dataclass
class PoseSearch:
    """What test-time pose optimisation kept: the best pose it saw by its own loss (the
    registered pose, step 0, if nothing beat it), and why it stopped early, if it did."""

    correction: PoseCorrection
    loss_before: float | None  # at the registered pose; None without pose steps
    loss_after: float | None  # at the kept pose: never above loss_before
    kept_step: int
    stopped: str | None = None


def optimise_test_pose(model: SplatfactoModel, camera: Cameras, batch: dict, steps: int, lr: float) -> PoseSearch:
    """A pose correction for `camera` minimising the photometric loss to its image, Gaussians
    frozen. Every pose it reaches is scored, and the best one is kept: a step that overshoots
    (a pose far off, a view that sees few Gaussians) cannot leave the view worse than it started,
    and a non-finite loss or gradient stops the search at the best pose so far."""
    device = camera.camera_to_worlds.device
    correction = PoseCorrection(
        torch.zeros(3, device=device, requires_grad=True), torch.zeros(3, device=device, requires_grad=True)
    )
    if steps <= 0:
        return PoseSearch(correction, None, None, 0)
    optimiser = torch.optim.Adam([correction.rotation, correction.translation], lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 0.1 ** (step / steps))
    ssim = SSIM(data_range=1.0, size_average=True, channel=3).to(device)  # its window is not moved for you
    frozen = [p for p in model.parameters() if p.requires_grad]
    for parameter in frozen:
        parameter.requires_grad_(False)
    best = (math.inf, 0, torch.zeros(3, device=device), torch.zeros(3, device=device))
    loss_before, stopped = None, None
    try:
        target = None
        for step in range(steps + 1):  # the pose after the last update is scored too
            outputs = model.get_outputs(correction.apply(camera))
            if target is None:
                target = model.composite_with_background(model.get_gt_img(batch["image"]), outputs["background"])
            rendered = outputs["rgb"]
            dssim = 1 - ssim(rendered.permute(2, 0, 1)[None], target.permute(2, 0, 1)[None])
            loss = 0.8 * (rendered - target).abs().mean() + 0.2 * dssim
            value = float(loss)
            loss_before = value if step == 0 else loss_before
            if not math.isfinite(value):
                stopped = f"non-finite loss at step {step}"
                break
            if value < best[0]:
                best = (value, step, correction.rotation.detach().clone(), correction.translation.detach().clone())
            if step == steps:
                break
            optimiser.zero_grad()
            loss.backward()
            if not all(torch.isfinite(p.grad).all() for p in (correction.rotation, correction.translation)):
                stopped = f"non-finite gradient at step {step}"
                break
            optimiser.step()
            schedule.step()
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)
    best_loss, kept_step, rotation, translation = best
    kept = PoseCorrection(rotation.requires_grad_(True), translation.requires_grad_(True))
    return PoseSearch(kept, loss_before, best_loss if math.isfinite(best_loss) else loss_before, kept_step, stopped)


class Spars3rPipeline(VanillaPipeline):
    config: Spars3rPipelineConfig

    def __init__(self, config: Spars3rPipelineConfig, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        self._pseudo_views: list[PseudoView] | None = None
        if config.warped_views and self.model.config.camera_optimizer.mode != "off":
            raise InputError(
                "--pipeline.warped-views needs the camera optimiser off: pseudo cameras are not training "
                "cameras to refine"
            )

    def get_train_loss_dict(self, step: int):
        model_outputs, loss_dict, metrics_dict = super().get_train_loss_dict(step)
        weight = self.config.warped_views_weight * max(0.0, 1.0 - step / self.config.warped_views_until)
        if self.config.warped_views and weight > 0:
            views = self.pseudo_views()
            view = views[step % len(views)]
            info = self.model.info  # densification reads the training view's 2D gradients, not the pseudo view's
            outputs = self.model.get_outputs(view.camera.to(self.device))
            self.model.info = info
            # at the render's size, sampled as the depth target is (nearest: a mask must stay 0 or 1)
            target, mask = (self.model._downscale_depth(x.to(self.device)) for x in (view.image, view.mask))
            loss_dict["warped_view_loss"] = weight * masked_photometric_loss(
                outputs["rgb"], target, mask, self.model.ssim, self.model.config.ssim_lambda
            )
        return model_outputs, loss_dict, metrics_dict

    def pseudo_views(self) -> list[PseudoView]:
        """Built on first use from the cached training images and their depth."""
        if self._pseudo_views is None:
            cached = self.datamanager.cached_train
            if "depth_image" not in cached[0]:
                raise InputError(
                    "--pipeline.warped-views needs a scene with depth: process it with --prior files or mast3r "
                    "and --refine global"
                )
            images, depths = zip(*(warp_source(data) for data in cached))
            self._pseudo_views = build_pseudo_views(
                self.datamanager.train_dataset.cameras, images, depths, self.config.warped_views_positions
            )
        return self._pseudo_views

    def get_average_eval_image_metrics(
        self, step: int | None = None, output_path: Path | None = None, get_std: bool = False
    ) -> dict:
        """Metrics at the registered test poses (`<metric>_before_tpo`) and after TPO (`<metric>`).

        Called by `ns-eval` (no `step`), the result also lists each view's correction under
        `test_pose_corrections`; evaluations during training log scalars only.
        """
        return evaluate_test_views(
            self,
            self.config.test_pose_steps,
            self.config.test_pose_lr,
            output_path,
            get_std,
            with_corrections=step is None,
        )


def evaluate_test_views(
    pipeline: VanillaPipeline,
    steps: int,
    lr: float,
    output_path: Path | None = None,
    get_std: bool = False,
    with_corrections: bool = False,
) -> dict:
    """Score every eval view of a splatfacto-family pipeline before and after test-time pose optimisation."""
    model = pipeline.model
    pipeline.eval()
    before, after, corrections = [], [], []
    if output_path is not None:
        output_path.mkdir(parents=True, exist_ok=True)
    dataset = pipeline.datamanager.eval_dataset
    scale = float(dataset._dataparser_outputs.dataparser_scale)
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        MofNCompleteColumn(),
        transient=True,
    ) as progress:
        task = progress.add_task(f"[green]Evaluating test views ({steps} pose steps each)", total=len(dataset))
        for index, (camera, batch) in enumerate(pipeline.datamanager.fixed_indices_eval_dataloader):
            with torch.no_grad():
                metrics, images = model.get_image_metrics_and_images(model.get_outputs(camera), batch)
            before.append(metrics)
            search = optimise_test_pose(model, camera, batch, steps, lr)
            correction = search.correction
            if search.kept_step > 0:  # otherwise the registered pose's render is the result
                with torch.no_grad():
                    metrics, images = model.get_image_metrics_and_images(
                        model.get_outputs(correction.apply(camera)), batch
                    )
            after.append(metrics)
            corrections.append(
                {
                    "image": Path(dataset.image_filenames[index]).name,
                    "rotation_deg": math.degrees(float(correction.rotation.detach().norm())),
                    "translation_sfm_units": float(correction.translation.detach().norm()) / scale,
                    "rotation_vector": correction.rotation.detach().cpu().tolist(),
                    "translation_vector_sfm_units": (correction.translation.detach().cpu() / scale).tolist(),
                    "psnr_before_tpo": before[-1]["psnr"],
                    "psnr": metrics["psnr"],
                    "tpo_loss_before": search.loss_before,
                    "tpo_loss_after": search.loss_after,
                    "tpo_kept_step": search.kept_step,
                    "tpo_stopped": search.stopped,
                }
            )
            if output_path is not None:
                for key, image in images.items():
                    vutils.save_image(image.permute(2, 0, 1).cpu(), output_path / f"eval_{key}_{index:04d}.png")
            progress.advance(task)
    pipeline.train()
    results = {**_average(after, "", get_std), **_average(before, "_before_tpo", get_std), "test_pose_steps": steps}
    unavailable = getattr(model.lpips, "unavailable", None)
    if unavailable:
        results["lpips_unavailable"] = unavailable
    if with_corrections:
        results["test_pose_corrections"] = corrections
    return results


def _average(per_view: list[dict], suffix: str, with_std: bool) -> dict:
    out = {}
    for key in per_view[0]:
        values = torch.tensor([metrics[key] for metrics in per_view], dtype=torch.float64)
        out[f"{key}{suffix}"] = float(values.mean())
        if with_std:
            out[f"{key}{suffix}_std"] = float(values.std()) if len(values) > 1 else 0.0
    return out
