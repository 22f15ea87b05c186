"""Region proposals: mask merging, superpixels against object ids, SAM's contract on a tiny model."""

import logging

import numpy as np
import pytest

from spars_ns.errors import InputError
from spars_ns.options import PriorConfig, ProcessConfig, check_options
from spars_ns.stages.align import regions as regions_module
from spars_ns.stages.align.regions import RegionsConfig, SamRegions, choose_regions, merge_masks, superpixel_regions
from spars_ns.stages.prior.files import FilesConfig


def test_overlapping_masks_merge_and_separate_ones_do_not():
    masks = np.zeros((3, 10, 10), bool)
    masks[0, :5, :5] = True
    masks[1, 2:6, 2:6] = True  # overlaps mask 0 by 9 of its 16 pixels
    masks[2, 8:, 8:] = True
    labels = merge_masks(masks, min_overlap=0.25)
    assert set(np.unique(labels)) == {0, 1, 2}
    assert labels[0, 0] == labels[5, 5] != labels[9, 9]
    assert (labels[masks.any(0) == 0] == 0).all()


def test_superpixels_rarely_cross_object_boundaries(scene, monkeypatch):
    view = scene.render(3)
    monkeypatch.setattr(regions_module, "SUPERPIXELS", (25, 150))
    coarse, labels = superpixel_regions(view.image)
    assert len(np.unique(coarse)) < len(np.unique(labels))
    assert labels.min() >= 1 and len(np.unique(labels)) > 50
    # Purity: the share of each superpixel's pixels that belong to its majority object.
    pure = 0
    for label in np.unique(labels):
        ids = view.object_ids[labels == label]
        pure += np.bincount(ids + 1).max()
    assert pure / labels.size > 0.85


def test_missing_sam_checkpoint_names_the_superpixel_option(tmp_path):
    pytest.importorskip("segment_anything")
    with pytest.raises(InputError, match="superpixels"):
        SamRegions(RegionsConfig(sam_checkpoint=tmp_path / "sam_vit_h.pth"))


def test_sam_prompts_give_a_label_map_at_image_size(monkeypatch):
    pytest.importorskip("segment_anything")
    import torch
    from segment_anything.build_sam import _build_sam

    torch.manual_seed(0)
    tiny = _build_sam(encoder_embed_dim=32, encoder_depth=1, encoder_num_heads=1, encoder_global_attn_indexes=[0])
    monkeypatch.setattr(regions_module, "MAX_PROMPTS", 4)
    regions = SamRegions.from_model(tiny, RegionsConfig())
    image = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    prompts = np.array([[5.0, 5.0], [60.0, 40.0], [30.0, 20.0], [31.0, 21.0], [10.0, 40.0], [50.0, 8.0]])
    labels = regions(image, prompts)
    assert labels.shape == (48, 64) and labels.dtype == np.int32 and labels.min() >= 0
    assert regions(image, np.zeros((0, 2))).max() == 0


def test_auto_regions_take_sam_from_the_weights_cache_and_say_so(tmp_path, monkeypatch):
    pytest.importorskip("segment_anything")
    monkeypatch.setenv("SPARS_NS_CACHE", str(tmp_path))
    kind, options, notice = choose_regions("auto", RegionsConfig())
    assert kind == "superpixels" and options.sam_checkpoint is None
    assert "--regions-options.sam-checkpoint" in notice and str(tmp_path / "sam_vit_h_4b8939.pth") in notice

    (tmp_path / "sam_vit_b_01ec64.pth").write_bytes(b"")  # chosen by its official name for the model asked for
    kind, options, notice = choose_regions("auto", RegionsConfig(sam_model="vit_b"))
    assert kind == "sam" and options.sam_checkpoint == tmp_path / "sam_vit_b_01ec64.pth" and "SAM regions" in notice
    assert choose_regions("auto", RegionsConfig(sam_model="vit_h"))[0] == "superpixels"
    assert choose_regions("superpixels", RegionsConfig(sam_model="vit_b"))[0] == "superpixels"
    with pytest.raises(InputError, match=r"sam_vit_h_4b8939\.pth not found"):
        choose_regions("sam", RegionsConfig())


def test_processing_notices_the_fallback_to_superpixels(photos, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SPARS_NS_CACHE", str(tmp_path))
    config = ProcessConfig(
        images=photos, output=tmp_path / "s", prior="files", prior_options=PriorConfig(files=FilesConfig(dir=tmp_path))
    )
    with caplog.at_level(logging.INFO):
        resolved = check_options(config)
    assert resolved.regions == "superpixels" and config.regions == "auto"
    assert any(r.levelno == logging.WARNING and "superpixel regions, not SAM" in r.getMessage() for r in caplog.records)
