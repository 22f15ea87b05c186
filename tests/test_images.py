"""Bad and unusual input photos: clear errors naming the file, and the user's files untouched."""

import logging

import numpy as np
import pytest
from PIL import Image

from spars_ns.errors import InputError
from spars_ns.stages.ingest.images import file_sha1, ingest_image, list_images


def _noise_image(path, size=(40, 30), mode="RGB"):
    rng = np.random.default_rng(0)
    channels = 3 if mode == "RGB" else 1
    data = (rng.random((size[1], size[0], channels)) * 255).astype(np.uint8).squeeze()
    Image.fromarray(data, mode=mode).save(path)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        list_images(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(InputError, match=f"No images found in {tmp_path}"):
        list_images(tmp_path)


def test_a_single_image_is_not_enough(tmp_path):
    _noise_image(tmp_path / "a.png")
    with pytest.raises(InputError, match=r"only one image.*a\.png.*at least 2"):
        list_images(tmp_path)


def test_non_images_are_skipped_with_a_warning(tmp_path, caplog):
    for name in ("a.png", "b.JPG"):
        _noise_image(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a photo")
    (tmp_path / "sub").mkdir()
    with caplog.at_level(logging.WARNING):
        found = list_images(tmp_path)
    assert [p.name for p in found] == ["a.png", "b.JPG"]
    assert "notes.txt" in caplog.text


def test_duplicate_stems_are_refused(tmp_path):
    _noise_image(tmp_path / "a.png")
    _noise_image(tmp_path / "a.jpg")
    with pytest.raises(InputError, match="share the name 'a'"):
        list_images(tmp_path)


def test_corrupt_image_names_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InputError, match=r"broken\.jpg: cannot read this image"):
        ingest_image(bad, out, file_sha1(bad))


def test_exif_rotation_is_applied_and_the_source_is_untouched(tmp_path):
    source = tmp_path / "rotated.jpg"
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    exif.get_ifd(0x8769)[0xA405] = 26  # 26 mm equivalent focal length
    Image.fromarray(pixels).save(source, exif=exif, quality=95)
    before = file_sha1(source)
    out = tmp_path / "out"
    out.mkdir()

    record = ingest_image(source, out, before)

    assert file_sha1(source) == before
    assert (record.width, record.height) == (20, 40)
    assert record.name == "rotated.png" and "orientation 6" in record.rewritten
    stored = np.asarray(Image.open(out / record.name))
    assert stored.shape[:2] == (40, 20)
    # Clockwise rotation moves the white left half to the top.
    assert stored[:15].mean() > 200 and stored[25:].mean() < 50
    # 35 mm equivalent focal length maps the 43.27 mm full-frame diagonal to the image diagonal.
    assert record.focal_prior == pytest.approx(26 / 43.2666 * np.hypot(20, 40), rel=1e-4)


def test_grayscale_is_kept_and_palette_images_become_rgb(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    _noise_image(tmp_path / "gray.png", mode="L")
    gray = ingest_image(tmp_path / "gray.png", out, "x")
    assert gray.rewritten is None and Image.open(out / "gray.png").mode == "L"

    Image.open(tmp_path / "gray.png").convert("P").save(tmp_path / "palette.png")
    palette = ingest_image(tmp_path / "palette.png", out, "y")
    assert "mode P" in palette.rewritten and Image.open(out / "palette.png").mode == "RGB"


def test_16_bit_and_float_greyscale_are_scaled_not_clipped(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (48, 1))  # a 16-bit PNG opens as mode I;16
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    Image.fromarray((ramp / 65535.0).astype(np.float32)).save(tmp_path / "float.tif")
    out = tmp_path / "scene"
    out.mkdir()
    for name in ("deep.png", "float.tif"):
        record = ingest_image(tmp_path / name, out, "x")
        copy = np.asarray(Image.open(out / record.name))
        assert copy.shape == (48, 64) and record.name.endswith(".png")
        assert np.abs(copy.astype(float) - ramp / 257.0).max() <= 1.0, name  # not all white
        assert "8-bit greyscale" in record.rewritten


def test_float_images_outside_0_to_1_are_refused_with_the_reason(tmp_path):
    Image.fromarray(np.full((30, 40), 3.5, np.float32)).save(tmp_path / "hdr.tif")
    (tmp_path / "scene").mkdir()
    with pytest.raises(InputError, match=r"hdr\.tif: a F image with values from 3.5 to 3.5, outside 0..1"):
        ingest_image(tmp_path / "hdr.tif", tmp_path / "scene", "x")


def test_whitespace_in_a_name_becomes_underscores_in_the_scene(tmp_path):
    _noise_image(tmp_path / "photo 3.jpg")
    (tmp_path / "scene").mkdir()
    record = ingest_image(tmp_path / "photo 3.jpg", tmp_path / "scene", "x")
    assert record.name == "photo_3.jpg" and "whitespace" in record.rewritten
    assert (tmp_path / "scene" / "photo_3.jpg").read_bytes() == (tmp_path / "photo 3.jpg").read_bytes()
    _noise_image(tmp_path / "photo_3.png")
    with pytest.raises(InputError, match="share the name 'photo_3'"):
        list_images(tmp_path)
