"""One camera's input checks: image headers, CameraInfo intrinsics, K for another image size, and
the blank view that contributes nothing (issue 9 items 9-11)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch

from lidar_ovseg_ros.models.pop3d import Pop3DConfig, Pop3DNetwork
from lidar_ovseg_ros.occupancy.camera_inputs import (
    BLANK_CALIBRATION,
    BLANK_IMAGE,
    CameraInputError,
    check_intrinsics,
    intrinsics_for_image,
    probe_compressed,
    probe_raw,
)
from lidar_ovseg_ros.occupancy.pipeline import preprocess

pytestmark = pytest.mark.usefixtures("one_torch_thread")
K = np.array([[1266.4, 0.0, 816.3], [0.0, 1266.4, 491.5], [0.0, 0.0, 1.0]])


def test_random_bytes_are_refused_by_the_header_probe():
    rng = np.random.default_rng(0)
    for i in range(1000):
        data = rng.integers(0, 256, int(rng.integers(0, 4000)), dtype=np.uint8).tobytes()
        if i % 2:  # half of them behind a valid JPEG start-of-image marker
            data = b"\xff\xd8" + data
        with pytest.raises(CameraInputError, match="not a JPEG or PNG"):
            probe_compressed(data)


def test_probe_reads_the_size_of_real_images(nuscenes_frame):
    from PIL import Image

    cam = nuscenes_frame.cameras["CAM_FRONT"]
    assert probe_compressed(cam.image_path.read_bytes()) == (cam.width, cam.height)
    buf = io.BytesIO()
    Image.new("RGB", (31, 17)).save(buf, format="PNG")
    assert probe_compressed(buf.getvalue()) == (31, 17)
    # A 45-byte PNG whose header claims 10000 x 6000 pixels: refused before any decoding.
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", 10000, 6000, 8, 2, 0, 0, 0)
    huge = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr
    huge += struct.pack(">I", zlib.crc32(ihdr)) + bytes(4) + b"IDAT"
    huge += struct.pack(">I", zlib.crc32(b"IDAT"))
    with pytest.raises(CameraInputError, match="exceeds"):
        probe_compressed(huge)


def test_raw_image_fields_are_checked():
    assert probe_raw(2, 3, "bgr8", 12, 24) == (3, 2)
    with pytest.raises(CameraInputError, match="unsupported image encoding 'yuv422'"):
        probe_raw(1, 1, "yuv422", 2, 2)
    with pytest.raises(CameraInputError, match="does not fit"):
        probe_raw(2, 2, "rgb8", 6, 6)
    with pytest.raises(CameraInputError, match="empty image"):
        probe_raw(0, 4, "rgb8", 12, 0)


@pytest.mark.parametrize(
    ("k", "size", "reason"),
    [
        ([0.0] * 9, (1600, 900), "focal lengths"),
        ([float("nan")] * 9, (1600, 900), "not finite"),
        (K.reshape(-1).tolist(), (0, 0), "size is 0x0"),
        ([1.0] * 4, (1600, 900), "4 numbers"),
        ([1266.4, 0, 816.3, 0, 1266.4, 491.5, 0, 0, 0], (1600, 900), "last row"),
    ],
)
def test_bad_intrinsics_are_refused(k, size, reason):
    with pytest.raises(CameraInputError, match=reason):
        check_intrinsics(k, *size)


def test_intrinsics_are_scaled_to_the_image_when_the_aspect_ratio_agrees():
    np.testing.assert_array_equal(check_intrinsics(K.reshape(-1), 1600, 900), K)
    assert intrinsics_for_image(K, 1600, 900, 1600, 900) is K
    half = intrinsics_for_image(K, 1600, 900, 800, 450)
    np.testing.assert_allclose(half, np.diag([0.5, 0.5, 1.0]) @ K)
    # KITTI-like odd sizes: one pixel of rounding is still the same aspect ratio
    odd = intrinsics_for_image(K, 1242, 375, 621, 188)
    np.testing.assert_allclose(odd[0, 0], K[0, 0] * 0.5)
    with pytest.raises(CameraInputError, match="another aspect ratio"):
        intrinsics_for_image(K, 1600, 900, 900, 900)


def test_a_blank_view_contributes_nothing(nuscenes_frame):
    """Whatever the blank camera's image holds, the network's output is the same: no anchor
    projects into it."""
    cfg = Pop3DConfig.tiny()
    torch.manual_seed(0)
    net = Pop3DNetwork(cfg).eval()
    cams = dict(nuscenes_frame.cameras)
    images = {n: c.load_image() for n, c in cams.items()}
    calibs = dict(cams)
    calibs["CAM_BACK"] = BLANK_CALIBRATION
    outs = []
    for blank in (BLANK_IMAGE, images["CAM_BACK"]):
        imgs, l2i, hw = preprocess({**images, "CAM_BACK": blank}, calibs, cfg)
        with torch.no_grad():
            planes = net.encode(net.neck(net.backbone(imgs), 1), l2i, hw)
        outs.append(torch.cat([p.flatten() for p in planes]))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    # ... while a real view does contribute (the test above is not vacuous)
    imgs, l2i, hw = preprocess(images, dict(cams), cfg)
    with torch.no_grad():
        planes = net.encode(net.neck(net.backbone(imgs), 1), l2i, hw)
    assert not torch.equal(torch.cat([p.flatten() for p in planes]), outs[0])
