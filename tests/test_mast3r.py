"""The MASt3R backend's contract on a tiny randomly initialised model (no weights can be fetched)."""

import argparse
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from spars_ns.options import PriorConfig
from spars_ns.pipeline import ProcessConfig, process
from spars_ns.priors import DensePrior

pytest.importorskip("mast3r", reason="MASt3R is installed with the mast3r extra")

from spars_ns.priors.mast3r import Mast3rConfig, import_mast3r, load_model, predict_priors, working_window  # noqa: E402

INF = float("inf")
TINY = dict(
    img_size=(64, 64), patch_size=16, pos_embed="RoPE100", patch_embed_cls="PatchEmbedDust3R",
    enc_embed_dim=64, enc_depth=2, enc_num_heads=2, dec_embed_dim=64, dec_depth=10, dec_num_heads=2,
    head_type="catmlp+dpt", output_mode="pts3d+desc24", depth_mode=("exp", -INF, INF), conf_mode=("exp", 1, INF),
    two_confs=True, desc_conf_mode=("exp", 0, INF),
)
TINY_CONFIG = dict(image_size=64, coarse_iterations=10, fine_iterations=5, matching_conf_threshold=0.0, device="cpu")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A checkpoint file in the official layout, {'args': Namespace(model=...), 'model': state_dict}."""
    import torch

    api = import_mast3r()
    torch.manual_seed(0)
    model = api.AsymmetricMASt3R(**TINY, landscape_only=False)
    arguments = ", ".join(f"{k}={v!r}" for k, v in TINY.items()).replace("inf", "float('inf')")
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
    priors = predict_priors(paths, model, Mast3rConfig(**TINY_CONFIG), tmp_path / "cache")
    assert len(priors) == 3
    for prior in priors:
        assert prior.pts3d.shape == (48, 64, 3) and prior.conf.shape == (48, 64)
        # clean_depth zeroes the confidence of pixels other views contradict; the rest is positive.
        assert np.isfinite(prior.pts3d).all() and (prior.conf >= 0).all() and (prior.conf > 0).mean() > 0.5
        assert prior.scale == (5.0, 5.0) and prior.offset == (0.0, 0.0)


def test_tiny_mast3r_through_the_pipeline_writes_prior_files(processed, tiny_checkpoint, photos, tmp_path):
    output = tmp_path / "scene"
    shutil.copytree(processed.root, output)
    config = ProcessConfig(
        images=photos, output=output, test_every=4, prior="mast3r",
        prior_options=PriorConfig(mast3r=Mast3rConfig(checkpoint=str(tiny_checkpoint), **TINY_CONFIG)),
    )
    scene = process(config)
    assert scene.read_manifest()["stages"]["sfm"] == processed.read_manifest()["stages"]["sfm"]  # SfM reused
    files = sorted(p.name for p in scene.prior_dir.glob("*.npz"))
    assert files == [f"view_00{i}.npz" for i in (1, 2, 3, 5, 6, 7)]  # training views only
    prior = DensePrior.load(scene.prior_dir / files[0])
    assert prior.shape == (48, 64)
    assert scene.stage_entry("prior")["versions"]["instantsplat"] != "not installed"


def test_checkpoint_by_name_offline_says_how_to_proceed():
    code = "from spars_ns.priors.mast3r import load_model, DEFAULT_CHECKPOINT; load_model(DEFAULT_CHECKPOINT, 'cpu')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode != 0
    assert "naver/MASt3R_ViTLarge_BaseDecoder_512_catmlpdpt_metric" in out.stderr and "local path" in out.stderr
