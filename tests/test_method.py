"""The spars3r method on CPU: the real `ns-train` and `ns-eval` on a synthetic scene, test-time
pose optimisation, the depth loss, the viewer in a browser, splat export, and the bad inputs of
the method."""

import json
import math
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import roma
import torch
import yaml
from conftest import BIN, ENV, TEST_VIEWS, TRAIN_ARGS, process_copy, run_console_script
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.utils.eval_utils import eval_setup
from PIL import Image
from plyfile import PlyData

from spars_ns.errors import InputError
from spars_ns.ns.dataparser import SparsDataParserConfig
from spars_ns.ns.dataset import SparsDataset
from spars_ns.ns.model import VIEWER_BACKGROUND, LazyLPIPS, Spars3rModelConfig, depth_loss
from spars_ns.ns.viewer import HEADLESS_CHROMIUM, serve_run, view_from_camera

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning")


def mean_colour_psnr(images) -> float:
    """PSNR of predicting each (H, W, 3) image in [0, 1] by its own mean colour: what a model that learnt nothing
    scores."""
    return float(np.mean([-10 * math.log10(float(((im - im.mean((0, 1))) ** 2).mean())) for im in images]))


@pytest.mark.slow
def test_ns_eval_scores_test_views_after_pose_optimisation(trained, tmp_path):
    from nerfstudio.scripts.eval import entrypoint

    result_path = tmp_path / "eval.json"
    run_console_script(entrypoint, ["ns-eval", "--load-config", str(trained), "--output-path", str(result_path)])
    results = json.loads(result_path.read_text())["results"]

    _, pipeline, _, _ = eval_setup(trained, test_mode="test")
    baseline = mean_colour_psnr(
        [batch["image"].numpy() / 255.0 for _, batch in pipeline.datamanager.fixed_indices_eval_dataloader]
    )
    assert results["psnr"] > baseline + 6, (results["psnr"], baseline)
    assert results["psnr_before_tpo"] > baseline + 6
    assert 0 < results["ssim"] <= 1 and results["test_pose_steps"] == 20
    assert ("lpips" in results) != ("lpips_unavailable" in results)
    corrections = results["test_pose_corrections"]
    assert [c["image"] for c in corrections] == TEST_VIEWS
    # SfM registered the test views well: TPO only nudges them.
    assert all(c["rotation_deg"] < 1.0 for c in corrections)


def perturb(camera_to_worlds: torch.Tensor, degrees: float, offset: float, seed: int) -> None:
    """Rotate each camera in place about a random axis through its centre, and move it by `offset`."""
    generator = torch.Generator().manual_seed(seed)
    for c2w in camera_to_worlds:
        axis = torch.nn.functional.normalize(torch.randn(3, generator=generator), dim=0)
        c2w[:, :3] = roma.rotvec_to_rotmat(axis * math.radians(degrees)) @ c2w[:, :3]
        c2w[:, 3] += offset * torch.nn.functional.normalize(torch.randn(3, generator=generator), dim=0)


@pytest.mark.slow
def test_pose_optimisation_recovers_perturbed_test_views_with_gaussians_frozen(trained):
    _, pipeline, _, _ = eval_setup(trained, test_mode="test")
    pipeline.config.test_pose_steps, pipeline.config.test_pose_lr = (
        40,
        3e-3,
    )  # enough to undo 1.5 degrees (as 100 steps at 1e-3)
    perturb(pipeline.datamanager.eval_dataset.cameras.camera_to_worlds, degrees=1.5, offset=0.02, seed=0)
    gaussians = {name: p.detach().clone() for name, p in pipeline.model.gauss_params.items()}

    results = pipeline.get_average_eval_image_metrics()

    assert results["psnr"] - results["psnr_before_tpo"] >= 3.0, results
    for correction in results["test_pose_corrections"]:
        assert 0.75 < correction["rotation_deg"] < 2.5  # it undid roughly the 1.5 degrees it was given
    for name, before in gaussians.items():
        assert torch.equal(pipeline.model.gauss_params[name], before), f"{name} changed during evaluation"
        assert pipeline.model.gauss_params[name].requires_grad


@pytest.mark.slow
@pytest.mark.parametrize("degrees, offset", [(6.0, 0.1), (180.0, 0.0)])  # far off; looking away, at almost no Gaussians
def test_pose_optimisation_never_leaves_a_view_worse_or_its_pose_non_finite(trained, degrees, offset):
    _, pipeline, _, _ = eval_setup(trained, test_mode="test")
    pipeline.config.test_pose_steps, pipeline.config.test_pose_lr = 30, 3e-2  # a rate ten times ours: steps overshoot
    perturb(pipeline.datamanager.eval_dataset.cameras.camera_to_worlds, degrees=degrees, offset=offset, seed=1)

    results = pipeline.get_average_eval_image_metrics()

    for view in results["test_pose_corrections"]:
        assert view["tpo_loss_after"] <= view["tpo_loss_before"], view
        assert np.isfinite([*view["rotation_vector"], *view["translation_vector_sfm_units"], view["psnr"]]).all(), view
        if view["tpo_kept_step"] == 0:
            assert view["psnr"] == view["psnr_before_tpo"] and view["rotation_deg"] == 0


@pytest.mark.slow
def test_a_non_finite_render_keeps_the_registered_pose_and_says_why(trained):
    _, pipeline, _, _ = eval_setup(trained, test_mode="test")
    with torch.no_grad():
        pipeline.model.gauss_params["features_dc"][:] = float("nan")

    results = pipeline.get_average_eval_image_metrics()

    for view in results["test_pose_corrections"]:
        assert view["tpo_stopped"] == "non-finite loss at step 0" and view["tpo_kept_step"] == 0, view
        assert view["rotation_vector"] == [0.0, 0.0, 0.0] and view["translation_vector_sfm_units"] == [0.0, 0.0, 0.0]


@pytest.mark.slow
def test_moved_dataset_folder_is_named_by_ns_eval(trained, tmp_path):
    """`ns-eval`'s own code (`ComputePSNR`), in this process."""
    from nerfstudio.scripts.eval import ComputePSNR

    moved = tmp_path / "somewhere_else"
    run = yaml.load(trained.read_text(), Loader=yaml.Loader)
    run.data = run.pipeline.datamanager.data = moved  # as if the scene folder had been moved there
    config = tmp_path / "config.yml"
    config.write_text(yaml.dump(run))
    with pytest.raises(InputError, match=f"dataset folder {re.escape(str(moved))} does not exist"):
        ComputePSNR(load_config=config, output_path=tmp_path / "e.json").main()


def test_depth_maps_reach_the_batch_scaled_like_the_poses(depth_scene):
    outputs = SparsDataParserConfig(data=depth_scene.root).setup().get_dataparser_outputs("train")
    dataset = SparsDataset(outputs)
    data = dataset.get_data(0)
    stored = np.load(outputs.metadata["depth_filenames"][0])
    assert data["depth_image"].shape == (*data["image"].shape[:2], 2)
    depth, confidence = data["depth_image"][..., 0].numpy(), data["depth_image"][..., 1].numpy()
    known = stored > 0
    assert known.mean() > 0.5
    assert np.allclose(depth[known], stored[known] * outputs.dataparser_scale, rtol=1e-5)
    assert set(np.unique(confidence[known])) <= {0.0, 1.0}  # the synthetic prior's confidence is its hit mask


def test_depth_of_the_wrong_size_is_refused_with_its_name(depth_scene, tmp_path):
    copy = shutil.copytree(depth_scene.root, tmp_path / "scene")
    bad = copy / "depth" / "view_001.npy"
    np.save(bad, np.ones((10, 12), np.float32))
    outputs = SparsDataParserConfig(data=copy).setup().get_dataparser_outputs("train")
    with pytest.raises(
        InputError, match=r"view_001\.npy: depth map is 12x10 pixels but its image .*view_001\.png is 320x240"
    ):
        SparsDataset(outputs).get_data(0)


def test_photos_over_nerfstudios_limit_train_on_the_copies_it_picks_with_their_depth(
    depth_scene, photos, prior_files, tmp_path, monkeypatch
):
    """nerfstudio trains photos over 1,600 px on the first of images_2/, images_4/, ... within it, with
    depths_<f>/. The synthetic photos are 320 x 240: the limit is lowered on both sides, to 20 px and then
    to 200 (160 x 120, the copies at half size)."""
    from nerfstudio.data.dataparsers import nerfstudio_dataparser

    from spars_ns.stages.export import stage as export

    def limit(pixels: int) -> None:
        monkeypatch.setattr(export, "NERFSTUDIO_MAX_AUTO_RESOLUTION", pixels)
        monkeypatch.setattr(nerfstudio_dataparser, "MAX_AUTO_RESOLUTION", pixels)

    assert export.NERFSTUDIO_MAX_AUTO_RESOLUTION == nerfstudio_dataparser.MAX_AUTO_RESOLUTION
    options = {"refine": "global", "max_dense_points": 4000}
    limit(20)
    small = process_copy(depth_scene, tmp_path / "small", photos, prior_files, **options)
    assert small.downscaled_dir("images", 16).is_dir() and small.downscaled_dir("depths", 16).is_dir()
    limit(200)  # processed again: a 16th is more than nerfstudio needs now, and goes
    scene = process_copy(small, tmp_path / "scene", photos, prior_files, **options)
    assert not scene.downscaled_dir("images", 16).exists() and not scene.downscaled_dir("depths", 16).exists()

    outputs = SparsDataParserConfig(data=scene.root).setup().get_dataparser_outputs("train")
    assert {Path(p).parent.name for p in outputs.image_filenames} == {"images_2"}
    frames = {Path(f["file_path"]).name: f for f in json.loads(scene.transforms_path.read_text())["frames"]}
    frame = frames[Path(outputs.image_filenames[0]).name]
    assert (int(outputs.cameras.width[0]), int(outputs.cameras.height[0])) == (160, 120)
    assert float(outputs.cameras.cx[0]) == pytest.approx(frame["cx"] / 2)
    data = SparsDataset(outputs).get_data(0)  # the depth's size is checked against the image's
    assert data["image"].shape[:2] == data["depth_image"].shape[:2] == (120, 160)
    depth = data["depth_image"][..., 0].numpy() / outputs.dataparser_scale
    full = np.load(scene.root / frame["depth_file_path"])
    blocks = full.reshape(120, 2, 160, 2).transpose(0, 2, 1, 3).reshape(120, 160, 4)
    known = depth > 0
    assert known.mean() > 0.5
    assert np.isclose(blocks, depth[..., None], rtol=1e-5).any(-1)[known].all()  # each one of its block's own


def build_model(seed_points, metadata=None, **config):
    return Spars3rModelConfig(**config).setup(
        scene_box=SceneBox(aabb=torch.tensor([[-1.0, -1, -1], [1, 1, 1]])),
        num_train_data=2,
        metadata=metadata or {},
        seed_points=seed_points,
    )


def test_model_starts_from_the_seed_points_on_cpu():
    xyz = torch.rand(200, 3)
    rgb = torch.randint(0, 256, (200, 3), dtype=torch.uint8)
    model = build_model((xyz, rgb))
    assert torch.equal(model.means, xyz)
    assert torch.allclose(model.colors, rgb.float() / 255, atol=1e-6)
    assert model.means.device.type == "cpu"


def test_depth_loss_is_on_only_where_the_scene_has_depth_and_a_weight():
    seeds = (torch.rand(50, 3), torch.zeros(50, 3, dtype=torch.uint8))
    with_depth = {"depth_filenames": ["a.npy", "b.npy"]}
    assert build_model(seeds, with_depth).uses_depth
    assert not build_model(seeds, {"depth_filenames": None}).uses_depth
    assert not build_model(seeds, with_depth, depth_loss_weight=0.0).uses_depth


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_mcmc_strategy_without_cuda_is_refused_with_the_reason():
    with pytest.raises(RuntimeError, match="strategy mcmc needs CUDA"):
        build_model((torch.rand(50, 3), torch.zeros(50, 3, dtype=torch.uint8)), strategy="mcmc")


def test_no_seed_points_start_from_random_gaussians_with_a_warning(capsys):
    model = build_model(None, num_random=300)
    assert model.num_points == 300
    assert "no seed points" in capsys.readouterr().out


def test_pearson_depth_loss_ignores_the_scale_and_shift_of_disparity():
    torch.manual_seed(0)
    target = torch.rand(32, 32, 1) * 4 + 1
    weight = torch.ones_like(target)
    affine = 1.0 / (0.5 / target + 0.1)  # disparity scaled and shifted
    assert depth_loss(affine, target, weight, "pearson") < 1e-5
    assert depth_loss(torch.rand(32, 32, 1) * 4 + 1, target, weight, "pearson") > 0.5
    assert depth_loss(target * 1.5, target, weight, "metric") > 0.5


def test_depth_loss_skips_unknown_and_untrusted_pixels():
    target = torch.full((16, 16, 1), 2.0)
    pred = target.clone()
    pred[:8] = 7.0  # wrong where the prior is unknown (0) or has no confidence
    target_unknown = target.clone()
    target_unknown[:4] = 0.0
    weight = torch.ones_like(target)
    weight[4:8] = 0.0
    assert depth_loss(pred, target_unknown, weight, "metric") == pytest.approx(0.0, abs=1e-6)
    assert depth_loss(pred, target, torch.ones_like(target), "metric") > 2


def test_lpips_is_built_from_local_weights_and_reported_unavailable_without(tmp_path, monkeypatch):
    import torchvision

    a, b = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr(
        torch.hub, "download_url_to_file", lambda *args, **kwargs: (_ for _ in ()).throw(OSError("offline"))
    )
    offline = LazyLPIPS()
    assert math.isnan(offline(a, b)) and "alexnet-owt-7be5be79.pth" in offline.unavailable

    # A randomly initialised AlexNet where torchvision looks for its weights.
    checkpoints = tmp_path / "home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(torchvision.models.alexnet().state_dict(), checkpoints / "alexnet-owt-7be5be79.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    local = LazyLPIPS()
    same, different = float(local(a, a)), float(local(a, b))
    assert local.unavailable is None and same == pytest.approx(0.0, abs=1e-6) and different > same


@pytest.fixture(scope="module")
def viewer_url(trained):
    """`ns-viewer --load-config` on the trained run, serving on a free port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    viewer = subprocess.Popen(
        [str(BIN / "ns-viewer"), "--load-config", str(trained), "--viewer.websocket-port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and viewer.poll() is None:
            try:
                urllib.request.urlopen(url, timeout=5)
                break
            except OSError:
                time.sleep(1)
        assert viewer.poll() is None, f"ns-viewer exited with {viewer.poll()}"
        yield url
    finally:
        viewer.kill()
        viewer.wait()


def test_viewer_starts_behind_the_first_camera_looking_at_what_it_sees():
    forward, up = np.array([1.0, 0, 0]), np.array([0, 0, 1.0])
    camera_to_world = np.stack([np.cross(up, -forward), up, -forward, [1.0, 2, 3]], 1)  # OpenGL: x right, y up, z back
    depths = np.array([2.0, 3, 4, 5, 6, -3, -8])  # the last two behind the camera: not what it sees
    points = camera_to_world[:, 3] + depths[:, None] * forward + 0.1 * up
    pose = view_from_camera(camera_to_world, fy=100.0, height=120.0, points=points)
    assert np.allclose(pose.look_at, [1.0 + 4, 2, 3])  # on the axis, at the median depth of the points ahead
    offset = pose.position - camera_to_world[:, 3]
    assert offset @ forward < 0 and np.allclose(np.cross(offset, forward), 0)  # drawn back along the axis
    assert np.allclose(pose.up, up) and pose.fov == pytest.approx(2 * math.atan(0.6))


@pytest.mark.slow
def test_ns_viewer_serves_its_page(viewer_url):
    assert "<html" in urllib.request.urlopen(viewer_url, timeout=5).read().decode().lower()


def scene_share(screenshot: np.ndarray) -> float:
    """Share of the viewport's 3D area (below the title bar, left of the control panel) whose pixels
    are neither the viewer's empty background nor the blank page."""
    height, width = screenshot.shape[:2]
    area = screenshot[height // 10 :, : width * 2 // 3].astype(np.float32)
    background = np.abs(area - np.array(VIEWER_BACKGROUND) * 255).max(-1) < 20
    blank_page = area.min(-1) > 235
    return float((~background & ~blank_page).mean())


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Chromium (Debian package chromium)")
def test_viewer_opens_looking_at_the_rendered_scene_in_a_browser(viewer_url, tmp_path):
    """Headless Chromium opens the viewer; the splats rendered from the initial camera fill most of the view
    (at viser's default camera they were a few blobs at the edge, about 2% of it)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=HEADLESS_CHROMIUM)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(viewer_url)
            page.wait_for_selector("text=Connected", timeout=60_000)
            share, deadline = 0.0, time.monotonic() + 90
            while share < 0.6 and time.monotonic() < deadline:  # renders stream in, coarse to fine
                time.sleep(2)
                page.screenshot(path=tmp_path / "viewer.png")
                share = scene_share(np.asarray(Image.open(tmp_path / "viewer.png").convert("RGB")))
        finally:
            browser.close()
    assert share >= 0.6, f"the scene covers {share:.0%} of the view ({tmp_path / 'viewer.png'})"


@pytest.fixture(scope="module")
def portrait_run(tmp_path_factory) -> Path:
    """config.yml of a 2-step spars3r run on portrait photos (taller than wide, as a phone held upright
    takes them): what the viewer needs is the cameras and the seed points."""
    from nerfstudio.scripts.train import entrypoint

    from spars_ns.process import ProcessConfig, process
    from spars_ns.synthetic import make_scene

    folder = tmp_path_factory.mktemp("portrait")
    make_scene(num_views=6, width=240, height=320, seed=3).write_images(folder / "photos")
    scene = process(ProcessConfig(images=folder / "photos", output=folder / "scene"))
    train_args = [*TRAIN_ARGS[: TRAIN_ARGS.index("--max-num-iterations") + 1], "2"]
    train_args += TRAIN_ARGS[TRAIN_ARGS.index("--max-num-iterations") + 2 :]
    argv = ["ns-train", "spars3r", "--data", str(scene.root), "--output-dir", str(folder / "runs")]
    run_console_script(entrypoint, [*argv, "--timestamp", "run", *train_args])
    return folder / "runs" / "scene" / "spars3r" / "run" / "config.yml"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Chromium (Debian package chromium)")
def test_viewer_opens_upright_on_portrait_photos(portrait_run):
    """The camera that a browser ends up with (as it reports it back to the viewer's server) looks
    where the first training camera looks, with the same up: not rolled onto its side."""
    import viser.transforms as vtf
    from playwright.sync_api import sync_playwright

    with serve_run(portrait_run) as (viewer, pipeline, url):
        camera = pipeline.datamanager.train_dataset.cameras[0]
        assert camera.height > camera.width
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=HEADLESS_CHROMIUM)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(url)
                page.wait_for_selector("text=Connected", timeout=60_000)
                time.sleep(3)  # the browser applies the server's camera and reports its own back
                (client,) = viewer.viser_server.get_clients().values()
                rotation = vtf.SO3(client.camera.wxyz).as_matrix()  # viser's camera: x right, y down, z forward
            finally:
                browser.close()
    camera_to_world = camera.camera_to_worlds.numpy(force=True)  # OpenGL: y up, z backward
    up, forward = -rotation[:, 1], rotation[:, 2]
    assert math.degrees(math.acos(np.clip(up @ camera_to_world[:, 1], -1, 1))) < 2
    assert math.degrees(math.acos(np.clip(forward @ -camera_to_world[:, 2], -1, 1))) < 2


def visible_gaussians(config: Path) -> dict[str, np.ndarray]:
    """The run's Gaussians that a rasteriser draws (finite, opacity at least 1/255), as numpy arrays."""
    _, pipeline, _, _ = eval_setup(config, test_mode="inference")
    params = {name: value.numpy(force=True) for name, value in pipeline.model.gauss_params.items()}
    keep = np.all([np.isfinite(v.reshape(len(v), -1)).all(1) for v in params.values()], axis=0)
    keep &= 1 / (1 + np.exp(-params["opacities"][:, 0])) >= 1 / 255
    return {name: value[keep] for name, value in params.items()}


@pytest.fixture(scope="module")
def exported_splat(trained, tmp_path_factory) -> Path:
    """splat.ply of `spars-ns export-splat` on the trained run."""
    from spars_ns.cli import entrypoint

    output = tmp_path_factory.mktemp("export_splat")
    argv = ["spars-ns", "export-splat", "--load-config", str(trained), "--output-dir", str(output)]
    run_console_script(entrypoint, argv)
    return output / "splat.ply"


@pytest.mark.slow
def test_export_splat_writes_the_runs_gaussians_in_the_3dgs_layout(trained, exported_splat):
    vertices = PlyData.read(str(exported_splat))["vertex"]
    gaussians = visible_gaussians(trained)
    assert vertices.count == len(gaussians["means"]) > 1000
    rest = gaussians["features_rest"].shape[1]
    assert [p.name for p in vertices.properties] == [
        "x",
        "y",
        "z",
        "nx",
        "ny",
        "nz",
        "f_dc_0",
        "f_dc_1",
        "f_dc_2",
        *[f"f_rest_{i}" for i in range(3 * rest)],
        "opacity",
        "scale_0",
        "scale_1",
        "scale_2",
        "rot_0",
        "rot_1",
        "rot_2",
        "rot_3",
    ]
    columns = lambda *names: np.stack([vertices[n] for n in names], 1)  # noqa: E731
    assert np.array_equal(columns("x", "y", "z"), gaussians["means"])
    assert np.array_equal(columns("scale_0", "scale_1", "scale_2"), gaussians["scales"])
    assert np.array_equal(columns("rot_0", "rot_1", "rot_2", "rot_3"), gaussians["quats"])
    # The reference layout stores each colour channel's higher coefficients together.
    assert np.array_equal(columns(*[f"f_rest_{rest + i}" for i in range(rest)]), gaussians["features_rest"][:, :, 1])


@pytest.mark.slow
def test_ns_export_gaussian_splat_of_a_spars3r_run_is_what_export_splat_writes(trained, exported_splat, tmp_path):
    """`ns-export gaussian-splat`'s own code, in this process."""
    # Tried in a fresh process (here, not at collection: a second each time the suite starts).
    if subprocess.run([sys.executable, "-c", "import open3d"], capture_output=True, check=False).returncode:
        pytest.skip("nerfstudio's exporter imports open3d, which needs libusb-1.0-0 on Linux")
    from nerfstudio.scripts.exporter import ExportGaussianSplat

    ExportGaussianSplat(load_config=trained, output_dir=tmp_path).main()
    theirs = PlyData.read(str(tmp_path / "splat.ply"))["vertex"]
    ours = PlyData.read(str(exported_splat))["vertex"]
    assert theirs.count == ours.count
    assert [p.name for p in theirs.properties] == [p.name for p in ours.properties]
    for prop in theirs.properties:
        assert np.array_equal(theirs[prop.name], ours[prop.name]), prop.name


@pytest.mark.slow
def test_demo_runs_end_to_end_on_cpu(demo):
    """The suite's trained run is the demo's (conftest.py): it trained, scored the test views after pose
    optimisation, and said where everything is."""
    output, printed = demo
    results = json.loads((output / "eval.json").read_text())
    assert results["test_pose_steps"] == 20 and len(results["test_pose_corrections"]) == 2
    photos = [Image.open(output / "photos" / name).convert("RGB") for name in TEST_VIEWS]
    baseline = mean_colour_psnr([np.asarray(p.resize((80, 60), Image.Resampling.BILINEAR)) / 255.0 for p in photos])
    assert results["psnr"] > baseline + 6
    printed = " ".join(printed.split())
    assert f"ns-viewer --load-config {results['config']}" in printed and str(output / "scene") in printed


def test_pseudo_views_at_a_training_camera_reproduce_its_photo_where_the_warps_agree(depth_scene):
    """At position 0 a pseudo camera is the training camera itself: where its neighbour's warp agrees
    with its own, the target is its photo; through nerfstudio's frame, scale and intrinsics."""
    from spars_ns.ns.warped_views import build_pseudo_views, warp_source

    outputs = SparsDataParserConfig(data=depth_scene.root).setup().get_dataparser_outputs("train")
    dataset = SparsDataset(outputs)
    images, depths = zip(*(warp_source(dataset.get_data(i)) for i in range(len(dataset))))
    views = build_pseudo_views(dataset.cameras, images, depths, positions=(0.0, 0.5))
    assert {Path(outputs.image_filenames[i]).name for v in views for i in v.sources}.isdisjoint(TEST_VIEWS)
    assert len(views) == 2 * len({v.sources for v in views}) >= 6
    for view in views[::2]:
        first = view.sources[0]
        assert torch.allclose(view.camera.camera_to_worlds[0], dataset.cameras.camera_to_worlds[first], atol=1e-5)
        mask = view.mask[..., 0] > 0
        assert mask.float().mean() > 0.4, view.sources
        error = (view.image - images[first]).abs().mean(-1)[mask]
        assert error.median() < 0.03 and (error < 0.15).float().mean() > 0.95, view.sources
    assert min(float(v.mask.mean()) for v in views[1::2]) > 0.3  # half way: both warps still agree on much of the view
