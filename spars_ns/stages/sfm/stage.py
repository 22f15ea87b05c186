"""SfM: the training model `sparse/0`, the model with the test views `sparse_with_test/0`, its features and
verified matches `sfm/database.db`, and `sfm/report.json`; other stages read them through the functions here."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import pycolmap

from spars_ns import blas_kernels
from spars_ns.scene import SceneFolder, atomic_dir, atomic_write_text, require_free_space
from spars_ns.stages.base import Stage, progress
from spars_ns.stages.ingest.images import ImageRecord
from spars_ns.stages.sfm.mapping import MatchGraph, run_sfm

if TYPE_CHECKING:
    from spars_ns.options import ProcessConfig


def registered_train(scene: SceneFolder) -> tuple[pycolmap.Reconstruction, list[pycolmap.Image]]:
    """The training model and its registered images, sorted by name."""
    model = pycolmap.Reconstruction(scene.sparse_dir)
    return model, sorted((im for im in model.images.values() if im.has_pose), key=lambda im: im.name)


def database_path(scene: SceneFolder) -> Path:
    return scene.sfm_dir / "database.db"


def match_graph(scene: SceneFolder) -> MatchGraph:
    """SfM's verified matches between the scene's photos."""
    return MatchGraph(database_path(scene))


class SfMStage(Stage):
    name = "sfm"
    libraries = ("pycolmap",)

    def __init__(
        self, scene: SceneFolder, config: ProcessConfig, records: list[ImageRecord], train: list[str], test: list[str]
    ):
        super().__init__(scene, config)
        self.records, self.train, self.test = records, train, test

    @property
    def report_path(self) -> Path:
        return self.scene.sfm_dir / "report.json"

    def outputs(self) -> list[Path]:
        return [self.scene.sparse_dir, self.scene.sparse_with_test_dir, self.report_path, database_path(self.scene)]

    def database_bound(self) -> int:
        """Bytes the database can reach: per image its features (keypoints and descriptors, SIFT's
        128 bytes or a learned float descriptor) and their matches and two-view geometries."""
        options = self.config.sfm_options
        if options.features == "sift":
            features, per_feature = options.max_num_features, 256
        else:
            features, per_feature = options.learned.max_keypoints, 1024 + 128
        return len(self.records) * features * per_feature

    def settings(self) -> dict:
        options = asdict(self.config.sfm_options)
        if options["features"] == "sift":
            del options["learned"]  # unused: changing them changes nothing
        return {**options, "train": self.train, "test": self.test}

    def run(self) -> dict:
        scene, train, test = self.scene, self.train, self.test
        require_free_space(scene.root, self.database_bound(), "SfM")
        with progress() as bar:
            task = bar.add_task(f"SfM on {len(train)} training views", total=None)
            with atomic_dir(scene.sfm_dir) as work:
                result = run_sfm(
                    scene.images_dir,
                    self.records,
                    train,
                    test,
                    work,
                    self.config.sfm_options,
                    on_attempt=lambda i: bar.update(
                        task, description=f"SfM on {len(train)} training views, initial pair {i + 1}"
                    ),
                )
                registered_test = sorted(n for n in test if n not in result.unregistered)
                report = {
                    "registered_train": sorted(result.train.image(i).name for i in result.train.reg_image_ids()),
                    "registered_test": registered_test,
                    "unregistered": result.unregistered,
                    "init_pairs_tried": result.init_pairs_tried,
                    "points3D": result.train.num_points3D(),
                    "mean_reprojection_error_px": result.train.compute_mean_reprojection_error(),
                    "cameras": {int(c.camera_id): c.summary() for c in result.train.cameras.values()},
                    "model_check": result.check.report(),
                    "doubtful_images": result.doubtful_images,
                    "low_parallax": result.low_parallax,
                    "robust_adjustment": result.robust_adjustment,
                    "second_radial_term": result.second_radial_term,
                    "global_mapping": result.global_mapping,
                    "mappings_disagreement_deg": result.mappings_disagreement_deg,
                    "focal_from_pairs": result.focal_from_pairs,
                    "focal_length_undetermined": result.focal_length_undetermined,
                    "distinctive_refit": result.distinctive_refit,
                    "distinctive_gain": result.distinctive_gain,
                    "look_alike_share": result.look_alike_share,
                    "seconds": result.seconds,
                    "blas_kernels": blas_kernels(),  # global mapping's cameras depend on them
                }
                atomic_write_text(work / "report.json", json.dumps(report, indent=2))
            for model, target in ((result.train, scene.sparse_dir), (result.with_test, scene.sparse_with_test_dir)):
                with atomic_dir(target) as tmp:
                    model.write(tmp)
        return {
            "train_registered": len(report["registered_train"]),
            "train_total": len(train),
            "test_registered": len(registered_test),
            "test_total": len(test),
            "points3D": report["points3D"],
            "init_pairs_tried": result.init_pairs_tried,
            "doubtful_images": result.doubtful_images,
            "low_parallax": result.low_parallax,
            "global_mapping": result.global_mapping,
            "focal_length_undetermined": result.focal_length_undetermined,
        }
