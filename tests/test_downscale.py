"""The smaller copies nerfstudio trains photos over 1,600 px on (`images_<f>/`, `depths_<f>/`), against
the synthetic scene rendered at both sizes: one scene at 640 x 480 and the same at 320 x 240 (the
focal length and principal point halve with the size, the poses and textures are the same)."""

import cv2
import numpy as np
import pytest
from PIL import Image

from spars_ns.geometry import inverse_transform, pixel_centres, unproject
from spars_ns.stages.export.stage import downscale_depth, downscale_factors, downscale_photo
from spars_ns.surface.evaluate import distance_to_quads
from spars_ns.synthetic import make_scene


@pytest.fixture(scope="module")
def two_sizes():
    large, small = (make_scene(num_views=2, width=w, height=h, seed=3) for w, h in ((640, 480), (320, 240)))
    return large, large.render(0), small, small.render(0)


def grey(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(image).convert("L"), np.float32)


def test_a_photo_at_half_size_is_the_view_rendered_at_half_size(two_sizes, tmp_path):
    _, large_view, _, small_view = two_sizes
    Image.fromarray(large_view.image).save(tmp_path / "large.png")
    downscale_photo(tmp_path / "large.png", tmp_path / "small.png", 2)
    reduced = grey(np.asarray(Image.open(tmp_path / "small.png")))
    assert reduced.shape == (240, 320)
    window = cv2.createHanningWindow((320, 240), cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(reduced, grey(small_view.image), window)
    # Pixel centres where the halved camera puts them: a nearest-pixel resize is a quarter pixel off.
    assert abs(dx) < 0.05 and abs(dy) < 0.05, (dx, dy)


def test_a_photo_whose_size_is_odd_loses_its_last_row_and_column_as_nerfstudio_rounds_down(tmp_path):
    Image.fromarray(np.full((101, 75, 3), 200, np.uint8)).save(tmp_path / "odd.jpg", quality=95)
    downscale_photo(tmp_path / "odd.jpg", tmp_path / "half.jpg", 2)
    with Image.open(tmp_path / "half.jpg") as half:
        assert half.size == (37, 50) and half.format == "JPEG"


def test_depth_at_half_size_lies_on_the_true_surfaces_even_at_occluding_edges(two_sizes):
    _, large_view, small, _ = two_sizes
    depth = np.where(np.isfinite(large_view.depth), large_view.depth, 0)  # 0: nothing hit
    confidence = (np.arange(depth.size, dtype=np.float32) % 7).reshape(depth.shape)
    reduced, reduced_confidence = downscale_depth(depth, confidence, 2)
    known = reduced > 0
    assert reduced.shape == (240, 320) and 0.8 < known.mean() < 0.95  # the sky beyond the walls stays unknown
    points = unproject(pixel_centres(240, 320), reduced, small.intrinsics)[known]
    off_surface = distance_to_quads(inverse_transform(points, small.cam_from_world[0]), small.quads)
    # A mean of each block puts points between a box's edge and the wall behind it (0.8 units off here).
    assert off_surface.max() < 0.05, np.percentile(off_surface, [50, 99, 100])
    # Each depth keeps its own pixel's confidence.
    blocks = [a.reshape(240, 2, 320, 2).transpose(0, 2, 1, 3).reshape(240, 320, 4) for a in (depth, confidence)]
    chosen = blocks[0] == reduced[..., None]
    assert (np.where(chosen, blocks[1], -1) == reduced_confidence[..., None]).any(-1)[known].all()
    assert not reduced_confidence[~known].any()


def test_copies_are_made_where_nerfstudio_looks_for_them():
    assert downscale_factors(1600) == []  # trained at their own size
    # Over it ns-process-data's three, which --downscale-factor picks from, and as many as nerfstudio's choice walks.
    assert downscale_factors(1601) == downscale_factors(4032) == [2, 4, 8]  # a phone's 12 MP train at 1008 x 756
    assert downscale_factors(12801) == [2, 4, 8, 16]  # 12801 / 8 is over 1600
