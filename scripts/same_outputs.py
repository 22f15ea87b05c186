"""Whether a change left processing's outputs bit for bit as they were: the same scenes processed by
the code at another revision (a git worktree) and by this checkout, every output file compared.

    python scripts/same_outputs.py --base HEAD~3
    python scripts/same_outputs.py --base main --fox ../shared/data/fox/images

Scenes: a synthetic scene (8 views, every 4th a test view) with no prior, with the stereo prior
refined globally and with it refined locally (grids solved jointly), and 6 fox photos plus a test
view with the stereo prior, aligned and refined globally when --fox is given. What differs between
two runs of the same code is left out: the lock file, images.json (it records where the photos
came from), SfM's database (it stores times) and report.json (its seconds). Prints the files that
differ; exits 1 if any does. A refactor that changes a figure changes a file here first.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import tyro

from spars_ns.synthetic import make_scene

AT_REVISION = Path(__file__).resolve().parent / "at_revision.py"
FOX_VIEWS = ("0001", "0019", "0035", "0052", "0085", "0115")
FOX_TEST_VIEW = "0014"
VARIES_BETWEEN_RUNS = {".lock", "images.json", "database.db", "report.json"}


@dataclass
class Args:
    base: str = "HEAD"
    """The revision to compare this checkout with."""
    fox: Path | None = None
    """The fox scene's images/ folder (../shared/data/fox/images), for a real capture too."""
    work: Path = Path(tempfile.gettempdir()) / "same_outputs"


def process_all(code: Path, out: Path, photos: Path, fox: Path | None) -> dict[str, str]:
    """Every output file of the scenes processed by the code at `code`, by relative path: its SHA-256."""

    def spars_ns(*args: str) -> None:
        command = [sys.executable, str(AT_REVISION), str(code), "-m", "spars_ns.cli", "process", *args]
        subprocess.run(command, check=True, capture_output=True)

    synthetic = ["--images", str(photos), "--test-every", "4"]
    spars_ns(*synthetic, "--output", str(out / "none"))
    spars_ns(*synthetic, "--output", str(out / "stereo_global"), "--prior", "stereo", "--refine", "global")
    spars_ns(*synthetic, "--output", str(out / "stereo_local"), "--prior", "stereo", "--refine", "local")
    if fox is not None:
        spars_ns(
            "--images", str(fox), "--output", str(out / "fox"), "--test-views", f"{FOX_TEST_VIEW}.jpg",
            "--prior", "stereo", "--align", "global", "--refine", "global",
        )  # fmt: skip
    return {
        str(path.relative_to(out)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(out.rglob("*"))
        if path.is_file() and path.name not in VARIES_BETWEEN_RUNS and path.name != "manifest.json"
    }


def main(args: Args) -> int:
    root = Path(__file__).resolve().parent.parent
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    base_code = args.work / "base_code"
    subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", str(base_code), args.base], check=True)
    try:
        photos = args.work / "photos"
        make_scene(num_views=8, seed=0).write_images(photos)
        fox = None
        if args.fox is not None:
            fox = args.work / "fox"
            fox.mkdir()
            for name in (*FOX_VIEWS, FOX_TEST_VIEW):
                shutil.copy(args.fox / f"{name}.jpg", fox)
        before = process_all(base_code, args.work / "base", photos, fox)
        after = process_all(root, args.work / "this", photos, fox)
    finally:
        subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(base_code)], check=True)
    differ = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    print(f"{len(before)} files from {args.base}, {len(after)} from this checkout; {len(differ)} differ")
    for name in differ:
        print(f"  {name}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(Args)))
