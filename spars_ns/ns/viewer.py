"""The viewer opens looking at the scene.

nerfstudio's viewer starts every browser at viser's default camera, which knows nothing of
the scene: after nerfstudio's rescaling of poses the splats land off to one side and the
training cameras are specks in the distance. `SceneView` is a `ViewerControl`, which the
viewer finds on the model and sets up for `ns-train` and `ns-viewer` alike; each browser
that connects is moved to the first training camera's viewpoint, drawn back a little so
that its frustum is in view, looking along its axis at the seed points it sees.
`serve_run` serves a trained run the way `ns-viewer` does, in this process (for a browser test
and for the README's picture, `scripts/viewer_picture.py`).
"""

from __future__ import annotations

import contextlib
import math
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from nerfstudio.viewer.viewer_elements import ViewerControl

HEADLESS_CHROMIUM = [  # the browser's flags where the viewer is checked: root, no GPU, a closed network
    "--no-sandbox",
    "--disable-gpu",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

PULL_BACK = 0.15
"""How far behind the camera the view starts, as a share of the median depth of the points it sees."""


@dataclass
class ViewPose:
    """A viewer camera in nerfstudio's world frame: where it is, what it looks at, which way is up,
    and its vertical field of view in radians."""

    position: np.ndarray
    look_at: np.ndarray
    up: np.ndarray
    fov: float


def view_from_camera(camera_to_world: np.ndarray, fy: float, height: float, points: np.ndarray) -> ViewPose:
    """The view from behind a camera (OpenGL camera-to-world, 3x4) looking along its axis at the
    median depth of the points in front of it (its own position plus one unit where none are)."""
    centre = camera_to_world[:, 3]
    forward, up = -camera_to_world[:, 2], camera_to_world[:, 1]
    depths = (points - centre) @ forward
    ahead = depths[depths > 0]
    distance = float(np.median(ahead)) if len(ahead) else 1.0
    position = centre - PULL_BACK * distance * forward
    return ViewPose(position, centre + distance * forward, up, 2 * math.atan(height / (2 * fy)))


class SceneView(ViewerControl):
    """Moves each browser that connects to `view_from_camera` of the first training camera."""

    def _setup(self, viewer) -> None:
        super()._setup(viewer)
        self.viser_server.on_client_connect(self._move_to_scene)

    def _move_to_scene(self, client) -> None:
        from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO

        camera = self.viewer.pipeline.datamanager.train_dataset.cameras[0]
        pose = view_from_camera(
            camera.camera_to_worlds.numpy(force=True),
            float(camera.fy),
            float(camera.height),
            self.viewer.pipeline.model.means.numpy(force=True),
        )
        with client.atomic():
            client.camera.up_direction = pose.up
            client.camera.position = pose.position * VISER_NERFSTUDIO_SCALE_RATIO
            client.camera.look_at = pose.look_at * VISER_NERFSTUDIO_SCALE_RATIO
            client.camera.fov = pose.fov


@contextlib.contextmanager
def serve_run(config_path: Path, test_mode: Literal["test", "val", "inference"] = "inference"):
    """nerfstudio's viewer on a trained run, in this process, on a free local port, as `ns-viewer`
    shows it: yields (viewer, pipeline, url) and stops the server on exit."""
    from nerfstudio.viewer.viewer import Viewer

    from spars_ns.ns.run_config import load_run_config, setup_run

    config = load_run_config(config_path)
    pipeline = setup_run(config, test_mode=test_mode)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        config.viewer.websocket_port = probe.getsockname()[1]
    log = tempfile.TemporaryDirectory()  # not in the run's folder: it may be someone else's
    viewer = Viewer(
        config.viewer,
        log_filename=Path(log.name) / "viewer_log.txt",
        datapath=pipeline.datamanager.get_datapath(),
        pipeline=pipeline,
    )
    try:
        viewer.init_scene(train_dataset=pipeline.datamanager.train_dataset, train_state="completed")
        yield viewer, pipeline, f"http://127.0.0.1:{config.viewer.websocket_port}/"
    finally:
        viewer.viser_server.stop()
        log.cleanup()
