"""The input stage: find, validate and normalise the user's photos.

The scene folder gets its own copy of each photo, so nothing downstream can touch the
user's files. A photo is copied byte for byte when COLMAP and nerfstudio would read the
same pixels from it; otherwise (EXIF rotation, palette/CMYK/16-bit modes, formats other
than JPEG and PNG) it is rewritten as a PNG with the orientation applied, because COLMAP
ignores EXIF orientation while a viewer shows the rotated picture. 16-bit and float
greyscale photos are scaled to 8 bits (a plain conversion clips them to white). A name with
whitespace gets underscores in the scene (`scene_name`): COLMAP's pair lists are
space-separated, so "photo 3.jpg" would be read as "photo".
"""

from __future__ import annotations

import errno
import hashlib
import logging
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from spars_ns.errors import InputError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".avif"}
HEIF_SUFFIXES = {".heic", ".heif"}
# The longest name the scene derives from a photo's adds under 40 bytes to it (".<stem>.confidence.npy.partial.npz").
MAX_NAME_BYTES = 200
_COPYABLE_SUFFIXES = {".jpg", ".jpeg", ".png"}
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}  # failures of writing the scene's copy, not of the photo
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


def scene_name(name: str) -> str:
    """The name of a photo inside the scene: whitespace becomes underscores (COLMAP's pair
    lists are space-separated)."""
    return re.sub(r"\s", "_", name)


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name; everything else is named in one
    warning with the reason it is skipped."""
    if not folder.exists():
        raise InputError(f"Image folder {folder} does not exist.")
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder of images.")
    heif = heif_readable()
    images, skipped = [], {}
    for path in sorted(folder.iterdir()):
        suffix = path.suffix.lower()
        if path.is_dir():
            skipped[path.name + "/"] = "a folder: only photos directly inside --images are read"
        elif path.name.startswith("."):
            skipped[path.name] = "a hidden file (its name starts with '.')"
        elif suffix in HEIF_SUFFIXES and not heif:
            skipped[path.name] = "HEIC/HEIF: `pip install pillow-heif` reads it, or convert it to JPEG"
        elif suffix in IMAGE_SUFFIXES or suffix in HEIF_SUFFIXES:
            images.append(path)
        else:
            skipped[path.name] = "not an image"
    if skipped:
        log.warning(
            "Skipping %d of the files in %s: %s",
            len(skipped),
            folder,
            "; ".join(f"{n} ({why})" for n, why in skipped.items()),
        )
    if not images:
        readable = ", ".join(sorted(IMAGE_SUFFIXES | (HEIF_SUFFIXES if heif else set())))
        raise InputError(
            f"No images found in {folder} (looked for {readable} directly inside it; subfolders are not read)."
        )
    if len(images) < 2:
        raise InputError(
            f"Found only one image in {folder} ({images[0].name}); Structure-from-Motion needs at least 2."
        )
    stems: dict[str, Path] = {}
    for path in images:
        if len(scene_name(path.name).encode()) > MAX_NAME_BYTES:
            raise InputError(
                f"{path}: a name of {len(path.name.encode())} bytes; the scene adds suffixes to it, and file systems "
                f"allow 255. Rename it to at most {MAX_NAME_BYTES} bytes."
            )
        stem = Path(scene_name(path.name)).stem
        if stem in stems:
            raise InputError(
                f"{stems[stem]} and {path} share the name '{stem}' in the scene; rename one (per-image outputs "
                "are keyed by name)."
            )
        stems[stem] = path
    return images


def heif_readable() -> bool:
    """Whether Pillow can open HEIC/HEIF photos here (with the optional pillow-heif package)."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def same_photos(records: list[ImageRecord]) -> list[list[str]]:
    """Groups of scene names whose files have the same content (a copy under another name)."""
    by_content: dict[str, list[str]] = {}
    for record in records:
        by_content.setdefault(record.sha1, []).append(record.name)
    return [names for names in by_content.values() if len(names) > 1]


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
            reasons = []  # why the pixels or the format change
            if orientation not in (None, 1):
                reasons.append(f"EXIF orientation {orientation} applied")
            if mode not in _COPYABLE_MODES:
                reasons.append(
                    f"mode {mode} converted to {'8-bit greyscale' if mode.startswith(('I', 'F')) else 'RGB'}"
                )
            if source.suffix.lower() not in _COPYABLE_SUFFIXES:
                reasons.append(f"{source.suffix} converted to PNG")
            if reasons:
                image = ImageOps.exif_transpose(raw)
                if image.mode.startswith(("I", "F")):
                    image = to_8_bit(image, source)
                elif image.mode not in _COPYABLE_MODES:
                    image = image.convert("RGB")
                name = scene_name(source.stem) + ".png"
                image.save(dest_folder / name)
                width, height = image.size
            else:
                name = scene_name(source.name)
                shutil.copyfile(source, dest_folder / name)
                width, height = raw.size
            if scene_name(source.name) != source.name:
                reasons.append("whitespace in the name replaced by underscores")
    except InputError:
        raise
    except (OSError, SyntaxError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError
        if isinstance(err, OSError) and (
            err.errno in _WRITE_ERRNOS or (err.filename and Path(err.filename).parent == dest_folder)
        ):
            raise  # writing the copy failed (a full disk, a read-only folder): the photo is fine
        raise InputError(f"{source}: cannot read this image ({err}). Remove or replace the file.") from err

    focal_prior = None
    if focal_35mm:
        focal_prior = float(focal_35mm) / _FULL_FRAME_DIAGONAL_MM * (width**2 + height**2) ** 0.5
    return ImageRecord(name, str(source), sha1, width, height, focal_prior, "; ".join(reasons) or None)


def to_8_bit(image: Image.Image, source: Path) -> Image.Image:
    """A 16-bit integer (modes I;16*, or I within 0..65535) or float (F, within 0..1) greyscale
    image scaled to 8-bit greyscale."""
    values = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        full_scale = 1.0
    elif image.mode.startswith("I;16") or (values.min() >= 0 and values.max() <= 65535):
        full_scale = 65535.0
    else:
        full_scale = None
    if full_scale is None or not np.isfinite(values).all() or values.min() < 0 or values.max() > full_scale:
        raise InputError(
            f"{source}: a {image.mode} image with values from {values.min():g} to {values.max():g}, outside "
            f"0..{full_scale or 65535:g}; save it as 8- or 16-bit PNG or JPEG."
        )
    return Image.fromarray(np.round(values / full_scale * 255).astype(np.uint8))
