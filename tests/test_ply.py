"""The splat PLY layout on Gaussians whose every value is known."""

import numpy as np
from plyfile import PlyData

from spars_ns.ply import write_splat_ply


def test_splat_ply_leaves_out_non_finite_and_invisible_gaussians(tmp_path):
    count, rest = 5, 3
    means = np.arange(count * 3, dtype=np.float32).reshape(count, 3)
    sh_rest = np.arange(count * rest * 3, dtype=np.float32).reshape(count, rest, 3)  # (N, K, channel)
    opacity = np.array([0.0, 2.0, -6.0, 1.0, 0.5], np.float32)  # the third is under 1/255
    scales = np.zeros((count, 3), np.float32)
    scales[3, 1] = np.nan  # the fourth cannot be drawn
    quats = np.tile(np.array([1.0, 0, 0, 0], np.float32), (count, 1))
    written = write_splat_ply(tmp_path / "s.ply", means, means + 100, sh_rest, opacity[:, None], scales, quats)

    vertices = PlyData.read(str(tmp_path / "s.ply"))["vertex"]
    kept = [0, 1, 4]
    assert written == vertices.count == len(kept)
    assert np.array_equal(vertices["x"], means[kept, 0]) and np.array_equal(vertices["f_dc_2"], means[kept, 2] + 100)
    assert np.array_equal(vertices["opacity"], opacity[kept])
    # Channel-major: f_rest_0..2 are the red coefficients, f_rest_3..5 the green ones.
    assert np.array_equal(vertices["f_rest_1"], sh_rest[kept, 1, 0])
    assert np.array_equal(vertices["f_rest_3"], sh_rest[kept, 0, 1])
    assert not (tmp_path / ".s.ply.partial").exists()
