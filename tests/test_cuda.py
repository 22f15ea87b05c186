"""spars3r and stock splatfacto on CUDA: the same Gaussians and camera give the same image.

They share splatfacto's rendering rules (spars3r only removes its CUDA assumptions), so any
difference beyond float error is a bug in `Spars3rModel.get_outputs`. Skipped without CUDA.
"""

import pytest
import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.models.splatfacto import SplatfactoModelConfig

from spars_ns.ns.model import Spars3rModelConfig
from spars_ns.ns.runs import lpips_built_lazily

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="gsplat rasterises only with CUDA")


def seed_points(count: int = 3000):
    generator = torch.Generator().manual_seed(0)
    xyz = (torch.rand(count, 3, generator=generator) - 0.5) * 2
    xyz[:, 2] = -(xyz[:, 2] + 4)  # in front of a camera at the origin looking down -z (OpenGL)
    rgb = torch.randint(0, 256, (count, 3), generator=generator, dtype=torch.uint8)
    return xyz, rgb


def camera() -> Cameras:
    return Cameras(
        camera_to_worlds=torch.eye(4)[None, :3],
        fx=120.0,
        fy=120.0,
        cx=80.0,
        cy=60.0,
        width=160,
        height=120,
    ).to("cuda")


def build(config, seeds):
    scene_box = SceneBox(aabb=torch.tensor([[-1.0, -1, -1], [1, 1, 1]]))
    with lpips_built_lazily("splatfacto"):  # stock splatfacto downloads AlexNet when built
        model = config.setup(scene_box=scene_box, num_train_data=1, metadata={}, seed_points=seeds)
    return model.to("cuda").eval()


def test_spars3r_renders_what_stock_splatfacto_renders_from_the_same_gaussians():
    seeds = seed_points()
    ours = build(Spars3rModelConfig(sh_degree=3), seeds)
    stock = build(SplatfactoModelConfig(sh_degree=3), seeds)
    torch.manual_seed(1)
    with torch.no_grad():
        for _name, value in ours.gauss_params.items():  # random quats and SH so that every term is exercised
            value.copy_(value + 0.1 * torch.randn_like(value))
        stock.gauss_params.load_state_dict(ours.gauss_params.state_dict())
        ours.step = stock.step = 100_000  # full SH degree
        mine, theirs = ours.get_outputs(camera()), stock.get_outputs(camera())

    assert mine["accumulation"].mean() > 0.3  # the Gaussians are in view
    for key in ("rgb", "accumulation", "depth"):
        assert mine[key].shape == theirs[key].shape, key
        assert torch.allclose(mine[key], theirs[key], atol=1e-5, rtol=1e-5), (
            key,
            (mine[key] - theirs[key]).abs().max(),
        )


def test_mcmc_strategy_adds_gaussians_up_to_its_budget_and_no_further():
    seeds = seed_points(2000)
    model = build(Spars3rModelConfig(strategy="mcmc", max_gaussians=2500, warmup_length=20, refine_every=20), seeds)
    model.train()
    model.optimizers = {name: torch.optim.Adam([param], lr=1e-3) for name, param in model.gauss_params.items()}
    target = torch.rand(120, 160, 3, device="cuda")
    for step in range(200):
        model.step = step
        loss = (model.get_outputs(camera())["rgb"] - target).abs().mean()
        loss.backward()
        for optimiser in model.optimizers.values():
            optimiser.step()
            optimiser.zero_grad()
        model.step_post_backward(step)
    assert 2000 < model.num_points <= 2500


def test_the_viewers_render_call_draws_the_gaussians_on_cuda():
    """What nerfstudio's viewer calls for each frame it streams (`RenderStateMachine`), on a viewer camera."""
    import math

    from nerfstudio.cameras.cameras import CameraType
    from nerfstudio.viewer.utils import CameraState, get_camera

    model = build(Spars3rModelConfig(), seed_points())
    state = CameraState(fov=math.radians(60), aspect=4 / 3, c2w=torch.eye(4)[:3], camera_type=CameraType.PERSPECTIVE)
    with torch.no_grad():
        outputs = model.get_outputs_for_camera(get_camera(state, image_height=240).to("cuda"), obb_box=None)
    assert outputs["rgb"].shape == (240, 320, 3) and outputs["rgb"].is_cuda
    assert outputs["accumulation"].mean() > 0.3
