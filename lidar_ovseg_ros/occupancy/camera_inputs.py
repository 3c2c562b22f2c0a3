"""Checks on one camera's input before it reaches the network: image headers, intrinsics, and
the blank view that stands in for a camera that cannot be used.

ROS-free: the node passes message fields (bytes, sizes, the 9 numbers of K).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from lidar_ovseg_ros.occupancy.pipeline import CameraCalibration

# Compressed formats accepted (those of compressed_image_transport). Restricting PIL to them
# also stops it guessing a header-less format (TGA) in random bytes.
COMPRESSED_FORMATS = ("JPEG", "PNG")
MAX_PIXELS = 50_000_000  # refuse larger images before decoding (decompression bombs)
RAW_CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}

# A view that contributes nothing: every 3D anchor projects one metre behind this camera, so the
# network's visibility mask drops the camera entirely (its features are never sampled).
BLANK_IMAGE = np.zeros((8, 8, 3), np.uint8)
BLANK_CALIBRATION = CameraCalibration(
    K=np.eye(3),
    lidar2cam=np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, -1], [0, 0, 0, 1]], np.float64),
)


class CameraInputError(ValueError):
    """An image or calibration that cannot be used; the message says why."""


def probe_compressed(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG/PNG header without decoding the pixels (tens of µs)."""
    from PIL import Image as PILImage

    try:
        with PILImage.open(io.BytesIO(data), formats=COMPRESSED_FORMATS) as img:
            width, height = img.size
    except Exception as exc:  # PIL raises several types for bad headers
        raise CameraInputError(f"not a JPEG or PNG image ({type(exc).__name__})") from exc
    _check_size(width, height)
    return width, height


def probe_raw(height: int, width: int, encoding: str, step: int, nbytes: int) -> tuple[int, int]:
    """(width, height) of a raw image whose fields are consistent, else CameraInputError."""
    channels = RAW_CHANNELS.get(encoding.lower())
    if channels is None:
        raise CameraInputError(f"unsupported image encoding '{encoding}'")
    _check_size(width, height)
    if step < width * channels or nbytes < step * height:
        raise CameraInputError(
            f"image data of {nbytes} bytes does not fit {height}x{width} {encoding.lower()}"
        )
    return width, height


def _check_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise CameraInputError(f"empty image {width}x{height}")
    if width * height > MAX_PIXELS:
        raise CameraInputError(f"image of {width}x{height} pixels exceeds {MAX_PIXELS}")


def check_intrinsics(k: Sequence[float], width: int, height: int) -> np.ndarray:
    """The 3x3 K of a CameraInfo, if it describes a usable pinhole camera of width x height."""
    if width <= 0 or height <= 0:
        raise CameraInputError(f"CameraInfo size is {width}x{height}")
    K = np.asarray(k, np.float64)
    if K.size != 9:
        raise CameraInputError(f"K has {K.size} numbers, not 9")
    K = K.reshape(3, 3)
    if not np.isfinite(K).all():
        raise CameraInputError("K is not finite")
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        raise CameraInputError(f"K has focal lengths fx={K[0, 0]:g}, fy={K[1, 1]:g} (need > 0)")
    if not np.allclose(K[2], [0.0, 0.0, 1.0], atol=1e-6):
        raise CameraInputError(f"K's last row is {K[2].tolist()}, not [0, 0, 1]")
    return K


def intrinsics_for_image(
    K: np.ndarray, info_width: int, info_height: int, width: int, height: int
) -> np.ndarray:
    """K for an image of width x height when the CameraInfo was for info_width x info_height:
    scaled when the aspect ratio agrees (within one pixel), else CameraInputError."""
    if (width, height) == (info_width, info_height):
        return K
    if abs(height - info_height * width / info_width) > 1.0:
        raise CameraInputError(
            f"image is {width}x{height} but its CameraInfo is for {info_width}x{info_height} "
            "(another aspect ratio)"
        )
    scale = np.diag([width / info_width, height / info_height, 1.0])
    return scale @ K
