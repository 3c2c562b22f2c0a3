"""A legend image (class colour swatches and names) that RViz's Image display can show."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lidar_ovseg_ros.vocabulary import NO_CLASS_COLOR, Vocabulary

ROW_HEIGHT = 18
SWATCH = 12
PADDING = 6


def render_legend(
    vocabulary: Vocabulary,
    title: str | None = None,
    counts: dict[int, int] | None = None,
    width: int = 260,
) -> np.ndarray:
    """[H, W, 3] uint8 RGB: one row per class (+ the no-class row), optional point counts."""
    font = ImageFont.load_default()
    rows: list[tuple[tuple[int, int, int], str]] = []
    for i, c in enumerate(vocabulary.classes):
        text = f"{i:>2} {c.name}"
        if counts is not None:
            text += f"  ({counts.get(i, 0)})"
        rows.append((c.color, text))
    rows.append((NO_CLASS_COLOR, "   no class"))
    header = 1 if title else 0
    height = PADDING * 2 + ROW_HEIGHT * (len(rows) + header)
    img = Image.new("RGB", (width, height), (24, 24, 24))
    draw = ImageDraw.Draw(img)
    y = PADDING
    if title:
        draw.text((PADDING, y + 2), title[:40], fill=(235, 235, 235), font=font)
        y += ROW_HEIGHT
    for color, text in rows:
        draw.rectangle(
            [PADDING, y + 3, PADDING + SWATCH, y + 3 + SWATCH], fill=color, outline=(0, 0, 0)
        )
        draw.text((PADDING + SWATCH + 6, y + 3), text, fill=(235, 235, 235), font=font)
        y += ROW_HEIGHT
    return np.asarray(img)
