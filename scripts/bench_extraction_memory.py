"""Peak memory and time of SIFT extraction per thread, on photos scaled to a phone's size.

    python scripts/bench_extraction_memory.py --scene ../shared/data/strecha/fountain-P11 --side 4032 --threads 1 2

Takes the scene's first `--photos` images, scales each to `--side` pixels on its longer side
(phone photos: 4032), and extracts SIFT as the SfM stage does (`mapping.extract_sift`, with and
without the wide-baseline options) on each thread count, each run in a fresh process so that its peak
resident memory is its own. Prints a Markdown table: the peak above the process's start, per thread,
and per pixel of the photo as extracted (COLMAP scales photos down to `SIFT_MAX_SIDE`: `sift_pixels`), the figure
`SIFT_BYTES_PER_PIXEL` is taken from.
"""

from __future__ import annotations

import spars_ns  # noqa: F401  # isort: skip  # first: it pins OpenBLAS's kernels before numpy and pycolmap load

import multiprocessing
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import tyro
from PIL import Image

from spars_ns.stages.ingest.images import file_sha1, ingest_image
from spars_ns.stages.sfm import mapping
from spars_ns.stages.sfm.mapping import SfMConfig, sift_pixels


@dataclass
class Args:
    scene: Path
    side: int = 4032
    """Longer side the photos are scaled to before extraction (0: as they are)."""
    photos: int = 2
    threads: list[int] = field(default_factory=lambda: [1, 2])


def extract(folder: Path, threads: int, wide: bool) -> tuple[float, float]:
    """Peak resident memory above the start (bytes) and seconds of one extraction, in this process."""
    work = Path(tempfile.mkdtemp())
    names = sorted(p.name for p in folder.iterdir())
    records = [ingest_image(folder / n, work, file_sha1(folder / n)) for n in names]
    database = work / "database.db"
    mapping.import_images(database, work, records, SfMConfig())
    start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # The wide-baseline options (affine shape, domain-size pooling) are on up to WIDE_BASELINE_UP_TO photos.
    mapping.WIDE_BASELINE_UP_TO = len(records) if wide else 0
    clock = time.perf_counter()
    mapping.extract_sift(database, work, records, SfMConfig(), threads=threads)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - start_rss, time.perf_counter() - clock


def main(args: Args) -> None:
    folder = Path(tempfile.mkdtemp())
    for source in sorted((args.scene / "images").iterdir())[: args.photos]:
        image = Image.open(source)
        if args.side:
            scale = args.side / max(image.size)
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
        image.save(folder / f"{source.stem}.jpg", quality=92)
        size = image.size
    extracted = sift_pixels(*size)
    print(f"{args.photos} photos of {size[0]} x {size[1]} px, extracted at {extracted / 1e6:.2f} MP\n")
    print("| SIFT | threads | peak above start (GB) | per thread (GB) | bytes per extracted pixel | seconds |")
    print("|---|---|---|---|---|---|")
    spawn = multiprocessing.get_context("spawn")
    for wide in (True, False):
        for threads in args.threads:
            with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                peak, seconds = pool.submit(extract, folder, threads, wide).result()
            used = min(threads, args.photos)
            print(
                f"| {'wide-baseline' if wide else 'plain'} | {threads} | {peak / 1e9:.2f} | {peak / used / 1e9:.2f} "
                f"| {peak / used / extracted:.0f} | {seconds:.1f} |"
            )


if __name__ == "__main__":
    main(tyro.cli(Args))
