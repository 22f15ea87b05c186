"""Points triangulated again from a database's verified matches at a model's poses and cameras."""

from __future__ import annotations

import shutil
from pathlib import Path

import pycolmap


def triangulate_at(
    model: pycolmap.Reconstruction,
    database: Path,
    image_dir: Path,
    work: Path,
    options: pycolmap.IncrementalPipelineOptions | None = None,
) -> pycolmap.Reconstruction:
    """`model`'s poses and cameras with its points replaced by those the verified matches of `database`
    give there. The triangulator checks the database's cameras against the model's (true intrinsics, a
    second radial term), so it reads a copy in `work` that holds the model's; `database` is left as it was."""
    copy = work / "database.db"
    shutil.copyfile(database, copy)
    db = pycolmap.Database.open(copy)
    try:
        for camera in model.cameras.values():
            db.update_camera(camera)
    finally:
        db.close()
    output = work / "triangulated"
    output.mkdir(exist_ok=True)
    return pycolmap.triangulate_points(
        model, copy, image_dir, output, True, options or pycolmap.IncrementalPipelineOptions()
    )
