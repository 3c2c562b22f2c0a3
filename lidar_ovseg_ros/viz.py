"""Pictures of labelled point clouds (Pillow only): a bird's-eye view and a camera overlay.

Both colour points with the vocabulary's colours (`NO_CLASS_ID` grey) and draw a legend of the
classes present with their point counts, so a PNG says on its own which vocabulary produced it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lidar_ovseg_ros.frames import CameraView
from lidar_ovseg_ros.vocabulary import NO_CLASS_COLOR, Vocabulary

__all__ = [
    "bev_size",
    "draw_legend",
    "heat_colors",
    "legend_entries",
    "render_bev",
    "render_camera_overlay",
    "render_heat_bev",
    "render_legend",
]

LEGEND_WIDTH = 240
_ROW = 20
_SWATCH = 14


def _font(size: int = 14) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _check(xyz: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xyz = np.asarray(xyz)
    labels = np.asarray(labels)
    if xyz.ndim != 2 or xyz.shape[1] < 3:
        raise ValueError(f"points must be [N, >=3], got {xyz.shape}")
    if labels.shape != (len(xyz),):
        raise ValueError(f"labels must be [{len(xyz)}], got {labels.shape}")
    return xyz[:, :3].astype(np.float64), labels.astype(np.uint16)


def legend_entries(
    labels: np.ndarray, vocabulary: Vocabulary
) -> list[tuple[str, tuple[int, int, int], int]]:
    """(name, colour, count) of every class present, in class order, then "no class" if any."""
    labels = np.asarray(labels, dtype=np.uint16)
    counts = np.bincount(labels[labels < len(vocabulary)], minlength=len(vocabulary))
    entries = [(c.name, c.color, int(n)) for c, n in zip(vocabulary.classes, counts) if n > 0]
    unlabeled = int((labels >= len(vocabulary)).sum())
    if unlabeled:
        entries.append(("no class", NO_CLASS_COLOR, unlabeled))
    return entries


def _entry_text(name: str, n: int | None) -> str:
    return name if n is None else f"{name} ({n})"


def draw_legend(
    image: Image.Image,
    entries: list[tuple[str, tuple[int, int, int], int | None]],
    origin: tuple[int, int] = (8, 8),
    title: str | None = None,
    box: bool = True,
) -> None:
    """Draw colour swatches with class names and counts (None: no count) at `origin` (in place)."""
    draw = ImageDraw.Draw(image)
    font = _font()
    x0, y0 = origin
    rows = ([title] if title else []) + [_entry_text(name, n) for name, _, n in entries]
    if not rows:
        return
    text_w = max(int(draw.textlength(r, font=font)) for r in rows)
    if box:
        draw.rectangle(
            [x0 - 4, y0 - 4, x0 + _SWATCH + 8 + text_w + 4, y0 + _ROW * len(rows)],
            fill=(255, 255, 255),
            outline=(0, 0, 0),
        )
    y = y0
    if title:
        draw.text((x0, y), title, fill=(0, 0, 0), font=font)
        y += _ROW
    for name, color, n in entries:
        draw.rectangle(
            [x0, y + 2, x0 + _SWATCH, y + 2 + _SWATCH], fill=tuple(color), outline=(0, 0, 0)
        )
        draw.text((x0 + _SWATCH + 8, y), _entry_text(name, n), fill=(0, 0, 0), font=font)
        y += _ROW


def render_legend(
    vocabulary: Vocabulary, title: str | None = None, counts: dict[int, int] | None = None
) -> np.ndarray:
    """[H, W, 3] uint8 legend of every class ('id name', optional counts) and the no-class colour,
    e.g. for RViz's Image display."""
    entries = [
        (f"{i:>2} {c.name}", c.color, None if counts is None else counts.get(i, 0))
        for i, c in enumerate(vocabulary.classes)
    ]
    entries.append(("   no class", NO_CLASS_COLOR, None))
    rows = len(entries) + (1 if title else 0)
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    texts = ([title] if title else []) + [_entry_text(n, k) for n, _, k in entries]
    width = 24 + _SWATCH + max(int(probe.textlength(t, font=font)) for t in texts)
    image = Image.new("RGB", (width, 16 + _ROW * rows), (255, 255, 255))
    draw_legend(image, entries, (8, 8), title, box=False)
    return np.asarray(image)


def _stamp(canvas: np.ndarray, rows: np.ndarray, cols: np.ndarray, colors: np.ndarray, size: int):
    """Paint size x size squares (later points over earlier ones)."""
    h, w = canvas.shape[:2]
    lo = -(size // 2)
    for dr in range(lo, lo + size):
        for dc in range(lo, lo + size):
            r, c = rows + dr, cols + dc
            ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
            canvas[r[ok], c[ok]] = colors[ok]


def bev_size(extent: float = 50.0, resolution: float = 0.1, legend: bool = True) -> tuple[int, int]:
    """(width, height) in pixels of `render_bev`'s image."""
    side = round(2 * extent / resolution)
    return side + (LEGEND_WIDTH if legend else 0), side


def render_bev(
    xyz: np.ndarray,
    labels: np.ndarray,
    vocabulary: Vocabulary,
    path: str | Path | None = None,
    extent: float = 50.0,
    resolution: float = 0.1,
    point_size: int = 2,
    legend: bool = True,
    title: str | None = None,
) -> Image.Image:
    """Top view of the sensor frame, x forward pointing up, y left pointing left.

    Covers [-extent, extent] metres around the sensor at `resolution` metres per pixel; higher
    points are drawn last. A legend panel of `LEGEND_WIDTH` pixels is appended on the right.
    """
    xyz, labels = _check(xyz, labels)
    image, side, drawn = _bev_canvas(
        xyz, vocabulary.colors_for(labels), extent, resolution, point_size, legend
    )
    if legend:
        heading = title or f"vocabulary: {vocabulary.name}"
        draw_legend(
            image, legend_entries(labels[drawn], vocabulary), (side + 12, 12), heading, box=False
        )
    if path is not None:
        image.save(path)
    return image


def heat_colors(heat: np.ndarray) -> np.ndarray:
    """[N, 3] uint8: blue (lowest) to red (highest) over the values' own range."""
    heat = np.asarray(heat, dtype=np.float64)
    if heat.size == 0:
        return np.zeros((0, 3), np.uint8)
    lo, hi = float(np.nanmin(heat)), float(np.nanmax(heat))
    t = np.clip((heat - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(heat)
    return np.stack([255 * t, 40 + 0 * t, 255 * (1 - t)], axis=1).astype(np.uint8)


def render_heat_bev(
    xyz: np.ndarray,
    heat: np.ndarray,
    path: str | Path | None = None,
    extent: float = 50.0,
    resolution: float = 0.1,
    point_size: int = 2,
    title: str = "similarity",
) -> Image.Image:
    """Top view coloured by a scalar (e.g. a grounding similarity), with a low/high legend."""
    xyz, _ = _check(xyz, np.zeros(len(np.asarray(xyz)), np.uint16))
    heat = np.asarray(heat, dtype=np.float64)
    if heat.shape != (len(xyz),):
        raise ValueError(f"heat must be [{len(xyz)}], got {heat.shape}")
    image, side, _ = _bev_canvas(xyz, heat_colors(heat), extent, resolution, point_size, True)
    if heat.size:
        entries = [
            (f"high {np.nanmax(heat):.3f}", (255, 40, 0), None),
            (f"low {np.nanmin(heat):.3f}", (0, 40, 255), None),
        ]
        draw_legend(image, entries, (side + 12, 12), title, box=False)
    if path is not None:
        image.save(path)
    return image


def _bev_canvas(
    xyz: np.ndarray,
    colors: np.ndarray,
    extent: float,
    resolution: float,
    point_size: int,
    legend: bool,
) -> tuple[Image.Image, int, np.ndarray]:
    """Draw points (x forward up, y left left, higher over lower); returns the image, the side
    of the square view in pixels, and the indices of the points that were drawn."""
    if extent <= 0 or resolution <= 0 or point_size < 1:
        raise ValueError("extent, resolution and point_size must be positive")
    width, side = bev_size(extent, resolution, legend)
    canvas = np.zeros((side, width, 3), dtype=np.uint8)
    canvas[:, :side] = (20, 20, 20)
    canvas[:, side:] = (255, 255, 255)
    finite = np.flatnonzero(np.isfinite(xyz).all(axis=1))
    order = finite[np.argsort(xyz[finite, 2], kind="stable")]
    rows = np.floor((extent - xyz[order, 0]) / resolution).astype(np.int64)
    cols = np.floor((extent - xyz[order, 1]) / resolution).astype(np.int64)
    inside = (rows >= 0) & (rows < side) & (cols >= 0) & (cols < side)
    view = canvas[:, :side]
    drawn = order[inside]
    _stamp(view, rows[inside], cols[inside], np.asarray(colors)[drawn], point_size)
    # Ego position: a small white cross at the sensor origin.
    c = side // 2
    view[c, max(c - 6, 0) : c + 7] = 255
    view[max(c - 6, 0) : c + 7, c] = 255
    return Image.fromarray(canvas), side, drawn


def render_camera_overlay(
    camera: CameraView,
    xyz: np.ndarray,
    labels: np.ndarray,
    vocabulary: Vocabulary,
    path: str | Path | None = None,
    image: np.ndarray | None = None,
    point_size: int = 3,
    legend: bool = True,
) -> Image.Image:
    """The camera image with the points it sees, coloured by label, near points over far ones.

    The output has the camera's size; the legend is drawn in the top-left corner.
    """
    if point_size < 1:
        raise ValueError("point_size must be positive")
    xyz, labels = _check(xyz, labels)
    rgb = camera.load_image() if image is None else np.asarray(image, dtype=np.uint8)
    if rgb.shape[:2] != (camera.height, camera.width):
        raise ValueError(
            f"image is {rgb.shape[1]}x{rgb.shape[0]} but camera {camera.name} is "
            f"{camera.width}x{camera.height}"
        )
    canvas = np.array(rgb[..., :3], dtype=np.uint8, copy=True)
    finite = np.isfinite(xyz).all(axis=1)
    uv, inside = camera.project(np.where(finite[:, None], xyz, 0.0))
    inside &= finite
    depth = np.linalg.norm(xyz[inside], axis=1)
    order = np.argsort(-depth, kind="stable")  # far first, near last (on top)
    uv_in = uv[inside][order]
    labs = labels[inside][order]
    rows = np.floor(uv_in[:, 1]).astype(np.int64)
    cols = np.floor(uv_in[:, 0]).astype(np.int64)
    _stamp(canvas, rows, cols, vocabulary.colors_for(labs), point_size)
    out = Image.fromarray(canvas)
    if legend:
        draw_legend(
            out, legend_entries(labs, vocabulary), (10, 10), f"{camera.name} - {vocabulary.name}"
        )
    if path is not None:
        out.save(path)
    return out
