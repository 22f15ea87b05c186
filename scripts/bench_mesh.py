"""Surface benchmark: `spars-ns mesh` against the true surfaces of a synthetic scene.

    python scripts/bench_mesh.py --output /tmp/bench_mesh

The synthetic scene of the tests (`make_scene(num_views=8, seed=0)`: a room corner with four
boxes, 8 views at 320x240), every 4th view held out, processed with a files prior that errs
the way learned priors do (`write_prior_files`), aligned in two stages and refined
(`--refine global` and `local`). Meshes from `--scene` at each resolution, from
`--load-config` of a short CPU training of spars3r on the globally refined scene, and, where
they run, from nerfstudio's `ns-export tsdf` and `ns-export poisson` on that run. Each mesh is
scored in the true frame (the SfM frame mapped back by a similarity fitted on the camera
centres) against the true surfaces the training cameras see (`spars_ns/surface/evaluate.py`):
accuracy and completeness (mean distances, the two halves of the Chamfer distance) and
F-score at 1% of the seen surface's bounding-box diagonal. The depth maps themselves are
scored too (each training view's depth unprojected, distance to the true surface), to tell
errors of the depth from errors of the fusion. Time and peak memory (the process's resident
set, and the GPU's when there is one) of each `spars-ns mesh` run, in a fresh process.
"""

from __future__ import annotations

import spars_ns  # noqa: F401  # isort: skip  # first: it pins OpenBLAS's kernels before numpy and pycolmap load

import json
import multiprocessing
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pycolmap
import torch
import trimesh
import tyro

from spars_ns.geometry import inverse_transform, opengl_c2w_to_opencv, unproject
from spars_ns.options import PriorConfig, ProcessConfig
from spars_ns.ply import read_mesh_ply
from spars_ns.stages.prior.files import FilesConfig
from spars_ns.surface.command import MeshConfig, make_mesh
from spars_ns.surface.evaluate import SeenSurface, distance_to_quads
from spars_ns.surface.mesh import Mesh
from spars_ns.synthetic import SyntheticScene, make_scene, write_prior_files

BIN = Path(sys.executable).parent


@dataclass
class Args:
    output: Path
    """Working folder (photos, scenes, runs, meshes, results.json)."""
    views: int = 8
    test_every: int = 4
    refine: tuple[str, ...] = ("global", "local")
    resolutions: tuple[int, ...] = (128, 256)
    truncations: tuple[float, ...] = (4.0,)
    """--truncation of every --scene run (voxels)."""
    train_steps: int = 300
    """Steps of the spars3r run meshed with --load-config (0: no run)."""
    render_scale: float = 1.0
    """--render-scale of the --load-config runs (1: the size the run trained at)."""
    nerfstudio_exports: bool = True
    """Also try ns-export tsdf and ns-export poisson on the run."""
    seed: int = 0


def measured_mesh(config: MeshConfig) -> dict:
    """`make_mesh` in this process (a fresh one, see `in_fresh_process`), with its seconds and peak memory."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result = make_mesh(config)
    return {
        "seconds": result.seconds,
        "vertices": result.vertices,
        "faces": result.faces,
        "views": result.views,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0,
    }


def idle_rss_gib() -> float:
    """Peak resident set of a process that imports what `spars-ns mesh` imports and does nothing."""
    import scipy.sparse.csgraph  # noqa: F401
    import skimage.measure  # noqa: F401

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def in_fresh_process(function, *args):
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


class TrueFrame:
    """Maps a processed scene's SfM frame onto the synthetic scene's true frame."""

    def __init__(self, scene: SyntheticScene, scene_dir: Path):
        model = pycolmap.Reconstruction(str(scene_dir / "sparse" / "0"))
        names = [scene.image_name(i) for i in range(scene.num_views)]
        true_centres = np.stack([-c[:, :3].T @ c[:, 3] for c in scene.cam_from_world])
        estimated = {image.name: image.projection_center() for image in model.images.values() if image.has_pose}
        keep = [i for i, name in enumerate(names) if name in estimated]
        sfm_from_true = pycolmap.estimate_sim3d(
            true_centres[keep], np.stack([estimated[names[i]] for i in keep])
        ).matrix()
        self.linear, self.offset = np.linalg.inv(sfm_from_true[:, :3]), sfm_from_true[:, 3]
        self.scale = np.cbrt(np.linalg.det(sfm_from_true[:, :3]))
        meta = json.loads((scene_dir / "transforms.json").read_text())
        self.train = [names.index(Path(path).name) for path in meta["train_filenames"]]
        self.frames = [frame for frame in meta["frames"] if frame["file_path"] in meta["train_filenames"]]

    def points(self, sfm_points: np.ndarray) -> np.ndarray:
        return (sfm_points - self.offset) @ self.linear.T


def depth_map_scores(scene: SyntheticScene, frame: TrueFrame, scene_dir: Path, threshold: float) -> dict:
    """The training views' depth unprojected into the true frame: its mean distance to the true
    surfaces and the share within `threshold`, over all known pixels."""
    distances = []
    for view in frame.frames:
        depth = np.load(scene_dir / view["depth_file_path"])
        rows, cols = np.nonzero(depth > 0)
        intrinsics = np.array([[view["fl_x"], 0, view["cx"]], [0, view["fl_y"], view["cy"]], [0, 0, 1]])
        pixels = np.stack([cols + 0.5, rows + 0.5, np.ones(len(rows))], 1)
        cam_from_world = opengl_c2w_to_opencv(np.asarray(view["transform_matrix"]))
        sfm_points = inverse_transform(unproject(pixels, depth[rows, cols], intrinsics), cam_from_world)
        distances.append(distance_to_quads(frame.points(sfm_points), scene.quads))
    distances = np.concatenate(distances)
    return {"mean_distance": float(distances.mean()), "within_threshold": float((distances < threshold).mean())}


def scored(truth: SeenSurface, frame: TrueFrame, vertices_sfm: np.ndarray, faces: np.ndarray) -> dict:
    scores = truth.score(frame.points(vertices_sfm), faces)
    return {**asdict(scores), "chamfer": scores.chamfer, "f_score": scores.f_score}


def nerfstudio_export(kind: str, config_path: Path, output: Path) -> dict:
    """`ns-export tsdf|poisson` on the run: whether it ran, its last error line, its mesh file."""
    output.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    out = subprocess.run(
        [str(BIN / "ns-export"), kind, "--load-config", str(config_path), "--output-dir", str(output)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    lines = [line.strip() for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line]
    meshes = sorted(output.glob("*.ply")) + sorted(output.glob("*.obj"))
    return {
        "kind": kind,
        "returncode": out.returncode,
        "seconds": time.perf_counter() - start,
        "error": (errors or lines or [""])[-1],
        "mesh": str(meshes[0]) if meshes else None,
    }


def scene_from_nerfstudio(mesh_path: Path, config_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A mesh nerfstudio exported (its world frame) as (vertices, faces) in the scene's frame."""
    mesh = trimesh.load(mesh_path, process=False, force="mesh")
    transforms = json.loads((config_path.parent / "dataparser_transforms.json").read_text())
    transform, scale = np.asarray(transforms["transform"]), transforms["scale"]
    vertices = (np.asarray(mesh.vertices) / scale - transform[:, 3]) @ transform[:, :3]
    return vertices, np.asarray(mesh.faces)


def main(args: Args) -> None:
    from spars_ns.ns.runs import train_run
    from spars_ns.process import process

    args.output.mkdir(parents=True, exist_ok=True)
    scene = make_scene(num_views=args.views, seed=args.seed)
    photos = args.output / "photos"
    if not photos.exists():
        scene.write_images(photos)
    prior_dir = write_prior_files(scene, args.output / "prior_files", seed=args.seed)
    records = {"idle_rss_gib": in_fresh_process(idle_rss_gib), "rows": []}
    print(f"\nidle process with the same imports: {records['idle_rss_gib']:.2f} GiB resident\n")
    print(
        "| source | resolution | truncation (voxels) | accuracy | completeness | Chamfer | F-score@1% | seconds | "
        "peak RSS GiB | peak GPU GiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")

    def report(row: dict) -> None:
        records["rows"].append(row)
        (args.output / "results.json").write_text(json.dumps(records, indent=2))
        if "f_score" in row:
            print(
                f"| {row['source']} | {row.get('resolution', '-')} | {row.get('truncation', '-')} | "
                f"{row['accuracy']:.4f} | "
                f"{row['completeness']:.4f} | {row['chamfer']:.4f} | {row['f_score']:.3f} | "
                f"{row.get('seconds', 0):.1f} | "
                f"{row.get('peak_rss_gib', 0):.2f} | {row.get('peak_gpu_gib', 0):.2f} |"
            )
        else:
            print(f"| {row['source']} | {json.dumps({k: v for k, v in row.items() if k != 'source'})} |")

    scenes = {}
    for refine in args.refine:
        scene_dir = args.output / f"scene_{refine}"
        process(
            ProcessConfig(
                images=photos,
                output=scene_dir,
                test_every=args.test_every,
                prior="files",
                prior_options=PriorConfig(files=FilesConfig(dir=prior_dir)),
                refine=refine,
                max_dense_points=4000,
            )
        )
        frame = TrueFrame(scene, scene_dir)
        truth = SeenSurface.of(scene, frame.train)
        scenes[refine] = (scene_dir, frame, truth)
        report(
            {
                "source": f"depth maps, --refine {refine}",
                "threshold": truth.threshold,
                **depth_map_scores(scene, frame, scene_dir, truth.threshold),
            }
        )
        for resolution in args.resolutions:
            for truncation in args.truncations:
                out = args.output / f"mesh_{refine}_{resolution}_t{truncation:g}"
                measured = in_fresh_process(
                    measured_mesh,
                    MeshConfig(output_dir=out, scene=scene_dir, resolution=resolution, truncation=truncation),
                )
                mesh = Mesh(*read_mesh_ply(out / "mesh.ply"))
                report(
                    {
                        "source": f"--scene, --refine {refine}",
                        "resolution": resolution,
                        "truncation": truncation,
                        **measured,
                        **scored(truth, frame, mesh.vertices, mesh.faces),
                    }
                )

    if args.train_steps <= 0:
        return
    scene_dir, frame, truth = scenes[args.refine[0]]
    runs = args.output / f"runs_{args.train_steps}"
    done = sorted(runs.rglob("config.yml"))  # a run of an earlier call is reused
    if done:
        config_path = done[-1]
    else:
        config_path = Path(in_fresh_process(train_run, "spars3r", scene_dir, runs, args.train_steps)["config"])
    for resolution in args.resolutions:
        out = args.output / f"mesh_run_{resolution}"
        measured = in_fresh_process(
            measured_mesh,
            MeshConfig(output_dir=out, load_config=config_path, resolution=resolution, render_scale=args.render_scale),
        )
        mesh = Mesh(*read_mesh_ply(out / "mesh.ply"))
        report(
            {
                "source": f"--load-config, {args.train_steps} steps, --refine {args.refine[0]}",
                "resolution": resolution,
                "truncation": 4.0,
                **measured,
                **scored(truth, frame, mesh.vertices, mesh.faces),
            }
        )
    if args.nerfstudio_exports:
        for kind in ("tsdf", "poisson"):
            exported = nerfstudio_export(kind, config_path, args.output / f"ns_export_{kind}")
            if exported["returncode"] == 0 and exported["mesh"]:
                vertices, faces = scene_from_nerfstudio(Path(exported["mesh"]), config_path)
                exported.update(scored(truth, frame, vertices, faces))
            report({"source": f"ns-export {kind}", **exported})


if __name__ == "__main__":
    main(tyro.cli(Args))
