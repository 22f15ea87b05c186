"""Ingest: copies of the photos in `images/` and their records in `images.json`; the train/test split."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from spars_ns.errors import InputError
from spars_ns.scene import SceneFolder, atomic_dir, atomic_write_text
from spars_ns.stages.base import Stage, progress
from spars_ns.stages.ingest.images import ImageRecord, file_sha1, ingest_image, scene_name

if TYPE_CHECKING:
    from spars_ns.options import ProcessConfig

log = logging.getLogger(__name__)


def split_names(names: list[str], test_every: int, test_views: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """(train, test) by sorted name: the named test views, or else indices 0, N, 2N, ..."""
    names = sorted(names)
    if test_views:  # by the scene's stem: the scene's copy may be renamed (scene_name) or rewritten as PNG
        by_stem = {Path(scene_name(n)).stem: n for n in names}
        missing = [v for v in test_views if Path(scene_name(v)).stem not in by_stem]
        if missing:
            raise InputError(f"--test-views names photos that are not in the image folder: {', '.join(missing)}")
        test = [by_stem[Path(scene_name(v)).stem] for v in test_views]
    else:
        test = [n for i, n in enumerate(names) if test_every and i % test_every == 0]
    train = [n for n in names if n not in test]
    if len(train) < 2:
        chosen = "--test-views" if test_views else f"--test-every {test_every}"
        raise InputError(f"{chosen} leaves {len(train)} training image(s) of {len(names)}; SfM needs at least 2.")
    return train, test


def load_records(scene: SceneFolder) -> list[ImageRecord]:
    return [ImageRecord(**r) for r in json.loads(scene.images_json.read_text())]


class IngestStage(Stage):
    """The scene's copies of `sources` (the photos of the image folder, from `list_images`)."""

    name = "ingest"
    libraries = ("pillow",)

    def __init__(self, scene: SceneFolder, config: ProcessConfig, sources: list[Path]):
        super().__init__(scene, config)
        self.sources = sources
        self.hashes = [file_sha1(p) for p in sources]

    def outputs(self) -> list[Path]:
        return [self.scene.images_dir, self.scene.images_json]

    def settings(self) -> dict:
        return {
            "files": [(p.name, h) for p, h in zip(self.sources, self.hashes)]
        }  # not the folder: moving it is no change

    def run(self) -> dict:
        with atomic_dir(self.scene.images_dir) as tmp, progress() as bar:
            task = bar.add_task("Reading images", total=len(self.sources))
            records = []
            for source, sha1 in zip(self.sources, self.hashes):
                records.append(ingest_image(source, tmp, sha1))
                bar.advance(task)
        atomic_write_text(self.scene.images_json, json.dumps([r.to_json() for r in records], indent=2))
        rewritten = [r for r in records if r.rewritten]
        for r in rewritten:
            log.info("%s: %s", r.name, r.rewritten)
        return {
            "images": len(records),
            "rewritten": len(rewritten),
            "with_focal_prior": sum(r.focal_prior is not None for r in records),
        }
