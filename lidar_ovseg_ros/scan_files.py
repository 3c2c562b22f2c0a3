"""LiDAR scan files -> float32 [N, >=4] (x, y, z, intensity, ...) for the offline tools.

Formats:
- `.bin`: raw float32 rows (KITTI `velodyne/*.bin`: 4 values, nuScenes `*.pcd.bin`: 5). The row
  layout comes from `fields` (names, e.g. "x,y,z,intensity,ring"), or `dims` (floats per point,
  first four x, y, z, intensity), or the sensor (nuscenes: 5, semantickitti: 4).
- `.npy`: a [N, >=4] float array, or a structured array with fields x, y, z and an intensity field.
- `.pcd`: PCL point cloud data, `DATA ascii` or `DATA binary` (not `binary_compressed`).

Intensity is taken from the first field named intensity / i / reflectance / remission; a scan
without one gets zeros (and `ScanFile.has_intensity` is False).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["INTENSITY_NAMES", "ScanFile", "ScanFileError", "read_scan"]

INTENSITY_NAMES = ("intensity", "i", "reflectance", "remission")
SENSOR_DIMS = {"nuscenes": 5, "semantickitti": 4}
_PCD_TYPES = {
    ("F", 4): "<f4",
    ("F", 8): "<f8",
    ("I", 1): "<i1",
    ("I", 2): "<i2",
    ("I", 4): "<i4",
    ("I", 8): "<i8",
    ("U", 1): "<u1",
    ("U", 2): "<u2",
    ("U", 4): "<u4",
    ("U", 8): "<u8",
}


class ScanFileError(ValueError):
    """A scan file that cannot be read as points; the message names the file."""


@dataclass(frozen=True)
class ScanFile:
    """Points float32 [N, 4 + extra]: x, y, z, intensity, then the remaining fields in order."""

    path: Path
    points: np.ndarray
    fields: tuple[str, ...]
    has_intensity: bool


def _assemble(path: Path, columns: dict[str, np.ndarray]) -> ScanFile:
    missing = [a for a in ("x", "y", "z") if a not in columns]
    if missing:
        raise ScanFileError(f"{path}: no field(s) {missing}; fields are {list(columns)}")
    n = len(columns["x"])
    intensity_name = next((f for f in INTENSITY_NAMES if f in columns), None)
    intensity = columns[intensity_name] if intensity_name else np.zeros(n, np.float32)
    extra = [f for f in columns if f not in ("x", "y", "z", intensity_name)]
    cols = [columns["x"], columns["y"], columns["z"], intensity] + [columns[f] for f in extra]
    points = np.stack([np.asarray(c, dtype=np.float32).reshape(n) for c in cols], axis=1)
    fields = ("x", "y", "z", intensity_name or "intensity", *extra)
    return ScanFile(path, np.ascontiguousarray(points), fields, intensity_name is not None)


def _read_bin(
    path: Path, fields: list[str] | None, dims: int | None, sensor: str | None
) -> ScanFile:
    if fields is None:
        if dims is None:
            if sensor is None:
                raise ScanFileError(
                    f"{path}: a .bin scan needs its layout: give fields, dims or the sensor"
                )
            dims = SENSOR_DIMS[sensor]
        if dims < 4:
            raise ScanFileError(f"{path}: dims must be >= 4 (x, y, z, intensity), got {dims}")
        fields = ["x", "y", "z", "intensity"] + [f"f{i}" for i in range(4, dims)]
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size % len(fields):
        raise ScanFileError(
            f"{path}: {raw.size} floats is not a multiple of {len(fields)} fields ({fields})"
        )
    rows = raw.reshape(-1, len(fields))
    return _assemble(path, {f: rows[:, i] for i, f in enumerate(fields)})


def _read_npy(path: Path) -> ScanFile:
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ScanFileError(f"{path}: not a plain .npy array: {exc}") from exc
    if arr.dtype.names:
        return _assemble(path, {name: arr[name].ravel() for name in arr.dtype.names})
    if arr.ndim != 2 or arr.shape[1] < 4:
        raise ScanFileError(f"{path}: expected a [N, >=4] array, got shape {arr.shape}")
    names = ["x", "y", "z", "intensity"] + [f"f{i}" for i in range(4, arr.shape[1])]
    return _assemble(path, {f: arr[:, i] for i, f in enumerate(names)})


def _read_pcd(path: Path) -> ScanFile:
    header: dict[str, list[str]] = {}
    with path.open("rb") as fh:
        while True:
            line = fh.readline()
            if not line:
                raise ScanFileError(f"{path}: PCD header has no DATA line")
            text = line.decode("ascii", errors="replace").strip()
            if not text or text.startswith("#"):
                continue
            key, *values = text.split()
            header[key.upper()] = values
            if key.upper() == "DATA":
                break
        body = fh.read()
    try:
        names = header["FIELDS"]
        sizes = [int(v) for v in header["SIZE"]]
        types = header["TYPE"]
        counts = [int(v) for v in header.get("COUNT", ["1"] * len(names))]
        n = (
            int(header["POINTS"][0])
            if "POINTS" in header
            else (int(header["WIDTH"][0]) * int(header["HEIGHT"][0]))
        )
        data = header["DATA"][0].lower()
    except (KeyError, IndexError, ValueError) as exc:
        raise ScanFileError(f"{path}: incomplete PCD header ({exc})") from exc
    dtype_fields = []
    for name, size, typ, count in zip(names, sizes, types, counts):
        base = _PCD_TYPES.get((typ.upper(), size))
        if base is None:
            raise ScanFileError(f"{path}: unsupported PCD field type {typ}{size} for '{name}'")
        dtype_fields.append((name, base) if count == 1 else (name, base, (count,)))
    dtype = np.dtype(dtype_fields)
    if data == "binary":
        if len(body) < n * dtype.itemsize:
            raise ScanFileError(f"{path}: binary data holds fewer than the {n} declared points")
        arr = np.frombuffer(body, dtype=dtype, count=n)
    elif data == "ascii":
        try:
            flat = np.array(body.decode("ascii", errors="replace").split(), dtype=np.float64)
        except ValueError as exc:
            raise ScanFileError(f"{path}: ascii data is not all numbers ({exc})") from exc
        width = sum(counts)
        if flat.size < n * width:
            raise ScanFileError(f"{path}: ascii data holds fewer than the {n} declared points")
        table = flat[: n * width].reshape(n, width)
        arr = np.empty(n, dtype=dtype)
        col = 0
        for name, count in zip(names, counts):
            arr[name] = table[:, col] if count == 1 else table[:, col : col + count]
            col += count
    else:
        raise ScanFileError(
            f"{path}: PCD 'DATA {data}' is not supported (use ascii or binary, e.g. "
            "pcl_convert_pcd_ascii_binary)"
        )
    return _assemble(path, {name: arr[name] for name in names if arr[name].ndim == 1})


def read_scan(
    path: str | Path,
    fields: list[str] | None = None,
    dims: int | None = None,
    sensor: str | None = None,
) -> ScanFile:
    """Read a `.bin`, `.npy` or `.pcd` scan (see the module docstring)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"scan file not found: {path}")
    if sensor is not None and sensor not in SENSOR_DIMS:
        raise ScanFileError(f"unknown sensor '{sensor}'; choose one of {list(SENSOR_DIMS)}")
    suffix = path.suffix.lower()
    if suffix == ".bin":
        scan = _read_bin(path, fields, dims, sensor)
    elif suffix == ".npy":
        scan = _read_npy(path)
    elif suffix == ".pcd":
        scan = _read_pcd(path)
    else:
        raise ScanFileError(f"{path}: unknown scan format '{suffix}' (expected .bin, .npy, .pcd)")
    if len(scan.points) == 0:
        raise ScanFileError(f"{path}: the scan has no points")
    return scan
