"""Pictures that let a user see what a stage did."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def residual_picture(
    image: np.ndarray, xy: np.ndarray, before: np.ndarray, after: np.ndarray, threshold: float
) -> Image.Image:
    """The image twice, dimmed, with each correspondence as a dot coloured by its residual:
    green at 0, red at or beyond `threshold`; left after the global fit, right after regions."""
    base = Image.fromarray((np.asarray(image, np.float32) * 0.5).astype(np.uint8)).convert("RGB")
    width = base.width
    canvas = Image.new("RGB", (2 * width, base.height))
    for panel, residuals in enumerate((before, after)):
        canvas.paste(base, (panel * width, 0))
        draw = ImageDraw.Draw(canvas)
        badness = np.clip(residuals / threshold, 0, 1)
        for (x, y), t in zip(xy, badness):
            colour = (int(255 * t), int(255 * (1 - t)), 0)
            cx = x + panel * width
            draw.ellipse((cx - 1.5, y - 1.5, cx + 1.5, y + 1.5), fill=colour)
    return canvas
