"""Tests for the PointCloud2 <-> numpy codec (lidar_ovseg_ros.pointcloud).

Sensor layouts are built here independently of the encoder (numpy structured arrays written to a
real ``sensor_msgs.msg.PointCloud2``); the property tests compare against a byte oracle written
with ``struct.pack_into`` one value at a time.
"""

from __future__ import annotations

import array
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from lidar_ovseg_ros.pointcloud import (
    FLOAT32,
    FLOAT64,
    INT8,
    INT16,
    INT32,
    LABELED_FIELDS,
    UINT8,
    UINT16,
    UINT32,
    FieldSpec,
    PointCloudFormatError,
    arrays_to_msg,
    decode_fields,
    drop_non_finite,
    finite_mask,
    labeled_cloud_to_msg,
    pack_arrays,
    pack_rgb,
    packed_to_msg,
    parse_layout,
    read_points,
    structured_view,
    unpack_rgb,
)

ROOT = Path(__file__).resolve().parents[1]
NUSCENES_BIN = ROOT / "lidar_ovseg_ros" / "data" / "frames" / "nuscenes_frame" / "LIDAR_TOP.bin"
KITTI_BIN = ROOT / "lidar_ovseg_ros" / "data" / "frames" / "kitti_frame" / "velodyne.bin"

NP_TYPES = {
    INT8: np.int8,
    UINT8: np.uint8,
    INT16: np.int16,
    UINT16: np.uint16,
    INT32: np.int32,
    UINT32: np.uint32,
    FLOAT32: np.float32,
    FLOAT64: np.float64,
}
STRUCT_CODES = {INT8: "b", UINT8: "B", INT16: "h", UINT16: "H", INT32: "i", UINT32: "I"}
STRUCT_CODES.update({FLOAT32: "I", FLOAT64: "Q"})  # floats are packed as their raw bits
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def nuscenes() -> np.ndarray:
    """The real nuScenes scan: [N, 5] float32 x, y, z, intensity, ring."""
    return np.fromfile(NUSCENES_BIN, dtype=np.float32).reshape(-1, 5)


def bits(a: np.ndarray) -> np.ndarray:
    """Bit patterns of ``a`` as native unsigned ints (bitwise, NaN-payload-exact comparison)."""
    a = np.ascontiguousarray(a)
    order = a.dtype.byteorder if a.dtype.byteorder in "<>" else "="
    unsigned = np.dtype(f"u{a.dtype.itemsize}").newbyteorder(order)
    return a.view(unsigned).astype(np.dtype(f"u{a.dtype.itemsize}"))


def assert_bitwise_equal(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    assert got.dtype.newbyteorder("=") == want.dtype.newbyteorder("=")
    np.testing.assert_array_equal(bits(got), bits(want))


def message_from_struct(points: np.ndarray, specs: list[tuple[str, int, int, int]]) -> PointCloud2:
    """A real PointCloud2 around the bytes of a numpy structured array (no codec involved)."""
    return PointCloud2(
        header=Header(frame_id="lidar"),
        height=1,
        width=len(points),
        fields=[PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in specs],
        is_bigendian=False,
        point_step=points.dtype.itemsize,
        row_step=points.dtype.itemsize * len(points),
        data=points.tobytes(),
        is_dense=True,
    )


def struct_dtype(specs: list[tuple[str, int, int, int]], point_step: int) -> np.dtype:
    return np.dtype(
        {
            "names": [s[0] for s in specs],
            "formats": [
                np.dtype(NP_TYPES[d]) if c == 1 else (np.dtype(NP_TYPES[d]), (c,))
                for _, _, d, c in specs
            ],
            "offsets": [s[1] for s in specs],
            "itemsize": point_step,
        }
    )


# ---------------------------------------------------------------------------------------------
# Real sensor layouts
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SensorLayout:
    name: str
    specs: list[tuple[str, int, int, int]]
    point_step: int
    intensity: str | None  # field expected to feed ScanArrays.intensity
    ring: str | None
    time: str | None
    time_kind: str | None  # how the test writes time: "s", "ns", "abs_s", "abs_ns"


SENSOR_LAYOUTS = [
    SensorLayout(  # velodyne_pointcloud (ROS 2) XYZIRT, packed
        "velodyne_ros2",
        [
            ("x", 0, 7, 1),
            ("y", 4, 7, 1),
            ("z", 8, 7, 1),
            ("intensity", 12, 7, 1),
            ("ring", 16, 4, 1),
            ("time", 18, 7, 1),
        ],
        22,
        "intensity",
        "ring",
        "time",
        "s",
    ),
    SensorLayout(  # PCL-aligned velodyne_pcl::PointXYZIRT (PCL_ADD_POINT4D padding, 32 bytes)
        "velodyne_pcl",
        [
            ("x", 0, 7, 1),
            ("y", 4, 7, 1),
            ("z", 8, 7, 1),
            ("intensity", 16, 7, 1),
            ("ring", 20, 4, 1),
            ("time", 24, 7, 1),
        ],
        32,
        "intensity",
        "ring",
        "time",
        "s",
    ),
    SensorLayout(  # ouster-ros PointOS (legacy/original profile)
        "ouster",
        [
            ("x", 0, 7, 1),
            ("y", 4, 7, 1),
            ("z", 8, 7, 1),
            ("intensity", 16, 7, 1),
            ("t", 20, 6, 1),
            ("reflectivity", 24, 4, 1),
            ("ring", 26, 4, 1),
            ("ambient", 28, 4, 1),
            ("range", 32, 6, 1),
        ],
        48,
        "intensity",
        "ring",
        "t",
        "ns",
    ),
    SensorLayout(  # ouster-ros native profile: no "intensity", uint8 ring, uint32 signal
        "ouster_native",
        [
            ("x", 0, 7, 1),
            ("y", 4, 7, 1),
            ("z", 8, 7, 1),
            ("t", 16, 6, 1),
            ("reflectivity", 20, 4, 1),
            ("ring", 22, 2, 1),
            ("near_ir", 24, 4, 1),
            ("signal", 28, 6, 1),
            ("range", 32, 6, 1),
        ],
        48,
        "reflectivity",
        "ring",
        "t",
        "ns",
    ),
    SensorLayout(  # HesaiLidar_General_ROS PointXYZIT (float intensity, double timestamp)
        "hesai_general",
        [
            ("x", 0, 7, 1),
            ("y", 4, 7, 1),
            ("z", 8, 7, 1),
            ("intensity", 16, 7, 1),
            ("timestamp", 24, 8, 1),
            ("ring", 32, 4, 1),
        ],
        48,
        "intensity",
        "ring",
        "timestamp",
        "abs_s",
    ),
    SensorLayout(  # HesaiLidar_ROS_2.0 (uint8 intensity)
        "hesai_ros2",
        [
            ("x", 0, 7, 1),
            ("y", 4, 7, 1),
            ("z", 8, 7, 1),
            ("intensity", 12, 2, 1),
            ("ring", 14, 4, 1),
            ("timestamp", 16, 8, 1),
        ],
        24,
        "intensity",
        "ring",
        "timestamp",
        "abs_s",
    ),
    SensorLayout(  # livox_ros_driver2 PointCloud2 (packed, unaligned float64 timestamp in ns)
        "livox_driver2",
        [
            ("x", 0, 7, 1),
            ("y", 4, 7, 1),
            ("z", 8, 7, 1),
            ("intensity", 12, 7, 1),
            ("tag", 16, 2, 1),
            ("line", 17, 2, 1),
            ("timestamp", 18, 8, 1),
        ],
        26,
        "intensity",
        "line",
        "timestamp",
        "abs_ns",
    ),
    SensorLayout(  # Livox CustomMsg converted to PointCloud2 (uint8 reflectivity, offset_time)
        "livox_custom",
        [
            ("x", 0, 7, 1),
            ("y", 4, 7, 1),
            ("z", 8, 7, 1),
            ("reflectivity", 12, 2, 1),
            ("tag", 13, 2, 1),
            ("line", 14, 2, 1),
            ("offset_time", 16, 6, 1),
        ],
        20,
        "reflectivity",
        "line",
        "offset_time",
        "ns",
    ),
    SensorLayout(  # Autoware PointXYZIRC
        "autoware_xyzirc",
        [
            ("x", 0, 7, 1),
            ("y", 4, 7, 1),
            ("z", 8, 7, 1),
            ("intensity", 12, 2, 1),
            ("return_type", 13, 2, 1),
            ("channel", 14, 4, 1),
        ],
        16,
        "intensity",
        "channel",
        None,
        None,
    ),
]


def relative_times(xyz: np.ndarray) -> np.ndarray:
    """A plausible per-point firing time: the azimuth mapped onto a 0.1 s sweep."""
    azimuth = np.arctan2(xyz[:, 1], xyz[:, 0]).astype(np.float64)
    return (azimuth + np.pi) / (2 * np.pi) * 0.1


@pytest.mark.parametrize("layout", SENSOR_LAYOUTS, ids=lambda s: s.name)
def test_sensor_layouts_decode(layout: SensorLayout, nuscenes: np.ndarray) -> None:
    xyz = nuscenes[:, :3]
    intensity = nuscenes[:, 3]
    ring = nuscenes[:, 4].astype(np.int64)
    t_rel = relative_times(xyz)
    abs_base = 1_532_402_927.0  # the frame's Unix time (2018-07-24)
    points = np.zeros(len(xyz), struct_dtype(layout.specs, layout.point_step))
    for j, c in enumerate("xyz"):
        points[c] = xyz[:, j]
    want_time = None
    for name, _, dt, _ in layout.specs:
        if name == layout.intensity:
            points[name] = intensity.astype(NP_TYPES[dt])
        elif name == layout.ring:
            points[name] = ring
        elif name == layout.time:
            if layout.time_kind == "s":
                points[name] = t_rel
                want_time = t_rel
            elif layout.time_kind == "ns":
                points[name] = np.round(t_rel * 1e9)
                want_time = t_rel
            elif layout.time_kind == "abs_s":
                points[name] = abs_base + t_rel
                want_time = abs_base + t_rel
            else:
                points[name] = (abs_base + t_rel) * 1e9
                want_time = abs_base + t_rel
        elif name not in "xyz":
            points[name] = 7  # other driver fields (tag, ambient, range, ...)
    msg = message_from_struct(points, layout.specs)
    assert isinstance(msg.data, array.array)  # what rclpy hands a subscriber

    scan = read_points(msg)
    assert scan.xyz.dtype == np.float32 and scan.xyz.shape == (len(xyz), 3)
    np.testing.assert_array_equal(scan.xyz, xyz)
    assert scan.shape == (1, len(xyz))
    assert scan.intensity is not None and scan.intensity.dtype == np.float32
    np.testing.assert_array_equal(scan.intensity, intensity)  # 0..255 integers: exact in uint8
    assert scan.source_fields["intensity"] == layout.intensity
    assert scan.ring is not None and scan.ring.dtype == np.int32
    np.testing.assert_array_equal(scan.ring, ring)
    assert scan.source_fields["ring"] == layout.ring
    if layout.time is None:
        assert scan.time is None and "time" not in scan.source_fields
    else:
        assert scan.time is not None and scan.time.dtype == np.float64
        assert scan.source_fields["time"] == layout.time
        # float32 seconds keep ~4e-9 s at 0.1 s; float64 ns since epoch keep ~2.4e-7 s.
        np.testing.assert_allclose(scan.time, want_time, rtol=0, atol=1e-6)

    fields = decode_fields(msg)
    assert list(fields) == [s[0] for s in layout.specs]
    for name, _, dt, _ in layout.specs:
        assert fields[name].dtype == np.dtype(NP_TYPES[dt]).newbyteorder("<")
        np.testing.assert_array_equal(fields[name], points[name])


def test_nuscenes_frame_round_trip(nuscenes: np.ndarray) -> None:
    names = ["x", "y", "z", "intensity", "ring"]
    header = Header(frame_id="LIDAR_TOP")
    header.stamp.sec = 1_532_402_927
    msg = arrays_to_msg(header, {n: nuscenes[:, i] for i, n in enumerate(names)})
    assert msg.header is header
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        (n, 4 * i, PointField.FLOAT32, 1) for i, n in enumerate(names)
    ]
    assert (msg.height, msg.width, msg.point_step) == (1, len(nuscenes), 20)
    assert msg.row_step == 20 * len(nuscenes) and not msg.is_bigendian and msg.is_dense
    # Same bytes as the file: x, y, z, intensity, ring float32 per point.
    assert bytes(msg.data) == NUSCENES_BIN.read_bytes()

    fields = decode_fields(msg)
    for i, n in enumerate(names):
        assert_bitwise_equal(fields[n], nuscenes[:, i])
    scan = read_points(msg)
    assert_bitwise_equal(scan.xyz, nuscenes[:, :3])
    assert_bitwise_equal(scan.intensity, nuscenes[:, 3])
    np.testing.assert_array_equal(scan.ring, nuscenes[:, 4].astype(np.int32))

    # Through the real wire format (CDR), as a subscriber receives it.
    from rclpy.serialization import deserialize_message, serialize_message

    received = deserialize_message(serialize_message(msg), PointCloud2)
    assert isinstance(received.data, array.array)
    assert_bitwise_equal(read_points(received).xyz, nuscenes[:, :3])


def test_kitti_frame_reflectance_as_intensity() -> None:
    raw = np.fromfile(KITTI_BIN, dtype=np.float32).reshape(-1, 4)
    msg = arrays_to_msg(
        None, {"x": raw[:, 0], "y": raw[:, 1], "z": raw[:, 2], "reflectance": raw[:, 3]}
    )
    scan = read_points(msg)
    assert_bitwise_equal(scan.xyz, raw[:, :3])
    assert_bitwise_equal(scan.intensity, raw[:, 3])
    assert scan.source_fields == {"intensity": "reflectance"} and scan.ring is None


def test_alias_table_override_and_priority(nuscenes: np.ndarray) -> None:
    n = 100
    arrays = {
        "x": nuscenes[:n, 0],
        "y": nuscenes[:n, 1],
        "z": nuscenes[:n, 2],
        "reflectivity": np.arange(n, dtype=np.uint16),
        "intensity": nuscenes[:n, 3],
    }
    msg = arrays_to_msg(None, arrays)
    assert read_points(msg).source_fields["intensity"] == "intensity"  # table priority
    aliases = {"intensity": ("reflectivity",), "ring": (), "time": ()}
    scan = read_points(msg, aliases=aliases)
    np.testing.assert_array_equal(scan.intensity, np.arange(n, dtype=np.float32))


# ---------------------------------------------------------------------------------------------
# Zero-copy, organized clouds, padding, byte order, buffers
# ---------------------------------------------------------------------------------------------


def _buffer_of(msg: Any) -> np.ndarray:
    return np.frombuffer(msg.data, np.uint8)


def test_views_share_the_message_buffer(nuscenes: np.ndarray) -> None:
    layout = next(s for s in SENSOR_LAYOUTS if s.name == "velodyne_pcl")
    points = np.zeros(len(nuscenes), struct_dtype(layout.specs, layout.point_step))
    for j, c in enumerate(["x", "y", "z", "intensity"]):
        points[c] = nuscenes[:, j]
    msg = message_from_struct(points, layout.specs)
    buf = _buffer_of(msg)
    fields = decode_fields(msg)
    assert all(np.shares_memory(a, buf) for a in fields.values())
    assert not fields["x"].flags.writeable
    scan = read_points(msg)
    assert np.shares_memory(scan.xyz, buf) and np.shares_memory(scan.intensity, buf)
    owned = read_points(msg, copy=True)
    assert not np.shares_memory(owned.xyz, buf) and owned.xyz.flags.c_contiguous
    assert owned.xyz.flags.writeable
    np.testing.assert_array_equal(owned.xyz, scan.xyz)
    as64 = read_points(msg, dtype=np.float64)
    assert as64.xyz.dtype == np.float64 and as64.intensity.dtype == np.float64
    np.testing.assert_array_equal(as64.xyz, nuscenes[:, :3].astype(np.float64))


@pytest.mark.parametrize("row_pad", [0, 12])
def test_organized_cloud_with_row_padding(nuscenes: np.ndarray, row_pad: int) -> None:
    height, width = 32, 1000  # 32 rings x 1000 columns from the real scan
    xyz = nuscenes[: height * width, :3]
    packed = pack_arrays(
        {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]},
        height=height,
        row_step=width * 12 + row_pad,
    )
    msg = packed_to_msg(None, packed)
    assert msg.data is packed.data  # handed over, not copied
    assert (msg.height, msg.width, msg.row_step) == (height, width, width * 12 + row_pad)
    assert len(msg.data) == height * (width * 12 + row_pad)
    buf = _buffer_of(msg)
    grid = decode_fields(msg, organized=True)
    assert grid["x"].shape == (height, width)
    assert np.shares_memory(grid["x"], buf)  # strided over the padding, never copied
    np.testing.assert_array_equal(grid["y"], xyz[:, 1].reshape(height, width))
    flat = decode_fields(msg)
    np.testing.assert_array_equal(flat["z"], xyz[:, 2])  # row-major flattening
    assert np.shares_memory(flat["z"], buf) == (row_pad == 0)  # copies only for row padding
    scan = read_points(msg)
    assert scan.shape == (height, width)
    np.testing.assert_array_equal(scan.xyz, xyz)
    assert structured_view(msg, organized=True).shape == (height, width)
    if row_pad:  # padding bytes are written as zeros
        rows = buf.reshape(height, -1)
        assert not rows[:, width * 12 :].any()


def test_count_greater_than_one_and_big_endian(nuscenes: np.ndarray) -> None:
    n = 500
    xyz = nuscenes[:n, :3]
    normals = np.stack([xyz[:, 1], -xyz[:, 0], np.ones(n, np.float32)], axis=1)
    packed = pack_arrays(
        {
            "x": xyz[:, 0],
            "y": xyz[:, 1],
            "z": xyz[:, 2],
            "normal": normals,
            "ring": nuscenes[:n, 4].astype(np.uint8),
        },
        big_endian=True,
    )
    msg = packed_to_msg(None, packed)
    assert msg.is_bigendian
    # Big-endian on the wire: x of point 0 is the big-endian float32 of xyz[0, 0].
    assert bytes(msg.data[:4]) == struct.pack(">f", float(xyz[0, 0]))
    fields = decode_fields(msg)
    assert fields["normal"].shape == (n, 3) and fields["normal"].dtype == np.dtype(">f4")
    np.testing.assert_array_equal(fields["normal"], normals)
    scan = read_points(msg)
    assert scan.xyz.dtype == np.float32 and scan.xyz.dtype.isnative
    np.testing.assert_array_equal(scan.xyz, xyz)
    owned = decode_fields(msg, copy=True)
    assert owned["normal"].dtype == np.float32 and owned["normal"].dtype.isnative


@pytest.mark.parametrize("big_endian", [False, True])
def test_special_float_bit_patterns_survive(big_endian: bool) -> None:
    f32 = np.array(
        [0x7F800001, 0xFFBFFFFF, 0x7FC00000, 0x00000001, 0x80000000, 0x7F800000], np.uint32
    )
    f64 = np.array(
        [0x7FF0000000000001, 0xFFF7FFFFFFFFFFFF, 0x1, 0x8000000000000000, 0, 1], np.uint64
    )
    arrays = {"a": f32.view(np.float32), "b": f64.view(np.float64)}  # signalling NaNs, denormals
    packed = pack_arrays(arrays, big_endian=big_endian)
    for msg in (packed, packed_to_msg(None, packed)):
        fields = decode_fields(msg)
        assert_bitwise_equal(fields["a"], arrays["a"])
        assert_bitwise_equal(fields["b"], arrays["b"])
        assert_bitwise_equal(decode_fields(msg, copy=True)["a"], arrays["a"])


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "array", "ndarray", "list"])
def test_every_buffer_type_decodes(nuscenes: np.ndarray, kind: str) -> None:
    packed = pack_arrays({"x": nuscenes[:50, 0], "y": nuscenes[:50, 1], "z": nuscenes[:50, 2]})
    raw = packed.data.tobytes()
    data = {
        "bytes": raw,
        "bytearray": bytearray(raw),
        "memoryview": memoryview(raw),
        "array": array.array("B", raw),
        "ndarray": np.frombuffer(raw, np.uint8),  # what rosbags deserialises to
        "list": list(raw),
    }[kind]
    msg = SimpleNamespace(**{**vars(packed), "data": data})
    np.testing.assert_array_equal(read_points(msg).xyz, nuscenes[:50, :3])


def test_pcl_padding_fields_are_skipped() -> None:
    specs = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("_", 12, 2, 4), ("_", 16, 2, 4)]
    specs.append(("intensity", 20, 7, 1))
    points = np.zeros(3, struct_dtype([s for s in specs if s[0] != "_"], 24))
    points["x"] = [1, 2, 3]
    points["intensity"] = [4, 5, 6]
    msg = message_from_struct(points, specs)
    fields = decode_fields(msg)
    assert list(fields) == ["x", "y", "z", "intensity"]
    np.testing.assert_array_equal(read_points(msg).intensity, [4, 5, 6])


# ---------------------------------------------------------------------------------------------
# Non-finite points, empty clouds
# ---------------------------------------------------------------------------------------------


def test_non_dense_cloud_masks(nuscenes: np.ndarray) -> None:
    xyz = nuscenes[:64, :3].copy()
    xyz[3, 0] = np.nan
    xyz[10, 2] = np.inf
    xyz[20] = -np.inf
    msg = arrays_to_msg(
        None, {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "intensity": nuscenes[:64, 3]}
    )
    assert msg.is_dense is False
    scan = read_points(msg)
    mask = finite_mask(scan.xyz)
    assert mask.sum() == 61 and not mask[[3, 10, 20]].any()
    kept = drop_non_finite(scan)
    assert len(kept) == 61 and kept.is_dense and kept.shape == (1, 61)
    np.testing.assert_array_equal(kept.xyz, xyz[mask])
    np.testing.assert_array_equal(kept.intensity, nuscenes[:64, 3][mask])
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        finite_mask(xyz[:, :2])


def test_empty_clouds_decode_to_empty_arrays() -> None:
    default = PointCloud2()  # no fields, no points: what some drivers publish between scans
    assert decode_fields(default) == {}
    scan = read_points(default)
    assert scan.xyz.shape == (0, 3) and scan.intensity is None
    msg = arrays_to_msg(
        None,
        {
            "x": np.empty(0, np.float32),
            "y": np.empty(0, np.float32),
            "z": np.empty(0, np.float32),
            "rgb_pair": np.empty((0, 2), np.uint8),
            "ring": np.empty(0, np.uint16),
        },
    )
    assert (msg.width, len(msg.data)) == (0, 0)
    fields = decode_fields(msg)
    assert fields["rgb_pair"].shape == (0, 2) and fields["ring"].dtype == np.uint16
    scan = read_points(msg)
    assert scan.xyz.shape == (0, 3) and scan.ring is not None and scan.ring.shape == (0,)
    assert read_points(msg).xyz.dtype == np.float32
    organized = decode_fields(
        SimpleNamespace(**{**vars(pack_arrays({"x": np.empty(0)})), "height": 4}), organized=True
    )
    assert organized["x"].shape == (4, 0)


# ---------------------------------------------------------------------------------------------
# Labeled output and rgb packing
# ---------------------------------------------------------------------------------------------


def test_pack_rgb_round_trip_and_bits() -> None:
    rng = np.random.default_rng(0)
    colors = rng.integers(0, 256, size=(200_000, 3), dtype=np.uint8)
    colors[:2] = [[255, 255, 255], [0, 0, 0]]
    packed = pack_rgb(colors)
    assert packed.dtype == np.float32 and packed.shape == (200_000,)
    assert np.isfinite(packed).all()  # 0x00RRGGBB never has NaN/Inf bit patterns
    as_int = packed.view(np.uint32)
    np.testing.assert_array_equal(as_int >> 16, colors[:, 0])
    np.testing.assert_array_equal((as_int >> 8) & 0xFF, colors[:, 1])
    np.testing.assert_array_equal(as_int & 0xFF, colors[:, 2])
    np.testing.assert_array_equal(unpack_rgb(packed), colors)
    np.testing.assert_array_equal(unpack_rgb(packed.astype(">f4")), colors)
    np.testing.assert_array_equal(pack_rgb(colors.astype(np.int64)).view(np.uint32), as_int)
    with pytest.raises(PointCloudFormatError, match=r"\[0, 255\]"):
        pack_rgb(np.array([[0, 0, 256]]))
    with pytest.raises(PointCloudFormatError, match=r"\[N, 3\]"):
        pack_rgb(np.zeros((4, 4), np.uint8))


def test_labeled_cloud_to_msg(nuscenes: np.ndarray) -> None:
    n = len(nuscenes)
    rng = np.random.default_rng(1)
    xyz = nuscenes[:, :3]
    label = rng.integers(0, 17, n)
    label[:5] = np.iinfo(np.uint16).max  # the shared no-class id
    score = rng.random(n, dtype=np.float32)
    colors = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    header = Header(frame_id="LIDAR_TOP")
    msg = labeled_cloud_to_msg(header, xyz, nuscenes[:, 3], label, score, colors)
    assert isinstance(msg, PointCloud2) and msg.header is header
    assert [(f.name, f.datatype, f.count) for f in msg.fields] == [
        ("x", PointField.FLOAT32, 1),
        ("y", PointField.FLOAT32, 1),
        ("z", PointField.FLOAT32, 1),
        ("intensity", PointField.FLOAT32, 1),
        ("label", PointField.UINT16, 1),
        ("score", PointField.FLOAT32, 1),
        ("rgb", PointField.FLOAT32, 1),
    ]
    assert [f.offset for f in msg.fields] == [f.offset for f in LABELED_FIELDS]
    assert msg.point_step == 28 and not msg.is_bigendian and msg.is_dense
    fields = decode_fields(msg)
    assert_bitwise_equal(fields["x"], xyz[:, 0])
    assert_bitwise_equal(fields["intensity"], nuscenes[:, 3])
    np.testing.assert_array_equal(fields["label"], label)
    assert_bitwise_equal(fields["score"], score)
    np.testing.assert_array_equal(unpack_rgb(fields["rgb"]), colors)
    # Independent check of one point's bytes (RViz reads rgb as 0x00RRGGBB little-endian).
    i = 1234
    r, g, b = (int(v) for v in colors[i])
    want = struct.pack(
        "<4fH2xfI", *xyz[i], nuscenes[i, 3], label[i], score[i], (r << 16) | (g << 8) | b
    )
    assert bytes(msg.data[i * 28 : (i + 1) * 28]) == want


def test_labeled_cloud_defaults_nan_and_organized(nuscenes: np.ndarray) -> None:
    xyz = nuscenes[:64, :3].copy()
    xyz[7] = np.nan
    label = np.arange(64, dtype=np.uint16)
    packed_rgb = pack_rgb(np.full((64, 3), 9, np.uint8))
    msg = labeled_cloud_to_msg(None, xyz, None, label, None, packed_rgb, height=4)
    assert (msg.height, msg.width) == (4, 16) and msg.is_dense is False
    fields = decode_fields(msg, organized=True)
    assert fields["label"].shape == (4, 16)
    np.testing.assert_array_equal(fields["label"].reshape(-1), label)
    assert not fields["intensity"].any() and not fields["score"].any()
    np.testing.assert_array_equal(unpack_rgb(fields["rgb"].reshape(-1)), 9)
    as_uint32 = labeled_cloud_to_msg(None, xyz, None, label, None, packed_rgb.view(np.uint32))
    assert bytes(as_uint32.data) == bytes(
        labeled_cloud_to_msg(None, xyz, None, label, None, packed_rgb).data
    )


@pytest.mark.parametrize(
    ("label", "match"),
    [
        (np.full(8, -1), r"outside uint16"),
        (np.full(8, 65536), r"outside uint16"),
        (np.full(8, 1.0), r"round it explicitly"),
        (np.zeros(7, np.int64), r"label must have shape \(8,\)"),
    ],
)
def test_labeled_cloud_rejects_bad_labels(label: np.ndarray, match: str) -> None:
    with pytest.raises(PointCloudFormatError, match=match):
        labeled_cloud_to_msg(None, np.zeros((8, 3), np.float32), None, label, None, None)


def test_arrays_to_msg_heat_map_and_encoder_errors(nuscenes: np.ndarray) -> None:
    score = np.linspace(0, 1, 100, dtype=np.float32)
    msg = arrays_to_msg(
        None,
        {"x": nuscenes[:100, 0], "y": nuscenes[:100, 1], "z": nuscenes[:100, 2], "score": score},
    )
    assert msg.point_step == 16
    np.testing.assert_array_equal(decode_fields(msg)["score"], score)
    with pytest.raises(PointCloudFormatError, match=r"int64"):
        arrays_to_msg(None, {"x": np.zeros(3, np.int64)})
    with pytest.raises(PointCloudFormatError, match=r"has 2 points, expected 3"):
        arrays_to_msg(None, {"x": np.zeros(3, np.float32), "y": np.zeros(2, np.float32)})
    with pytest.raises(PointCloudFormatError, match=r"cannot form 2 rows"):
        arrays_to_msg(None, {"x": np.zeros(3, np.float32)}, height=2)
    with pytest.raises(TypeError, match=r"std_msgs.msg.Header"):
        arrays_to_msg("frame", {"x": np.zeros(3, np.float32)})
    with pytest.raises(PointCloudFormatError, match=r"missing \['y'\]"):
        pack_arrays(
            {"x": np.zeros(3, np.float32)}, fields=[FieldSpec("x", 0, 7), FieldSpec("y", 4, 7)]
        )


# ---------------------------------------------------------------------------------------------
# Malformed messages: one exception type, with a message naming the problem
# ---------------------------------------------------------------------------------------------


def _valid_cloud() -> SimpleNamespace:
    rng = np.random.default_rng(2)
    packed = pack_arrays(
        {n: rng.random(10, dtype=np.float32) for n in ("x", "y", "z", "intensity")}
    )
    fields = [SimpleNamespace(**f._asdict()) for f in packed.fields]
    return SimpleNamespace(**{**vars(packed), "fields": fields, "data": packed.data.tobytes()})


def _set_field(i: int, **kw: Any):
    def mutate(m: SimpleNamespace) -> None:
        for k, v in kw.items():
            setattr(m.fields[i], k, v)

    return mutate


MALFORMED = {
    "truncated": (
        lambda m: setattr(m, "data", m.data[:-1]),
        r"data holds 159 bytes but height 1 x row_step 160",
    ),
    "extended": (lambda m: setattr(m, "data", m.data + b"\0"), r"data holds 161 bytes"),
    "row_step_short": (
        lambda m: setattr(m, "row_step", 159),
        r"row_step 159 < width 10 x point_step 16",
    ),
    "field_past_step": (
        _set_field(3, offset=14),
        r"'intensity': FLOAT32 x 1 at offset 14 ends at byte 18, past point_step 16",
    ),
    "count_past_step": (_set_field(0, count=5), r"'x': FLOAT32 x 5 at offset 0 ends at byte 20"),
    "unknown_datatype": (_set_field(1, datatype=9), r"'y': unknown datatype 9"),
    "datatype_zero": (_set_field(1, datatype=0), r"unknown datatype 0"),
    "count_zero": (_set_field(2, count=0), r"'z': count is 0"),
    "duplicate_name": (_set_field(3, name="x"), r"duplicate field name 'x'"),
    "empty_name": (_set_field(3, name=""), r"empty field name"),
    "name_not_str": (_set_field(3, name=b"i"), r"name must be a str"),
    "negative_offset": (_set_field(0, offset=-4), r"'x' offset must be >= 0"),
    "float_offset": (_set_field(0, offset=1.5), r"'x' offset must be an integer"),
    "point_step_zero": (lambda m: setattr(m, "point_step", 0), r"past point_step 0"),
    "point_step_huge": (lambda m: setattr(m, "point_step", 2**40), r"row_step 160 < width 10"),
    "width_zero_with_data": (
        lambda m: setattr(m, "width", 0),
        r"= 0 points but data holds 160 bytes",
    ),
    "height_zero_with_data": (lambda m: setattr(m, "height", 0), r"= 0 points but data holds"),
    "height_too_big": (lambda m: setattr(m, "height", 2), r"height 2 x row_step 160 = 320"),
    "no_fields": (lambda m: setattr(m, "fields", []), r"no fields"),
    "fields_not_a_list": (lambda m: setattr(m, "fields", 3), r"fields must be a sequence"),
    "field_missing_attr": (
        lambda m: m.fields.append(SimpleNamespace(name="a", offset=0)),
        r"field 'a' has no attribute 'datatype'",
    ),
    "data_none": (lambda m: setattr(m, "data", None), r"data must be a bytes-like buffer"),
    "data_str": (lambda m: setattr(m, "data", "abc"), r"data must be a bytes-like buffer"),
    "data_list_out_of_range": (
        lambda m: setattr(m, "data", [300] * 160),
        r"integers in \[0, 255\]",
    ),
    "width_none": (lambda m: setattr(m, "width", None), r"width must be an integer"),
    "height_negative": (lambda m: setattr(m, "height", -1), r"height must be >= 0"),
    "missing_attribute": (lambda m: delattr(m, "row_step"), r"cloud has no attribute 'row_step'"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_messages_raise_one_error_type(case: str) -> None:
    mutate, match = MALFORMED[case]
    msg = _valid_cloud()
    parse_layout(msg)  # valid before the mutation
    mutate(msg)
    for decode in (parse_layout, decode_fields, read_points, structured_view):
        with pytest.raises(PointCloudFormatError, match=match):
            decode(msg)


def test_missing_xyz_and_multi_count_xyz() -> None:
    msg = arrays_to_msg(None, {"x": np.zeros(4, np.float32), "intensity": np.zeros(4, np.float32)})
    assert set(decode_fields(msg)) == {"x", "intensity"}  # decodable, but not a scan
    with pytest.raises(
        PointCloudFormatError, match=r"lacks field\(s\) y, z \(fields present: x, intensity\)"
    ):
        read_points(msg)
    msg = arrays_to_msg(
        None,
        {
            "x": np.zeros((4, 2), np.float32),
            "y": np.zeros(4, np.float32),
            "z": np.zeros(4, np.float32),
        },
    )
    with pytest.raises(PointCloudFormatError, match=r"'x' has count 2"):
        read_points(msg)
    with pytest.raises(ValueError, match=r"float type"):
        read_points(msg, dtype=np.int32)


def test_core_module_imports_neither_rclpy_nor_messages() -> None:
    code = (
        "import sys, lidar_ovseg_ros.pointcloud;"
        "bad = [m for m in ('rclpy', 'sensor_msgs', 'std_msgs') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ---------------------------------------------------------------------------------------------
# Property-based tests
# ---------------------------------------------------------------------------------------------

ITEMSIZE = {d: np.dtype(t).itemsize for d, t in NP_TYPES.items()}
NAME_ALPHABET = "abcdefghijklmnopqrstuvwxyz_0123456789"


@dataclass
class RandomCloud:
    fields: list[FieldSpec]
    point_step: int
    row_step: int
    height: int
    width: int
    big: bool
    values: dict[str, np.ndarray]  # native-endian, [N] or [N, count]

    def oracle_bytes(self) -> bytes:
        """The cloud written one value at a time with struct (independent of the codec)."""
        order = ">" if self.big else "<"
        buf = bytearray(self.height * self.row_step)
        for f in self.fields:
            size = ITEMSIZE[f.datatype]
            values = self.values[f.name].reshape(self.height * self.width, f.count)
            if f.datatype in (FLOAT32, FLOAT64):
                values = values.view(np.uint32 if f.datatype == FLOAT32 else np.uint64)
            code = order + STRUCT_CODES[f.datatype]
            for p in range(self.height * self.width):
                base = (p // self.width) * self.row_step + (p % self.width) * self.point_step
                for j in range(f.count):
                    struct.pack_into(code, buf, base + f.offset + j * size, values[p, j].item())
        return bytes(buf)

    def message(self, data: Any) -> SimpleNamespace:
        return SimpleNamespace(
            height=self.height,
            width=self.width,
            fields=[SimpleNamespace(**f._asdict()) for f in self.fields],
            is_bigendian=self.big,
            point_step=self.point_step,
            row_step=self.row_step,
            data=data,
            is_dense=False,
        )


@st.composite
def random_clouds(draw: st.DrawFn, min_points: int = 0, xyz: bool = False) -> RandomCloud:
    """Random valid layouts: field sets, datatypes, counts, gaps, padding, byte order, shape."""
    if xyz:
        extra = draw(
            st.lists(st.text(NAME_ALPHABET, min_size=2, max_size=5), max_size=3, unique=True)
        )
        names = ["x", "y", "z", *[e for e in extra if e not in ("x", "y", "z")]]
    else:
        names = draw(
            st.lists(
                st.text(NAME_ALPHABET, min_size=1, max_size=5).filter(lambda s: s != "_"),
                min_size=1,
                max_size=6,
                unique=True,
            )
        )
    names = draw(st.permutations(names))
    specs, offset = [], 0
    for name in names:
        offset += draw(st.integers(0, 3))
        datatype = draw(st.integers(1, 8))
        count = 1 if name in ("x", "y", "z") and xyz else draw(st.integers(1, 3))
        specs.append(FieldSpec(name, offset, datatype, count))
        offset += ITEMSIZE[datatype] * count
    point_step = offset + draw(st.integers(0, 5))
    specs = draw(st.permutations(specs))  # list order need not follow offsets
    lo = 1 if min_points else 0
    height = draw(st.integers(lo, 3))
    width = draw(st.integers(lo, 5))
    row_step = width * point_step + (draw(st.integers(0, 9)) if height * width else 0)
    n = height * width
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = {}
    for f in specs:
        dt = np.dtype(NP_TYPES[f.datatype])
        a = np.frombuffer(rng.bytes(n * f.count * dt.itemsize), dt).copy()  # any bit pattern
        if dt.kind == "f" and a.size and draw(st.booleans()):
            a[rng.integers(0, a.size, 3)] = draw(st.sampled_from([np.nan, np.inf, -np.inf, -0.0]))
        values[f.name] = a if f.count == 1 else a.reshape(n, f.count)
    return RandomCloud(
        list(specs), point_step, row_step, height, width, draw(st.booleans()), values
    )


@SETTINGS
@given(cloud=random_clouds())
def test_property_random_layouts_round_trip(cloud: RandomCloud) -> None:
    oracle = cloud.oracle_bytes()
    packed = pack_arrays(
        cloud.values,
        fields=cloud.fields,
        point_step=cloud.point_step,
        row_step=cloud.row_step,
        height=max(cloud.height, 1),
        big_endian=cloud.big,
    )
    if cloud.height * cloud.width:
        assert packed.data.tobytes() == oracle  # encoder agrees with the struct oracle
    msg_types = [cloud.message(oracle), cloud.message(array.array("B", oracle)), packed]
    if cloud.height * cloud.width:
        msg_types.append(packed_to_msg(None, packed))
    for msg in msg_types:
        fields = decode_fields(msg)
        assert list(fields) == [f.name for f in cloud.fields]
        for name, want in cloud.values.items():
            assert_bitwise_equal(fields[name], want)
    grid = decode_fields(cloud.message(oracle), organized=True)
    for name, want in cloud.values.items():
        assert grid[name].shape == (cloud.height, cloud.width, *want.shape[1:])
        assert_bitwise_equal(grid[name].reshape(want.shape), want)


@SETTINGS
@given(cloud=random_clouds(xyz=True))
def test_property_read_points_matches_fields(cloud: RandomCloud) -> None:
    msg = cloud.message(cloud.oracle_bytes())
    scan = read_points(msg)
    want = (
        np.stack([cloud.values[c] for c in "xyz"], axis=1)
        if cloud.values["x"].size
        else np.empty((0, 3))
    )
    with np.errstate(over="ignore", invalid="ignore"):
        want32 = want.astype(np.float32)
    assert scan.xyz.dtype == np.float32 and scan.xyz.shape == (cloud.height * cloud.width, 3)
    np.testing.assert_array_equal(scan.xyz, want32)  # NaN == NaN here
    np.testing.assert_array_equal(finite_mask(scan.xyz), np.isfinite(want32).all(axis=1))


MUTATIONS = [
    "truncate",
    "extend",
    "offset_past_end",
    "unknown_datatype",
    "count_zero",
    "count_huge",
    "point_step_zero",
    "point_step_huge",
    "row_step_short",
    "height_plus_one",
    "zero_dim_with_data",
    "duplicate_name",
    "negative_value",
    "non_integer",
    "bad_data_type",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cloud=random_clouds(min_points=1), mutation=st.sampled_from(MUTATIONS), data=st.data())
def test_property_corruptions_raise_format_error(
    cloud: RandomCloud, mutation: str, data: st.DataObject
) -> None:
    raw = cloud.oracle_bytes()
    msg = cloud.message(raw)
    parse_layout(msg)
    i = data.draw(st.integers(0, len(msg.fields) - 1))
    f = msg.fields[i]
    if mutation == "truncate":
        msg.data = raw[: len(raw) - data.draw(st.integers(1, len(raw)))]
    elif mutation == "extend":
        msg.data = raw + bytes(data.draw(st.integers(1, 64)))
    elif mutation == "offset_past_end":
        f.offset = (
            cloud.point_step - ITEMSIZE[f.datatype] * f.count + data.draw(st.integers(1, 2**33))
        )
    elif mutation == "unknown_datatype":
        f.datatype = data.draw(st.sampled_from([0, 9, 17, 255, 2**31]))
    elif mutation == "count_zero":
        f.count = 0
    elif mutation == "count_huge":
        f.count = data.draw(st.integers(cloud.point_step + 1, 2**32))
    elif mutation == "point_step_zero":
        msg.point_step = 0
    elif mutation == "point_step_huge":
        msg.point_step = data.draw(st.integers(cloud.row_step + 1, 2**40))
    elif mutation == "row_step_short":
        msg.row_step = cloud.width * cloud.point_step - data.draw(
            st.integers(1, cloud.width * cloud.point_step)
        )
    elif mutation == "height_plus_one":
        msg.height = cloud.height + data.draw(st.integers(1, 3))
    elif mutation == "zero_dim_with_data":
        setattr(msg, data.draw(st.sampled_from(["height", "width"])), 0)
    elif mutation == "duplicate_name":
        msg.fields.append(SimpleNamespace(**vars(msg.fields[i])))
    elif mutation == "negative_value":
        target = data.draw(st.sampled_from(["height", "width", "point_step", "row_step", "field"]))
        if target == "field":
            setattr(
                f,
                data.draw(st.sampled_from(["offset", "datatype", "count"])),
                -data.draw(st.integers(1, 9)),
            )
        else:
            setattr(msg, target, -data.draw(st.integers(1, 9)))
    elif mutation == "non_integer":
        bad = data.draw(st.sampled_from([None, 1.5, "4", True, [1]]))
        target = data.draw(st.sampled_from(["width", "row_step", "offset", "datatype", "count"]))
        setattr(f if target in ("offset", "datatype", "count") else msg, target, bad)
    elif mutation == "bad_data_type":
        msg.data = data.draw(st.sampled_from([None, "text", 42, 1.0, object(), [1, 2, -3]]))
    for decode in (parse_layout, decode_fields, read_points):
        with pytest.raises(PointCloudFormatError):
            decode(msg)


@settings(max_examples=400, deadline=None)
@given(
    height=st.integers(0, 4),
    width=st.integers(0, 6),
    point_step=st.integers(0, 40),
    row_step=st.integers(0, 200),
    fields=st.lists(
        st.tuples(
            st.sampled_from(["x", "y", "z", "i", "_"]),
            st.integers(0, 40),
            st.integers(0, 10),
            st.integers(0, 4),
        ),
        max_size=5,
    ),
    data=st.binary(max_size=300),
    big=st.booleans(),
)
def test_property_arbitrary_input_never_crashes(
    height: int, width: int, point_step: int, row_step: int, fields: list, data: bytes, big: bool
) -> None:
    msg = SimpleNamespace(
        height=height,
        width=width,
        point_step=point_step,
        row_step=row_step,
        fields=[SimpleNamespace(name=n, offset=o, datatype=d, count=c) for n, o, d, c in fields],
        data=data,
        is_bigendian=big,
        is_dense=False,
    )
    try:
        decoded = decode_fields(msg)
    except PointCloudFormatError as e:
        assert str(e)
        event("rejected")
        return
    event("decoded")
    n = height * width
    assert len(data) == (height * row_step if n else 0)
    for name, a in decoded.items():
        spec = next(f for f in fields if f[0] == name)
        assert a.shape == ((n,) if spec[3] == 1 else (n, spec[3]))
    try:
        scan = read_points(msg)
    except PointCloudFormatError as e:
        assert "lacks field" in str(e) or "count" in str(e)
    else:
        assert scan.xyz.shape == (n, 3)
