"""The pure-PyTorch rasteriser against closed-form renders of simple Gaussians, and against gsplat on CUDA."""

import math

import pytest
import torch

from spars_ns.ns import cpu_rasterize

WIDTH, HEIGHT, FOCAL = 64, 48, 50.0
SH_C0 = 0.28209479177387814  # degree-0 real spherical harmonic


def intrinsics():
    return torch.tensor([[[FOCAL, 0, WIDTH / 2], [0, FOCAL, HEIGHT / 2], [0, 0, 1.0]]])


def render(means, scales, opacities, colors, **kwargs):
    """Isotropic Gaussians seen by a camera at the origin looking down +z."""
    n = len(means)
    quats = torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1)
    return cpu_rasterize.rasterization(
        means=means,
        quats=quats,
        scales=scales[:, None].expand(n, 3),
        opacities=opacities,
        colors=colors,
        viewmats=torch.eye(4)[None],
        Ks=intrinsics(),
        width=WIDTH,
        height=HEIGHT,
        **kwargs,
    )


def pixel_centres():
    rows, cols = torch.meshgrid(torch.arange(HEIGHT) + 0.5, torch.arange(WIDTH) + 0.5, indexing="ij")
    return cols, rows


def test_one_gaussian_has_the_closed_form_footprint_and_colour():
    x, y, z, scale, opacity = 0.3, -0.2, 4.0, 0.1, 0.8
    colour = torch.tensor([0.9, 0.4, 0.1])
    image, alpha, info = render(torch.tensor([[x, y, z]]), torch.tensor([scale]), torch.tensor([opacity]), colour[None])

    u, v = FOCAL * x / z + WIDTH / 2, FOCAL * y / z + HEIGHT / 2
    assert torch.allclose(info["means2d"][0, 0], torch.tensor([u, v]), atol=1e-5)
    # Perspective Jacobian of an isotropic Gaussian off the axis, plus gsplat's 0.3 px^2 blur.
    jacobian = torch.tensor([[FOCAL / z, 0, -FOCAL * x / z**2], [0, FOCAL / z, -FOCAL * y / z**2]])
    cov2d = scale**2 * jacobian @ jacobian.T + 0.3 * torch.eye(2)
    cols, rows = pixel_centres()
    d = torch.stack([cols - u, rows - v], -1)
    expected = opacity * torch.exp(-0.5 * torch.einsum("hwi,ij,hwj->hw", d, torch.linalg.inv(cov2d), d))
    seen = expected >= 1 / 255
    assert seen.sum() > 50
    assert torch.allclose(alpha[0, ..., 0][seen], expected[seen], atol=1e-5)
    assert torch.all(alpha[0, ..., 0][~seen] == 0)
    assert torch.allclose(image[0][seen], expected[seen][:, None] * colour, atol=1e-5)
    # gsplat's radius: three standard deviations of the larger axis, rounded up.
    assert info["radii"][0, 0] == math.ceil(3 * math.sqrt(torch.linalg.eigvalsh(cov2d).max()))


def test_antialiased_mode_scales_opacity_by_the_blur_compensation():
    sigma2 = (FOCAL * 0.05 / 4.0) ** 2
    _, alpha, _ = render(
        torch.tensor([[0.0, 0, 4.0]]),
        torch.tensor([0.05]),
        torch.tensor([0.8]),
        torch.ones(1, 3),
        rasterize_mode="antialiased",
    )
    centre = alpha[0, HEIGHT // 2, WIDTH // 2, 0]  # the pixel whose corner is the mean: d = (0.5, 0.5)
    compensation = sigma2 / (sigma2 + 0.3)
    assert centre == pytest.approx(0.8 * compensation * math.exp(-0.5 * 0.5 / (sigma2 + 0.3)), rel=1e-5)


@pytest.mark.parametrize("red_in_front", [True, False])
def test_nearer_gaussian_occludes_and_expected_depth_blends(red_in_front):
    z_red, z_blue = (3.0, 5.0) if red_in_front else (5.0, 3.0)
    means = torch.tensor([[0.0, 0, z_red], [0.0, 0, z_blue]])
    colours = torch.tensor([[1.0, 0, 0], [0, 0, 1.0]])
    image, alpha, _ = render(means, torch.tensor([0.3, 0.5]), torch.tensor([0.9, 0.9]), colours, render_mode="RGB+ED")

    def alpha_at_centre(z, scale):
        var = (FOCAL * scale / z) ** 2 + 0.3
        return 0.9 * math.exp(-0.5 * 0.5 / var)

    a_red, a_blue = alpha_at_centre(z_red, 0.3), alpha_at_centre(z_blue, 0.5)
    front, back = (a_red, a_blue) if red_in_front else (a_blue, a_red)
    w_front, w_back = front, (1 - front) * back
    pixel = image[0, HEIGHT // 2, WIDTH // 2]
    red, blue = (w_front, w_back) if red_in_front else (w_back, w_front)
    assert pixel[0] == pytest.approx(red, rel=1e-5) and pixel[2] == pytest.approx(blue, rel=1e-5)
    z_front, z_back = sorted([z_red, z_blue])
    assert pixel[3] == pytest.approx((w_front * z_front + w_back * z_back) / (w_front + w_back), rel=1e-5)
    assert alpha[0, HEIGHT // 2, WIDTH // 2, 0] == pytest.approx(w_front + w_back, rel=1e-5)


def test_degree_zero_spherical_harmonics_give_the_encoded_colour():
    rgb = torch.tensor([[0.2, 0.7, 0.5]])
    sh = ((rgb - 0.5) / SH_C0)[:, None, :]  # (N, 1, 3)
    image, alpha, _ = render(torch.tensor([[0.0, 0, 4.0]]), torch.tensor([0.2]), torch.tensor([0.99]), sh, sh_degree=0)
    centre = (HEIGHT // 2, WIDTH // 2)
    assert torch.allclose(image[0][centre] / alpha[0][centre], rgb[0], atol=1e-5)


def test_gaussians_behind_the_camera_or_off_screen_have_no_radius_and_no_effect():
    means = torch.tensor([[0.0, 0, -3.0], [50.0, 0, 3.0], [0.0, 0, 3.0]])
    image, _, info = render(means, torch.full((3,), 0.1), torch.full((3,), 0.9), torch.eye(3))
    assert info["radii"][0].tolist()[:2] == [0, 0] and info["radii"][0, 2] > 0
    assert image[0, ..., :2].abs().max() == 0  # only the visible (blue) Gaussian coloured anything


def test_gradients_match_finite_differences_and_absgrad_bounds_the_2d_gradient():
    torch.manual_seed(0)
    means = torch.tensor(
        [[0.1, 0.05, 4.0], [-0.2, 0.1, 5.0], [0.0, -0.1, 6.0]], dtype=torch.float64, requires_grad=True
    )
    scales = torch.tensor([0.15, 0.2, 0.3], dtype=torch.float64)
    opacities = torch.tensor([0.6, 0.7, 0.8], dtype=torch.float64)
    colours = torch.rand(3, 3, dtype=torch.float64)
    weights = torch.rand(HEIGHT, WIDTH, 3, dtype=torch.float64)

    def loss(m, absgrad=False):
        quats = torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64).repeat(3, 1)
        image, _, info = cpu_rasterize.rasterization(
            means=m,
            quats=quats,
            scales=scales[:, None].expand(3, 3),
            opacities=opacities,
            colors=colours,
            viewmats=torch.eye(4, dtype=torch.float64)[None],
            Ks=intrinsics().double(),
            width=WIDTH,
            height=HEIGHT,
            absgrad=absgrad,
        )
        return (image[0] * weights).sum(), info

    value, info = loss(means, absgrad=True)
    info["means2d"].retain_grad()
    value.backward()
    step = 1e-6
    for i in range(3):
        for k in range(3):
            shifted = means.detach().clone()
            shifted[i, k] += step
            numeric = (loss(shifted)[0] - loss(means.detach())[0]) / step
            assert means.grad[i, k].item() == pytest.approx(numeric.item(), rel=1e-3, abs=1e-3)
    grad2d, absgrad = info["means2d"].grad, info["means2d"].absgrad
    assert grad2d.abs().max() > 0
    assert torch.all(absgrad >= grad2d.abs() - 1e-9)


def test_many_overlapping_gaussians_composite_as_gsplat_defines_it_pixel_by_pixel():
    """Against the definition, one pixel at a time: the Gaussians of the pixel's tile front to back,
    alpha capped at 0.999 and dropped under 1/255, stopping before transmittance falls to 1e-4.
    Opaque, overlapping Gaussians so that many pixels stop early."""
    torch.manual_seed(1)
    n, width, height = 120, 40, 20
    means = torch.randn(n, 3, dtype=torch.float64) * torch.tensor([0.8, 0.4, 0.5], dtype=torch.float64) + torch.tensor(
        [0, 0, 4.0], dtype=torch.float64
    )
    opacities = torch.rand(n, dtype=torch.float64) * 0.1 + 0.89
    colours = torch.rand(n, 3, dtype=torch.float64)
    ks = torch.tensor([[[FOCAL, 0, width / 2], [0, FOCAL, height / 2], [0, 0, 1.0]]], dtype=torch.float64)
    image, alpha, info = cpu_rasterize.rasterization(
        means=means,
        quats=torch.randn(n, 4, dtype=torch.float64),
        scales=torch.rand(n, 3, dtype=torch.float64) * 0.3 + 0.05,
        opacities=opacities,
        colors=colours,
        viewmats=torch.eye(4, dtype=torch.float64)[None],
        Ks=ks,
        width=width,
        height=height,
    )
    means2d, conics, radii = (info[key][0].tolist() for key in ("means2d", "conics", "radii"))
    tile = cpu_rasterize.TILE
    tiles = [
        (math.floor((u - r) / tile), math.floor((v - r) / tile), math.ceil((u + r) / tile), math.ceil((v + r) / tile))
        for (u, v), r in zip(means2d, radii)
    ]  # first x, first y, end x, end y
    order = [i for i in torch.argsort(info["depths"][0]).tolist() if radii[i] > 0]
    stopped = 0
    for y in range(height):
        for x in range(width):
            colour, transmittance = torch.zeros(3, dtype=torch.float64), 1.0
            for i in order:
                if not (tiles[i][0] <= x // tile < tiles[i][2] and tiles[i][1] <= y // tile < tiles[i][3]):
                    continue
                dx, dy = x + 0.5 - means2d[i][0], y + 0.5 - means2d[i][1]
                sigma = 0.5 * (conics[i][0] * dx**2 + conics[i][2] * dy**2) + conics[i][1] * dx * dy
                a = min(float(opacities[i]) * math.exp(-sigma), 0.999)
                if sigma < 0 or a < 1 / 255:
                    continue
                if transmittance * (1 - a) <= 1e-4:
                    stopped += 1
                    break
                colour += a * transmittance * colours[i]
                transmittance *= 1 - a
            assert torch.allclose(image[0, y, x], colour, atol=1e-9), (x, y)
            assert alpha[0, y, x, 0] == pytest.approx(1 - transmittance, abs=1e-9)
    assert stopped > 100, stopped


@pytest.mark.skipif(not torch.cuda.is_available(), reason="gsplat rasterises only with CUDA")
def test_matches_gsplat_on_random_gaussians():
    from gsplat.rendering import rasterization

    torch.manual_seed(0)
    n = 2000
    means = torch.randn(n, 3) * 0.6 + torch.tensor([0, 0, 4.0])
    args = dict(
        means=means,
        quats=torch.randn(n, 4),
        scales=torch.rand(n, 3) * 0.05 + 0.005,
        opacities=torch.rand(n),
        colors=torch.randn(n, 16, 3) * 0.3,
        viewmats=torch.eye(4)[None],
        Ks=intrinsics(),
        width=WIDTH,
        height=HEIGHT,
        sh_degree=3,
        render_mode="RGB+ED",
    )
    cpu, cpu_alpha, _ = cpu_rasterize.rasterization(**args)
    gpu, gpu_alpha, _ = rasterization(**{k: v.cuda() if torch.is_tensor(v) else v for k, v in args.items()})
    mse = ((cpu[..., :3] - gpu[..., :3].cpu()) ** 2).mean()
    assert 10 * torch.log10(1 / mse) > 40
    assert torch.allclose(cpu_alpha, gpu_alpha.cpu(), atol=1e-3)
