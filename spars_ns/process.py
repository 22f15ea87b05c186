"""Orders the processing stages (`spars_ns.stages`), each skipped when its fingerprint is current."""

from __future__ import annotations

import logging

import pycolmap

from spars_ns.errors import InputError
from spars_ns.options import ProcessConfig, ProcessOptions, check_options
from spars_ns.scene import SceneFolder
from spars_ns.stages.align.stage import AlignStage
from spars_ns.stages.cameras.stage import CamerasStage
from spars_ns.stages.export.stage import ExportStage
from spars_ns.stages.ingest.images import list_images, same_photos
from spars_ns.stages.ingest.stage import IngestStage, load_records, split_names
from spars_ns.stages.prior.stage import PriorStage
from spars_ns.stages.refine.stage import RefineStage
from spars_ns.stages.sfm.stage import SfMStage

__all__ = ["ProcessConfig", "ProcessOptions", "process", "split_names"]

log = logging.getLogger(__name__)


def process(config: ProcessConfig) -> SceneFolder:
    """Run every stage whose inputs changed; a stage switched off leaves no outputs and no
    manifest entry. Returns the processed scene."""
    config = check_options(config)
    images = config.images.resolve()
    output = config.output.resolve()
    if output == images or images in output.parents:
        raise InputError(f"--output {output} must not be the image folder or inside it.")
    if (
        output in images.parents
    ):  # e.g. nerfstudio's layout, proj/images with --output proj: ingest would replace proj/images
        raise InputError(
            f"--images {images} is inside --output {output}; processing rewrites that folder and must never touch your "
            "photos. Choose an output folder that does not hold them, e.g. --output "
            f"{output.parent / (output.name + '-spars')}."
        )
    sources = list_images(images)
    linked = [p for p in sources if p.resolve().is_relative_to(output)]
    if linked:  # the scene replaces its folders whole: a photo linked from one would be deleted with it
        raise InputError(
            f"{linked[0]} is a link to {linked[0].resolve()}, inside --output {output}; processing rewrites "
            "that folder "
            f"and must never touch your photos. Link to photos outside it, or choose another --output."
        )
    split_names([p.name for p in sources], config.test_every, config.test_views)  # refused before any work
    # COLMAP's per-step INFO lines drown the progress display, and its ERROR lines are no news: a mapper start
    # that finds no model logs one, which the SfM stage handles and reports in its own words.
    pycolmap.logging.minloglevel = 3
    scene = SceneFolder(output)
    with scene.lock():  # claims the folder first: one that holds anything but a spars-ns scene is refused
        scene.remove_leftovers()
        ingest_fp = IngestStage(scene, config, sources).apply([])
        records = load_records(scene)
        train, test = split_names([r.name for r in records], config.test_every, config.test_views)
        for names in same_photos(records):
            split = (
                " (one is a test view: the test scores a training view)"
                if set(names) & set(test) and set(names) - set(test)
                else ""
            )
            log.warning("The same photo under %d names: %s%s", len(names), ", ".join(names), split)
        sfm_fp = SfMStage(scene, config, records, train, test).apply([ingest_fp])
        prior_fp = PriorStage(scene, config, train).apply([sfm_fp])
        cameras_fp = CamerasStage(scene, config, train).apply([prior_fp])
        align_fp = AlignStage(scene, config).apply([prior_fp])
        refine_fp = RefineStage(scene, config, aligned=align_fp is not None).apply([prior_fp, align_fp])
        ExportStage(
            scene,
            config,
            train,
            test,
            aligned=align_fp is not None,
            refined=refine_fp is not None,
            cameras=cameras_fp is not None,
        ).apply([sfm_fp, cameras_fp, align_fp, refine_fp])
    return scene
