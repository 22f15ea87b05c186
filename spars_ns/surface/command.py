"""`spars-ns mesh`: a signed-distance volume (`sdf.npz`) and a mesh (`mesh.ply`) from a processed
scene's depth (`--scene`) or from depth rendered by a trained spars3r run (`--load-config`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from spars_ns.errors import InputError
from spars_ns.ply import write_mesh_ply
from spars_ns.scene import atomic_files
from spars_ns.surface.mesh import SignedDistanceVolume, colour_vertices, extract_surface
from spars_ns.surface.tsdf import (
    default_device,
    fuse,
    fusion_steps,
    grid_around,
    memory_available_gib,
    memory_needed_gib,
)


@dataclass
class MeshConfig:
    """Fuse the depth of a processed scene (--scene) or of a trained spars3r run (--load-config)
    into a truncated signed-distance volume (sdf.npz) and extract its surface as a coloured
    mesh (mesh.ply), both in the scene's frame."""

    output_dir: Path
    """Folder for sdf.npz and mesh.ply (created if needed)."""
    scene: Path | None = None
    """A processed scene with depth (made with a dense prior and --refine): its training views' depth is fused."""
    load_config: Path | None = None
    """config.yml of a trained spars3r run: depth rendered at its training cameras and between them is fused."""
    resolution: int = 256
    """Voxels along each side of the cubic volume; 64 gives the volumes SDF-refinement networks take."""
    truncation: float = 4.0
    """Truncation of the signed distance, in voxels: how far behind a view's depth a voxel still
    counts as inside, and the largest distance stored. At least 1 (below, voxel centres miss
    the band around the surface); larger smooths more and bridges more depth error."""
    min_component_fraction: float = 0.01
    """Connected pieces of the mesh with fewer than this share of its faces are dropped."""
    margin: float = 0.05
    """The volume extends the seed points' extent (1st to 99th percentile) by this share of it on each side."""
    interpolated_views: int = 2
    """--load-config: views rendered between each training camera and its nearest neighbour."""
    render_scale: float = 1.0
    """--load-config: size of the rendered views relative to the size the run trained at (larger
    renders of Gaussians fitted at that size have gaps and give worse depth)."""
    memory_budget_gib: float = 4.0
    """A resolution that needs more memory than this (or than is free) is refused before any work."""


@dataclass
class MeshResult:
    sdf_path: Path
    mesh_path: Path
    views: int
    vertices: int
    faces: int
    seconds: float


def make_mesh(config: MeshConfig, console: Console | None = None) -> MeshResult:
    """Writes `sdf.npz` and `mesh.ply` into `config.output_dir`."""
    start = time.perf_counter()
    device = default_device()
    check_config(config, memory_available_gib(device))
    with _progress(console) as progress:
        if config.scene is not None:
            from spars_ns.surface.sources import scene_views

            views, seeds = scene_views(config.scene)
        else:
            from spars_ns.surface.sources import run_views

            views, seeds = run_views(config.load_config, config.interpolated_views, config.render_scale, progress)
        grid = grid_around(views, seeds, config.resolution, config.margin)
        truncation = config.truncation * grid.voxel_size
        task = progress.add_task(
            f"Fusing {len(views)} views into {config.resolution}^3 voxels", total=fusion_steps(grid)
        )
        sdf, weight = fuse(views, grid, truncation, device, advance=lambda: progress.advance(task))
        volume = SignedDistanceVolume(sdf, weight, grid.origin, np.float64(grid.voxel_size), np.float64(truncation))
        if not (weight > 0).any():
            raise InputError(
                f"empty volume: no view's depth falls inside the volume around the seed points ({len(views)} views); "
                f"the depth and points.ply of {config.scene or config.load_config} disagree."
            )
        progress.add_task("Marching cubes", total=None)
        vertices, faces = extract_surface(volume, config.min_component_fraction)
        if len(faces) == 0:
            raise InputError(
                f"empty volume: no surface in the fused depth of {len(views)} views (no observed voxel lies behind "
                f"a depth within the truncation of {config.truncation} voxels, or the pieces found are all smaller "
                f"than --min-component-fraction); raise --truncation, or check the depth maps."
            )
        colours = colour_vertices(vertices, views, truncation, device)
        config.output_dir.mkdir(parents=True, exist_ok=True)
        sdf_path, mesh_path = config.output_dir / "sdf.npz", config.output_dir / "mesh.ply"
        with atomic_files([sdf_path, mesh_path]) as (sdf_tmp, mesh_tmp):  # one pair: both new or neither
            volume.save(sdf_tmp)
            write_mesh_ply(mesh_tmp, vertices, faces, colours)
    return MeshResult(sdf_path, mesh_path, len(views), len(vertices), len(faces), time.perf_counter() - start)


def check_config(config: MeshConfig, available_gib: float) -> None:
    """Refuse options that cannot work, before anything is read or rendered."""
    if (config.scene is None) == (config.load_config is None):
        raise InputError(
            "give one source: --scene DIR (a processed scene) or --load-config config.yml (a spars3r run)."
        )
    if config.resolution < 8:
        raise InputError(f"--resolution {config.resolution}: at least 8 voxels a side are needed for a surface.")
    if config.truncation < 1:
        raise InputError(
            f"--truncation {config.truncation}: at least 1 voxel, or the band around the surface falls "
            f"between voxel centres."
        )
    needed = memory_needed_gib(config.resolution)
    if needed > min(config.memory_budget_gib, available_gib):
        raise InputError(
            f"--resolution {config.resolution} needs about {needed:.1f} GiB ({config.resolution}^3 voxels), more than "
            f"--memory-budget-gib {config.memory_budget_gib:g} or the {available_gib:.1f} GiB free now; "
            f"lower --resolution (memory grows with its cube) or raise the budget."
        )


def _progress(console: Console | None) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
