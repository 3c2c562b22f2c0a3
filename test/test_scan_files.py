"""Scan files (.bin, .npy, .pcd ascii/binary) read back as the same points."""

import re

import numpy as np
import pytest

from lidar_ovseg_ros.scan_files import ScanFileError, read_scan


def _write_pcd(path, points, data="binary"):
    """x y z intensity as float32 and ring as uint16, in PCL's PCD v0.7 layout."""
    n = len(points)
    header = (
        "# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\n"
        "FIELDS x y z intensity ring\nSIZE 4 4 4 4 2\nTYPE F F F F U\nCOUNT 1 1 1 1 1\n"
        f"WIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA {data}\n"
    )
    rec = np.zeros(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("i", "<f4"), ("r", "<u2")])
    rec["x"], rec["y"], rec["z"], rec["i"] = points[:, 0], points[:, 1], points[:, 2], points[:, 3]
    rec["r"] = points[:, 4].astype(np.uint16)
    with open(path, "wb") as fh:
        fh.write(header.encode())
        if data == "binary":
            fh.write(rec.tobytes())
        else:
            for r in rec:
                xyzi = " ".join(repr(float(r[k])) for k in ("x", "y", "z", "i"))
                fh.write(f"{xyzi} {int(r['r'])}\n".encode())


def test_bin_npy_and_pcd_agree(tmp_path, nuscenes_frame):
    pts = nuscenes_frame.points[:2000]
    pts.tofile(tmp_path / "scan.bin")
    by_sensor = read_scan(tmp_path / "scan.bin", sensor="nuscenes")
    by_fields = read_scan(tmp_path / "scan.bin", fields=["x", "y", "z", "intensity", "ring"])
    by_dims = read_scan(tmp_path / "scan.bin", dims=5)
    for scan in (by_sensor, by_fields, by_dims):
        np.testing.assert_array_equal(scan.points, pts)
    assert by_fields.fields == ("x", "y", "z", "intensity", "ring")
    reordered = read_scan(tmp_path / "scan.bin", fields=["x", "y", "z", "ring", "intensity"])
    np.testing.assert_array_equal(reordered.points[:, 3], pts[:, 4])

    np.save(tmp_path / "scan.npy", pts)
    np.testing.assert_array_equal(read_scan(tmp_path / "scan.npy").points, pts)
    rec = np.zeros(len(pts), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    rec["x"], rec["y"], rec["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    np.save(tmp_path / "structured.npy", rec)
    no_intensity = read_scan(tmp_path / "structured.npy")
    assert not no_intensity.has_intensity and (no_intensity.points[:, 3] == 0).all()

    for data in ("binary", "ascii"):
        _write_pcd(tmp_path / f"{data}.pcd", pts, data)
        scan = read_scan(tmp_path / f"{data}.pcd")
        np.testing.assert_array_equal(scan.points, pts)
        assert scan.fields == ("x", "y", "z", "intensity", "ring") and scan.has_intensity


def test_scan_file_errors(tmp_path, nuscenes_frame):
    with pytest.raises(FileNotFoundError, match=re.escape("nope.bin")):
        read_scan(tmp_path / "nope.bin")
    nuscenes_frame.points[:10].tofile(tmp_path / "scan.bin")
    with pytest.raises(ScanFileError, match="multiple of 4"):
        read_scan(tmp_path / "scan.bin", sensor="semantickitti")  # 50 floats, 4 per row
    with pytest.raises(ScanFileError, match="layout"):
        read_scan(tmp_path / "scan.bin")
    (tmp_path / "scan.ply").write_text("ply")
    with pytest.raises(ScanFileError, match="unknown scan format"):
        read_scan(tmp_path / "scan.ply")
    (tmp_path / "c.pcd").write_text(
        "FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nPOINTS 1\nDATA binary_compressed\n"
    )
    with pytest.raises(ScanFileError, match="binary_compressed"):
        read_scan(tmp_path / "c.pcd")
