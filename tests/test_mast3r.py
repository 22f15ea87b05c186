"""The MASt3R backend's contract on a tiny randomly initialised model (no weights can be fetched)."""

import argparse
import json
import logging
import shutil
import time
from dataclasses import replace

import huggingface_hub.constants
import numpy as np
import pytest
from conftest import TRAIN_ARGS, run_console_script
from PIL import Image

from spars_ns.errors import InputError
from spars_ns.ns.dataparser import default_scene_dir
from spars_ns.options import SPARS3R_PROCESSING, PriorConfig
from spars_ns.process import ProcessConfig, process
from spars_ns.stages.prior.dense_prior import DensePrior

pytest.importorskip("mast3r", reason="MASt3R is installed with the mast3r extra")

from spars_ns.stages.prior.mast3r import (
    DEFAULT_CHECKPOINT,
    Mast3rConfig,
    check_weights,
    import_mast3r,
    infer_pairs,
    load_model,
    predict_priors,
    working_window,
)

INF = float("inf")
TINY = dict(
    img_size=(64, 64),
    patch_size=16,
    pos_embed="RoPE100",
    patch_embed_cls="PatchEmbedDust3R",
    enc_embed_dim=64,
    enc_depth=2,
    enc_num_heads=2,
    dec_embed_dim=64,
    dec_depth=10,
    dec_num_heads=2,
    head_type="catmlp+dpt",
    output_mode="pts3d+desc24",
    depth_mode=("exp", -INF, INF),
    conf_mode=("exp", 1, INF),
    two_confs=True,
    desc_conf_mode=("exp", 0, INF),
)
TINY_CONFIG = dict(image_size=64, coarse_iterations=10, fine_iterations=5, matching_conf_threshold=0.0, device="cpu")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A checkpoint file in the official layout, {'args': Namespace(model=...), 'model': state_dict}."""
    import torch

    api = import_mast3r()
    torch.manual_seed(0)
    model = api.AsymmetricMASt3R(**TINY, landscape_only=False)
    arguments = ", ".join(f"{k}={v!r}" for k, v in TINY.items())  # repr writes inf, as in the official files
    path = tmp_path_factory.mktemp("mast3r") / "tiny.pth"
    torch.save({"args": argparse.Namespace(model=f"AsymmetricMASt3R({arguments})"), "model": model.state_dict()}, path)
    return path


@pytest.mark.parametrize("size", [224, 512])
@pytest.mark.parametrize("width, height", [(333, 250), (512, 512), (250, 333), (640, 360)])
def test_working_window_matches_dust3r_loading(tmp_path, width, height, size):
    api = import_mast3r()
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(path)
    true_h, true_w = api.load_images([str(path)], size=size, verbose=False)[0]["true_shape"][0]
    scale, offset, (w, h) = working_window(width, height, size)
    assert (w, h) == (true_w, true_h)
    # The crop stays inside the image and is centred.
    left, right = offset[0], offset[0] + w * scale[0]
    assert left >= 0 and right <= width + 1e-6 and abs(left - (width - right)) <= scale[0] + 1e-6


def test_tiny_mast3r_gives_one_prior_per_image_at_its_working_resolution(tiny_checkpoint, scene, photos, tmp_path):
    model = load_model(str(tiny_checkpoint), "cpu")
    paths = [photos / scene.image_name(i) for i in (0, 3, 6)]
    priors = predict_priors(
        paths, model, Mast3rConfig(**TINY_CONFIG), tmp_path / "cache", tmp_path / "work", [(0, 1), (0, 2), (1, 2)]
    )
    assert len(priors) == 3
    for prior in priors:
        assert prior.pts3d.shape == (48, 64, 3) and prior.conf.shape == (48, 64)
        # clean_depth zeroes the confidence of pixels other views contradict; the rest is positive.
        assert np.isfinite(prior.pts3d).all() and (prior.conf >= 0).all() and (prior.conf > 0).mean() > 0.5
        assert prior.scale == (5.0, 5.0) and prior.offset == (0.0, 0.0)


@pytest.fixture(scope="module")
def mast3r_scene(processed, tiny_checkpoint, photos, tmp_path_factory):
    """The synthetic photos processed with the tiny MASt3R as the prior (SfM reused from `processed`)."""
    output = tmp_path_factory.mktemp("mast3r_scene") / "scene"
    shutil.copytree(processed.root, output)
    config = ProcessConfig(
        images=photos,
        output=output,
        test_every=4,
        prior="mast3r",
        prior_options=PriorConfig(mast3r=Mast3rConfig(checkpoint=str(tiny_checkpoint), **TINY_CONFIG)),
    )
    return process(config), config


def test_tiny_mast3r_through_the_pipeline_writes_prior_files(mast3r_scene, processed, tmp_path):
    scene, config = mast3r_scene
    assert scene.read_manifest()["stages"]["sfm"] == processed.read_manifest()["stages"]["sfm"]  # SfM reused
    files = sorted(p.name for p in scene.prior_dir.glob("*.npz"))
    assert files == [f"view_00{i}.npz" for i in (1, 2, 3, 5, 6, 7)]  # training views only
    prior = DensePrior.load(scene.prior_dir / files[0])
    assert prior.shape == (48, 64)
    assert scene.stage_entry("prior")["versions"]["instantsplat"] != "not installed"
    assert len(list(scene.cache_dir("mast3r").rglob("forward/*/*.pth"))) == 2 * 15  # 6 views: every pair, both ways

    shutil.copytree(scene.root, tmp_path / "scene")
    scene = process(replace(config, output=tmp_path / "scene", prior="none"))
    assert not scene.cache_dir("mast3r").exists() and not scene.prior_dir.exists()  # switched off: cache gone too


def loaded_images(api, photos, scene, views):
    images = api.load_images([str(photos / scene.image_name(i)) for i in views], size=64, verbose=False)
    for image, i in zip(images, views):
        image["instance"] = str(photos / scene.image_name(i))
    return images


def test_batched_inference_writes_what_mast3r_own_forward_writes(tiny_checkpoint, scene, photos, tmp_path):
    """Each image encoded once and pairs decoded in batches give MASt3R's own per-pair outputs."""
    import torch
    from mast3r.cloud_opt.sparse_ga import forward_mast3r

    api = import_mast3r()
    model = load_model(str(tiny_checkpoint), "cpu")
    images = loaded_images(api, photos, scene, [0, 2, 5])
    pairs = [(0, 1), (0, 2), (1, 2)]
    assert infer_pairs(model, images, pairs, tmp_path / "ours", batch_size=2) == 3
    symmetric = [(images[i], images[j]) for i, j in pairs] + [(images[j], images[i]) for i, j in pairs]
    forward_mast3r(symmetric, model, cache_path=str(tmp_path / "theirs"), device="cpu")
    theirs = sorted(p.relative_to(tmp_path / "theirs") for p in (tmp_path / "theirs").rglob("*.pth"))
    assert theirs == sorted(p.relative_to(tmp_path / "ours") for p in (tmp_path / "ours").rglob("*.pth"))
    for name in theirs:
        ours, reference = torch.load(tmp_path / "ours" / name), torch.load(tmp_path / "theirs" / name)
        flat = [torch.as_tensor(np.asarray(t, np.float64)) for t in torch.utils._pytree.tree_leaves(ours)]
        flat_reference = [
            torch.as_tensor(np.asarray(t, np.float64)) for t in torch.utils._pytree.tree_leaves(reference)
        ]
        assert len(flat) == len(flat_reference)
        assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(flat, flat_reference)), name


def test_a_photo_added_later_costs_only_its_pairs(tiny_checkpoint, scene, photos, tmp_path):
    api = import_mast3r()
    model = load_model(str(tiny_checkpoint), "cpu")
    assert infer_pairs(model, loaded_images(api, photos, scene, [0, 1, 2]), [(0, 1), (0, 2), (1, 2)], tmp_path, 4) == 3
    everything = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    assert infer_pairs(model, loaded_images(api, photos, scene, [0, 1, 2, 3]), everything, tmp_path, 4) == 3
    assert not list(tmp_path.rglob(".*.partial"))


class RunsACommand:
    """Pickled as a call of os.system: what a malicious checkpoint holds."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_local_checkpoint_loads_the_same_weights_as_mast3r_own_loader(tiny_checkpoint):
    import torch

    ours = load_model(str(tiny_checkpoint), "cpu").state_dict()
    official = import_mast3r().AsymmetricMASt3R.from_pretrained(str(tiny_checkpoint)).state_dict()
    assert ours.keys() == official.keys() and all(torch.equal(ours[k], official[k]) for k in ours)


@pytest.mark.parametrize("contents", ["pickle", "model string"])
def test_a_checkpoint_from_someone_else_cannot_run_code(contents, tiny_checkpoint, tmp_path):
    import torch

    marker = tmp_path / "ran"
    checkpoint = torch.load(tiny_checkpoint, weights_only=False)
    if contents == "pickle":
        checkpoint["args"].extra = RunsACommand(marker)
    else:
        checkpoint["args"].model = f"__import__('os').system('touch {marker}') or " + checkpoint["args"].model
    evil = tmp_path / "evil.pth"
    torch.save(checkpoint, evil)
    with pytest.raises(InputError, match=r"evil\.pth: (not a MASt3R checkpoint that can be read safely|its model is)"):
        load_model(str(evil), "cpu")
    assert not marker.exists()


def test_checkpoint_by_name_offline_says_how_to_proceed(tmp_path, monkeypatch):

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(InputError, match=r"'naver/MASt3R_ViTLarge_BaseDecoder_512_catmlpdpt_metric'.*local path"):
        load_model(DEFAULT_CHECKPOINT, "cpu")


@pytest.mark.parametrize("checkpoint", [DEFAULT_CHECKPOINT, "weights/missing.pth"])
def test_spars3r_without_reachable_weights_stops_before_any_work(checkpoint, photos, tmp_path, monkeypatch):
    """The default method's processing, offline with no local checkpoint: one message naming the
    checkpoint option and the weight-free method, within seconds, nothing written."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # nothing cached
    monkeypatch.chdir(tmp_path)
    options = replace(SPARS3R_PROCESSING, prior_options=PriorConfig(mast3r=Mast3rConfig(checkpoint=checkpoint)))
    start = time.monotonic()
    with pytest.raises(InputError, match=r"--prior-options\.mast3r\.checkpoint PATH.*spars3r-sfm"):
        process(ProcessConfig.from_options(options, images=photos, output=tmp_path / "scene"))
    assert time.monotonic() - start < 5 and not (tmp_path / "scene").exists()


def test_a_checkpoint_name_in_the_hub_cache_passes_the_check_offline(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--someone--mast3r"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (repo / "snapshots" / ("0" * 40) / "config.json").write_text("{}")
    check_weights(Mast3rConfig(checkpoint="someone/mast3r"))
    with pytest.raises(InputError, match="'someone/other' are not on this machine"):
        check_weights(Mast3rConfig(checkpoint="someone/other"))


@pytest.mark.slow
def test_ns_train_spars3r_runs_the_whole_recipe_by_default(mast3r_scene, photos, tiny_checkpoint, tmp_path, caplog):
    """`ns-train spars3r --data photos/` with only the checkpoint given: MASt3R prior, two-stage
    alignment (superpixels, with a notice, as no SAM weights are cached), refined depth for the
    depth loss, then training."""
    from nerfstudio.scripts.train import entrypoint

    folder = tmp_path / "photos"
    shutil.copytree(photos, folder)
    mast3r = Mast3rConfig(checkpoint=str(tiny_checkpoint), **TINY_CONFIG)
    options = replace(SPARS3R_PROCESSING, test_every=4, prior_options=PriorConfig(mast3r=mast3r), max_dense_points=2000)
    scene_dir = default_scene_dir(folder, options)
    shutil.copytree(mast3r_scene[0].root, scene_dir)  # ingest, SfM and the prior as this processing makes them
    prefix = "--processing."  # the dataparser's options, after its name
    flags = [
        "spars-data",
        f"{prefix}prior-options.mast3r.checkpoint",
        str(tiny_checkpoint),
        f"{prefix}test-every",
        "4",
        f"{prefix}max-dense-points",
        "2000",
    ]  # few Gaussians for the CPU rasteriser
    for key, value in TINY_CONFIG.items():
        flags += [f"{prefix}prior-options.mast3r.{key.replace('_', '-')}", str(value)]
    steps = [
        "--max-num-iterations",
        "20",
        "--pipeline.model.warmup-length",
        "10",
        "--pipeline.model.refine-every",
        "10",
    ]
    command = [
        "ns-train",
        "spars3r",
        "--data",
        str(folder),
        "--output-dir",
        str(tmp_path / "runs"),
        "--timestamp",
        "run",
        *TRAIN_ARGS,
        *steps,
        *flags,
    ]
    with caplog.at_level(logging.INFO):
        run_console_script(entrypoint, command, env={"SPARS_NS_CACHE": str(tmp_path / "no-weights")})
    assert any("superpixel regions, not SAM" in r.getMessage() for r in caplog.records)

    stages = json.loads((scene_dir / "manifest.json").read_text())["stages"]
    assert {stage: stages[stage] for stage in ("sfm", "prior")} == {
        stage: mast3r_scene[0].read_manifest()["stages"][stage] for stage in ("sfm", "prior")
    }  # reused: the default recipe asks for what the fixture made
    assert stages["prior"]["config"]["prior"] == "mast3r"
    assert stages["align"]["config"]["align"] == "two-stage" and stages["align"]["config"]["regions"] == "superpixels"
    assert stages["refine"]["config"]["refine"] == "global"
    frames = json.loads((scene_dir / "transforms.json").read_text())["frames"]
    assert all((scene_dir / f["depth_file_path"]).exists() for f in frames)
    assert list((tmp_path / "runs").rglob("step-000000019.ckpt"))
