"""The README's viewer picture: a trained run as `ns-viewer` shows it to a browser on first opening.

    python scripts/viewer_picture.py --load-config outputs/.../config.yml --output docs/viewer.jpg

Serves the run with nerfstudio's viewer in this process, opens it in headless Chromium (the
Debian package `chromium`; playwright comes with `.[dev]`) and saves the page once the render
stops changing: the viewer streams renders in coarse to fine.
"""

from __future__ import annotations

import spars_ns  # noqa: F401  # isort: skip  # first: it pins OpenBLAS's kernels before numpy and pycolmap load

import io
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro
from PIL import Image

from spars_ns.ns.viewer import HEADLESS_CHROMIUM, serve_run


@dataclass
class Args:
    load_config: Path
    """config.yml of a trained run."""
    output: Path = Path("docs/viewer.jpg")
    width: int = 1280
    height: int = 800
    settle_seconds: float = 240.0
    """Longest wait for the render to stop changing (the CPU rasteriser renders slowly)."""


def main(args: Args) -> None:
    from playwright.sync_api import sync_playwright

    if shutil.which("chromium") is None:
        sys.exit("needs Chromium (Debian package chromium)")
    with serve_run(args.load_config) as (_, _, url), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=HEADLESS_CHROMIUM)
        try:
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            page.goto(url)
            page.wait_for_selector("text=Connected", timeout=60_000)
            previous, deadline = None, time.monotonic() + args.settle_seconds
            while time.monotonic() < deadline:
                time.sleep(10)
                shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB"))
                if previous is not None and np.abs(shot.astype(int) - previous).mean() < 0.5:
                    break
                previous = shot
        finally:
            browser.close()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(shot).save(args.output, quality=85)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main(tyro.cli(Args))
