from __future__ import annotations

from pathlib import Path

import numpy as np
import pycolmap
import pytest

from spars_ns.pipeline import ProcessConfig, process
from spars_ns.synthetic import SyntheticScene, make_scene, write_prior_files

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def scene() -> SyntheticScene:
    return make_scene(num_views=8, seed=0)


@pytest.fixture(scope="session")
def photos(scene, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    scene.write_images(folder)
    return folder


@pytest.fixture(scope="session")
def processed(photos, tmp_path_factory):
    """The synthetic photos processed once with every 4th view held out (views 0 and 4)."""
    output = tmp_path_factory.mktemp("scene")
    return process(ProcessConfig(images=photos, output=output, test_every=4))


@pytest.fixture(scope="session")
def prior_files(scene, tmp_path_factory) -> Path:
    """Pointmaps that err the way learned priors do (`distorted_pointmap`), one per view."""
    return write_prior_files(scene, tmp_path_factory.mktemp("prior_files"), seed=0)


@pytest.fixture(scope="session")
def dense_scene(photos, prior_files, tmp_path_factory):
    output = tmp_path_factory.mktemp("dense_scene")
    return process(ProcessConfig(images=photos, output=output, test_every=4, prior="files", prior_dir=prior_files))


def true_poses(scene: SyntheticScene) -> dict[str, np.ndarray]:
    return {scene.image_name(i): scene.cam_from_world[i] for i in range(scene.num_views)}


def sfm_from_true(scene: SyntheticScene, model: pycolmap.Reconstruction) -> np.ndarray:
    """Similarity (3x4) taking true world points into the SfM frame, fitted on camera centres."""
    names = [scene.image_name(i) for i in range(scene.num_views)]
    true = np.stack([-c[:, :3].T @ c[:, 3] for c in scene.cam_from_world])
    est = {im.name: im.projection_center() for im in model.images.values() if im.has_pose}
    keep = [i for i, n in enumerate(names) if n in est]
    return pycolmap.estimate_sim3d(true[keep], np.stack([est[names[i]] for i in keep])).matrix()
