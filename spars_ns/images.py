"""The input stage: find, validate and normalise the user's photos.

The scene folder gets its own copy of each photo, so nothing downstream can touch the
user's files. A photo is copied byte for byte when COLMAP and nerfstudio would read the
same pixels from it; otherwise (EXIF rotation, palette/CMYK/16-bit modes, formats other
than JPEG and PNG) it is rewritten as a PNG with the orientation applied, because COLMAP
ignores EXIF orientation while a viewer shows the rotated picture.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from spars_ns.errors import InputError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"}
_COPYABLE_SUFFIXES = {".jpg", ".jpeg", ".png"}
_COPYABLE_MODES = {"RGB", "L"}
_EXIF_ORIENTATION = 0x0112
_EXIF_IFD = 0x8769
_EXIF_FOCAL_35MM = 0xA405
_FULL_FRAME_DIAGONAL_MM = 43.2666  # diagonal of a 36x24 mm frame


@dataclass(frozen=True)
class ImageRecord:
    name: str  # file name inside the scene's images/ folder
    source: str  # the user's file
    sha1: str  # of the user's file
    width: int  # after orientation
    height: int
    focal_prior: float | None  # pixels, from EXIF 35 mm equivalent focal length
    rewritten: str | None  # why the scene copy is not byte-identical, if it is not

    def to_json(self) -> dict:
        return asdict(self)


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name; other files are skipped with a warning."""
    if not folder.exists():
        raise InputError(f"Image folder {folder} does not exist.")
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder of images.")
    images, skipped = [], []
    for path in sorted(folder.iterdir()):
        if path.is_dir() or path.name.startswith("."):
            continue
        (images if path.suffix.lower() in IMAGE_SUFFIXES else skipped).append(path)
    if skipped:
        log.warning("Skipping %d files that are not images: %s", len(skipped), ", ".join(p.name for p in skipped))
    if not images:
        raise InputError(f"No images found in {folder} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}).")
    if len(images) < 2:
        raise InputError(f"Found only one image in {folder} ({images[0].name}); Structure-from-Motion needs at least 2.")
    stems: dict[str, Path] = {}
    for path in images:
        if path.stem in stems:
            raise InputError(f"{stems[path.stem]} and {path} share the name '{path.stem}'; rename one (per-image outputs are keyed by name).")
        stems[path.stem] = path
    return images


def file_sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ingest_image(source: Path, dest_folder: Path, sha1: str) -> ImageRecord:
    """Validate `source` and put its scene copy into `dest_folder`."""
    try:
        with Image.open(source) as raw:
            raw.load()
            exif = raw.getexif()
            orientation = exif.get(_EXIF_ORIENTATION, 1)
            focal_35mm = exif.get_ifd(_EXIF_IFD).get(_EXIF_FOCAL_35MM)
            mode = raw.mode
            reasons = []
            if orientation not in (None, 1):
                reasons.append(f"EXIF orientation {orientation} applied")
            if mode not in _COPYABLE_MODES:
                reasons.append(f"mode {mode} converted to RGB")
            if source.suffix.lower() not in _COPYABLE_SUFFIXES:
                reasons.append(f"{source.suffix} converted to PNG")
            if reasons:
                image = ImageOps.exif_transpose(raw)
                if image.mode not in _COPYABLE_MODES:
                    image = image.convert("RGB")
                name = source.stem + ".png"
                image.save(dest_folder / name)
                width, height = image.size
            else:
                name = source.name
                shutil.copyfile(source, dest_folder / name)
                width, height = raw.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InputError(f"{source}: cannot read this image ({err}). Remove or replace the file.") from err

    focal_prior = None
    if focal_35mm:
        focal_prior = float(focal_35mm) / _FULL_FRAME_DIAGONAL_MM * (width**2 + height**2) ** 0.5
    return ImageRecord(name, str(source), sha1, width, height, focal_prior, "; ".join(reasons) or None)
