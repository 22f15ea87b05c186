"""`spars-data`: a nerfstudio dataparser that processes a folder of photos on first use.

`--data` may be a folder of photos (processed into `--scene-dir`, by default a sibling
folder named by the processing options, `default_scene_dir`) or an already processed scene. Loading is nerfstudio's own
`nerfstudio-data` parser on the scene's `transforms.json`, so what stock methods see and
what spars3r sees are the same cameras and points.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch
from nerfstudio.data.dataparsers.nerfstudio_dataparser import Nerfstudio, NerfstudioDataParserConfig
from nerfstudio.plugins.registry_dataparser import DataParserSpecification
from nerfstudio.utils.rich_utils import CONSOLE

from spars_ns.errors import InputError, SparsError
from spars_ns.options import ProcessConfig, ProcessOptions
from spars_ns.ply import read_points_ply
from spars_ns.scene import SceneFolder, fingerprint, read_transforms


@dataclass
class SparsDataParserConfig(NerfstudioDataParserConfig):
    """Photos or a processed spars-ns scene; processing runs when the scene is missing or stale."""

    _target: type = field(default_factory=lambda: SparsDataParser)
    data: Path = Path()
    """Folder of photos, or a processed scene folder (one with manifest.json)."""
    scene_dir: Path | None = None
    """Where photos are processed to; default: `<data>-spars-<prior>-<options hash>` beside the
    photo folder, so that a method with other processing options never reuses the scene."""
    processing: ProcessOptions = field(default_factory=ProcessOptions)
    """How photos are processed (as `spars-ns process`), when --data is a photo folder."""
    load_3D_points: bool = True
    depth_unit_scale_factor: float = 1.0
    """depth/*.npy hold depth in the scene's own (SfM) units."""
    eval_mode: Literal["fraction", "filename", "interval", "all"] = "filename"


def default_scene_dir(photos: Path, processing: ProcessOptions) -> Path:
    """One folder per set of processing options: the same options reuse it, other ones get their own."""
    return photos.parent / f"{photos.name}-spars-{processing.prior}-{fingerprint(asdict(processing))[:8]}"


def resolve_scene(config: SparsDataParserConfig) -> Path:
    """The processed scene for `config.data`, processing the photos first when needed."""
    data = config.data
    if not data.exists():
        raise InputError(
            f"dataset folder {data} does not exist. If it moved, give its new place: --data for ns-train, "
            f"or the `data:` entry of the run's config.yml for ns-eval and ns-viewer."
        )
    if data.suffix == ".json" or ((data / "transforms.json").exists() and not (data / "images.json").exists()):
        return data  # a nerfstudio dataset made elsewhere: load as is
    if SceneFolder(data).manifest_path.exists():
        return data
    from spars_ns.process import process  # needs pycolmap, which training a processed scene does not

    scene_dir = config.scene_dir or default_scene_dir(data, config.processing)
    CONSOLE.print(f"Processing {data} into {scene_dir} (--prior {config.processing.prior})")
    process(ProcessConfig.from_options(config.processing, images=data, output=scene_dir))
    return scene_dir


def report_input_errors_in_one_line() -> None:
    """In ns-train, ns-eval and ns-viewer, our errors (a bad scene file, photos that do not
    register) end the process with their message, not a traceback through nerfstudio."""
    if getattr(sys.excepthook, "spars_ns", False):
        return
    previous = sys.excepthook

    def hook(kind, value, traceback):
        if issubclass(kind, SparsError):
            CONSOLE.print(f"[red]error:[/red] {value}")
        else:
            previous(kind, value, traceback)

    hook.spars_ns = True
    sys.excepthook = hook


@dataclass
class SparsDataParser(Nerfstudio):
    config: SparsDataParserConfig

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs):
        if not getattr(self, "_scene_resolved", False):
            report_input_errors_in_one_line()
            # A private copy: the trainer's saved config keeps the user's --data.
            self.config = replace(self.config, data=resolve_scene(self.config))
            data = self.config.data
            read_transforms(data if data.suffix == ".json" else data / "transforms.json")  # refused here, in one line
            self._scene_resolved = True
        return super()._generate_dataparser_outputs(split, **kwargs)

    def _load_3D_points(self, ply_file_path: Path, transform_matrix: torch.Tensor, scale_factor: float):
        """Seed points read with plyfile: nerfstudio's own reader needs open3d (and its system libraries)."""
        xyz, rgb = read_points_ply(ply_file_path)
        if len(xyz) == 0:
            return None
        points = torch.from_numpy(xyz)
        points = torch.cat([points, torch.ones_like(points[:, :1])], -1) @ transform_matrix.T
        return {"points3D_xyz": points * scale_factor, "points3D_rgb": torch.from_numpy(rgb)}


spars_dataparser = DataParserSpecification(
    config=SparsDataParserConfig(),
    description="A folder of photos (processed by spars-ns on first use) or a processed spars-ns scene.",
)
