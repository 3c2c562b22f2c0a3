"""PointCloud2 <-> numpy codec for any field layout, without rclpy.

Decoding works on anything shaped like ``sensor_msgs/msg/PointCloud2`` (attributes ``height``,
``width``, ``fields`` with ``name``/``offset``/``datatype``/``count``, ``is_bigendian``,
``point_step``, ``row_step``, ``data``, ``is_dense``). ``data`` may be ``bytes``, ``bytearray``,
``memoryview``, ``array.array('B')`` (what rclpy delivers) or a ``numpy`` array (what rosbags
delivers). The layout is validated once, then the points are exposed as a numpy structured array
*over the message buffer* (``itemsize == point_step``, one named field per PointField), so field
access is zero-copy. A copy is made only when rows carry padding (``row_step > width*point_step``)
and a flat ``[N]`` view is asked for on an organized cloud (``height > 1``).

Encoding fills a structured array written straight into an ``array.array('B')`` (no per-point
Python loops) and hands that buffer to ``sensor_msgs.msg.PointCloud2``; ``sensor_msgs`` is imported
lazily inside the functions that build messages, so the rest of the module needs only numpy.

Every malformed input raises :class:`PointCloudFormatError` (a ``ValueError``) whose message names
the offending entry. Decoded arrays are read-only (they may alias the message); pass ``copy=True``
to get owned, writable, contiguous arrays.
"""

from __future__ import annotations

import array
import functools
import operator
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

if TYPE_CHECKING:  # pragma: no cover - typing only
    from sensor_msgs.msg import PointCloud2

__all__ = [
    "DATATYPE_TO_DTYPE",
    "FLOAT32",
    "FLOAT64",
    "INT8",
    "INT16",
    "INT32",
    "LABELED_FIELDS",
    "LABELED_POINT_STEP",
    "SCAN_FIELD_ALIASES",
    "TIME_FIELD_SCALE",
    "UINT8",
    "UINT16",
    "UINT32",
    "CloudLayout",
    "FieldSpec",
    "PackedCloud",
    "PointCloudFormatError",
    "ScanArrays",
    "arrays_to_msg",
    "decode_fields",
    "drop_non_finite",
    "finite_mask",
    "labeled_cloud_to_msg",
    "pack_arrays",
    "pack_labeled_cloud",
    "pack_rgb",
    "packed_to_msg",
    "parse_layout",
    "read_points",
    "structured_view",
    "unpack_rgb",
]

# sensor_msgs/msg/PointField datatype constants (duplicated so the core needs no ROS import).
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)

#: PointField datatype -> numpy scalar type (byte order is applied per message).
DATATYPE_TO_DTYPE: Mapping[int, np.dtype] = MappingProxyType(
    {
        INT8: np.dtype(np.int8),
        UINT8: np.dtype(np.uint8),
        INT16: np.dtype(np.int16),
        UINT16: np.dtype(np.uint16),
        INT32: np.dtype(np.int32),
        UINT32: np.dtype(np.uint32),
        FLOAT32: np.dtype(np.float32),
        FLOAT64: np.dtype(np.float64),
    }
)
_DATATYPE_NAMES = {
    INT8: "INT8",
    UINT8: "UINT8",
    INT16: "INT16",
    UINT16: "UINT16",
    INT32: "INT32",
    UINT32: "UINT32",
    FLOAT32: "FLOAT32",
    FLOAT64: "FLOAT64",
}
_NUMPY_TO_DATATYPE = {dt.str[1:]: code for code, dt in DATATYPE_TO_DTYPE.items()}

#: PCL names padding entries "_"; they are validated but never decoded and may repeat.
PADDING_FIELD = "_"

#: Field-name aliases for :func:`read_points`, in priority order (first present wins).
#: Velodyne XYZIRT: intensity f32, ring u16, time f32 (s). Ouster: intensity f32 or
#: reflectivity/signal u16/u32, ring u8/u16, t u32 (ns). Hesai/Pandar: intensity f32 or u8, ring
#: u16, timestamp f64 (s). Livox: intensity f32 or reflectivity u8, line (ring), timestamp f64
#: (ns in livox_ros_driver2) or offset_time u32 (ns). Autoware XYZIRC: intensity u8, channel u16.
SCAN_FIELD_ALIASES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "intensity": ("intensity", "reflectivity", "signal", "reflectance", "i"),
        "ring": ("ring", "channel", "line", "laser_id"),
        "time": ("time", "t", "timestamp", "offset_time"),
    }
)

#: Factor that turns a time field into seconds; ``None`` means "seconds, unless the magnitude
#: says nanoseconds" (any |value| > 1e12 cannot be seconds: that is 31,000 years).
TIME_FIELD_SCALE: Mapping[str, float | None] = MappingProxyType(
    {"time": 1.0, "t": 1e-9, "timestamp": None, "offset_time": 1e-9}
)
_AUTO_NS_THRESHOLD = 1e12


class PointCloudFormatError(ValueError):
    """A PointCloud2 (or arrays given to the encoder) does not describe a valid point layout."""


class FieldSpec(NamedTuple):
    """One PointField: ``count`` values of ``datatype`` at byte ``offset`` inside a point."""

    name: str
    offset: int
    datatype: int
    count: int = 1

    @property
    def nbytes(self) -> int:
        """Bytes the field occupies inside one point."""
        return DATATYPE_TO_DTYPE[self.datatype].itemsize * self.count


@dataclass(frozen=True)
class CloudLayout:
    """Validated geometry of a cloud: everything except the point bytes."""

    fields: tuple[FieldSpec, ...]
    height: int
    width: int
    point_step: int
    row_step: int
    is_bigendian: bool
    is_dense: bool

    @property
    def num_points(self) -> int:
        """``height * width``."""
        return self.height * self.width

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the (possibly organized) cloud."""
        return (self.height, self.width)

    @property
    def has_row_padding(self) -> bool:
        """True when rows hold bytes beyond ``width * point_step``."""
        return self.row_step != self.width * self.point_step

    @property
    def names(self) -> tuple[str, ...]:
        """Decoded field names (padding entries excluded), in message order."""
        return tuple(f.name for f in self.fields if f.name != PADDING_FIELD)

    def field(self, name: str) -> FieldSpec | None:
        """The field called ``name``, or None."""
        for f in self.fields:
            if f.name == name:
                return f
        return None

    @property
    def dtype(self) -> np.dtype:
        """Structured dtype of one point (``itemsize == point_step``, message byte order)."""
        return _structured_dtype(
            tuple(f for f in self.fields if f.name != PADDING_FIELD),
            self.point_step,
            self.is_bigendian,
        )


@dataclass(frozen=True)
class ScanArrays:
    """The per-point arrays a LiDAR pipeline needs, in canonical names and dtypes.

    ``xyz`` is ``[N, 3]`` in the requested float dtype; ``intensity`` is ``[N]`` in that dtype;
    ``ring`` is ``[N]`` int32 (torch has no good uint16); ``time`` is ``[N]`` float64 seconds (as
    the driver defines it: relative for Velodyne/Ouster/Livox offsets, absolute for Hesai).
    Missing quantities are None. ``shape`` is the source cloud's ``(height, width)``;
    ``source_fields`` maps each canonical name to the message field it came from.
    """

    xyz: np.ndarray
    intensity: np.ndarray | None = None
    ring: np.ndarray | None = None
    time: np.ndarray | None = None
    shape: tuple[int, int] = (1, 0)
    is_dense: bool = True
    source_fields: Mapping[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.xyz.shape[0])

    def select(self, index: np.ndarray | slice) -> ScanArrays:
        """Keep the points chosen by a boolean mask or an index array (result is unorganized)."""
        xyz = self.xyz[index]
        return replace(
            self,
            xyz=xyz,
            intensity=None if self.intensity is None else self.intensity[index],
            ring=None if self.ring is None else self.ring[index],
            time=None if self.time is None else self.time[index],
            shape=(1, int(xyz.shape[0])),
        )


@dataclass
class PackedCloud:
    """Encoded points without sensor_msgs: duck-typed like a PointCloud2, so it also decodes."""

    fields: tuple[FieldSpec, ...]
    height: int
    width: int
    point_step: int
    row_step: int
    is_bigendian: bool
    data: array.array
    is_dense: bool


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _as_count(value: Any, what: str) -> int:
    """``value`` as a non-negative Python int (rejects bool, float, None, negatives)."""
    if isinstance(value, bool):
        raise PointCloudFormatError(f"{what} must be an integer, got bool {value!r}")
    try:
        out = operator.index(value)
    except TypeError:
        raise PointCloudFormatError(
            f"{what} must be an integer, got {type(value).__name__} {value!r}"
        ) from None
    if out < 0:
        raise PointCloudFormatError(f"{what} must be >= 0, got {out}")
    return out


def _get(obj: Any, attr: str, what: str) -> Any:
    try:
        return getattr(obj, attr)
    except AttributeError:
        raise PointCloudFormatError(f"{what} has no attribute {attr!r}") from None


def _validate_fields(raw_fields: Any, point_step: int) -> tuple[FieldSpec, ...]:
    """Check every field (name, datatype, count, extent) and return them as FieldSpecs."""
    if isinstance(raw_fields, (str, bytes)) or not isinstance(raw_fields, Iterable):
        raise PointCloudFormatError(
            f"fields must be a sequence of PointField, got {type(raw_fields).__name__}"
        )
    specs: list[FieldSpec] = []
    seen: set[str] = set()
    for i, f in enumerate(raw_fields):
        what = f"field #{i}"
        name = _get(f, "name", what)
        if not isinstance(name, str):
            raise PointCloudFormatError(
                f"{what}: name must be a str, got {type(name).__name__} {name!r}"
            )
        if not name:
            raise PointCloudFormatError(f"{what}: empty field name")
        what = f"field {name!r}"
        offset = _as_count(_get(f, "offset", what), f"{what} offset")
        datatype = _as_count(_get(f, "datatype", what), f"{what} datatype")
        count = _as_count(_get(f, "count", what), f"{what} count")
        if datatype not in DATATYPE_TO_DTYPE:
            raise PointCloudFormatError(
                f"{what}: unknown datatype {datatype} (PointField knows 1..8: "
                + ", ".join(f"{v}={k}" for k, v in _DATATYPE_NAMES.items())
                + ")"
            )
        if count == 0:
            raise PointCloudFormatError(f"{what}: count is 0 (a field holds at least one value)")
        spec = FieldSpec(name, offset, datatype, count)
        end = offset + spec.nbytes
        if end > point_step:
            raise PointCloudFormatError(
                f"{what}: {_DATATYPE_NAMES[datatype]} x {count} at offset {offset} ends at byte "
                f"{end}, past point_step {point_step}"
            )
        if name != PADDING_FIELD:
            if name in seen:
                raise PointCloudFormatError(f"duplicate field name {name!r}")
            seen.add(name)
        specs.append(spec)
    return tuple(specs)


def _buffer_u8(data: Any) -> np.ndarray:
    """The message bytes as a 1-D uint8 array, zero-copy for every contiguous buffer."""
    if isinstance(data, np.ndarray):
        if data.dtype.hasobject:
            raise PointCloudFormatError("data must hold bytes, got an object array")
        flat = np.ascontiguousarray(data).reshape(-1)
        return flat.view(np.uint8)
    if isinstance(data, (str, int, float)) or data is None:
        raise PointCloudFormatError(f"data must be a bytes-like buffer, got {type(data).__name__}")
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError, BufferError):
        pass
    if isinstance(data, memoryview):  # non-contiguous view: one copy
        return np.frombuffer(data.tobytes(), dtype=np.uint8)
    if isinstance(data, (list, tuple)):
        try:
            ints = np.asarray(data, dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            ints = None
        if (
            ints is not None
            and ints.ndim == 1
            and (ints.size == 0 or (ints.min() >= 0 and ints.max() < 256))
        ):
            return ints.astype(np.uint8)
        raise PointCloudFormatError("data given as a list must hold integers in [0, 255]")
    raise PointCloudFormatError(f"data must be a bytes-like buffer, got {type(data).__name__}")


def _parse(msg: Any) -> tuple[CloudLayout, np.ndarray]:
    """Validate ``msg`` and return its layout and its bytes (uint8, zero-copy)."""
    height = _as_count(_get(msg, "height", "cloud"), "height")
    width = _as_count(_get(msg, "width", "cloud"), "width")
    point_step = _as_count(_get(msg, "point_step", "cloud"), "point_step")
    row_step = _as_count(_get(msg, "row_step", "cloud"), "row_step")
    is_bigendian = bool(_get(msg, "is_bigendian", "cloud"))
    is_dense = bool(getattr(msg, "is_dense", False))
    fields = _validate_fields(_get(msg, "fields", "cloud"), point_step)
    buf = _buffer_u8(_get(msg, "data", "cloud"))
    n_points = height * width
    if n_points == 0:
        if buf.size:
            raise PointCloudFormatError(
                f"height x width is {height} x {width} = 0 points but data holds {buf.size} bytes"
            )
    else:
        if point_step == 0:
            raise PointCloudFormatError(f"point_step is 0 for {n_points} points")
        if not fields:
            raise PointCloudFormatError(f"cloud has {n_points} points but no fields")
        if row_step < width * point_step:
            raise PointCloudFormatError(
                f"row_step {row_step} < width {width} x point_step {point_step} "
                f"= {width * point_step}"
            )
        if buf.size != height * row_step:
            raise PointCloudFormatError(
                f"data holds {buf.size} bytes but height {height} x row_step {row_step} "
                f"= {height * row_step}"
            )
    layout = CloudLayout(fields, height, width, point_step, row_step, is_bigendian, is_dense)
    return layout, buf


def parse_layout(msg: Any) -> CloudLayout:
    """Validate a PointCloud2-like object and describe its layout (raises PointCloudFormatError)."""
    return _parse(msg)[0]


@functools.lru_cache(maxsize=128)
def _structured_dtype(fields: tuple[FieldSpec, ...], point_step: int, big: bool) -> np.dtype:
    order = ">" if big else "<"
    formats: list[Any] = []
    for f in fields:
        base = DATATYPE_TO_DTYPE[f.datatype].newbyteorder(order)
        formats.append(base if f.count == 1 else (base, (f.count,)))
    return np.dtype(
        {
            "names": [f.name for f in fields],
            "formats": formats,
            "offsets": [f.offset for f in fields],
            "itemsize": point_step,
        }
    )


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def _flat_bytes(layout: CloudLayout, buf: np.ndarray) -> np.ndarray:
    """``N * point_step`` contiguous bytes of the points; copies only for padded organized rows."""
    n, step = layout.num_points, layout.point_step
    if layout.height <= 1 or not layout.has_row_padding:
        return buf[: n * step]
    rows = buf.reshape(layout.height, layout.row_step)[:, : layout.width * step]
    return np.ascontiguousarray(rows).reshape(-1)


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _view(layout: CloudLayout, buf: np.ndarray, organized: bool) -> np.ndarray:
    dt = layout.dtype
    if layout.num_points == 0:
        return _readonly(np.empty(layout.shape if organized else (0,), dtype=dt))
    if organized:
        out = np.ndarray(
            layout.shape, dtype=dt, buffer=buf, strides=(layout.row_step, layout.point_step)
        )
        return _readonly(out)
    return _readonly(_flat_bytes(layout, buf).view(dt))


def structured_view(msg: Any, *, organized: bool = False) -> np.ndarray:
    """All points as one structured array over the message buffer.

    ``[N]`` (row-major, ``N = height * width``) by default, ``[height, width]`` when ``organized``
    (always zero-copy, strided over any row padding). Padding fields named ``_`` are left out.
    """
    layout, buf = _parse(msg)
    return _view(layout, buf, organized)


def decode_fields(
    msg: Any, *, organized: bool = False, copy: bool = False
) -> dict[str, np.ndarray]:
    """Every field as its own array: ``[N]`` (or ``[N, count]`` when ``count > 1``).

    Arrays keep the message's datatype and byte order and are read-only views of its buffer
    (unless a copy was needed for row padding). ``organized=True`` gives ``[height, width, ...]``;
    ``copy=True`` gives owned, writable, contiguous native-endian arrays.
    """
    layout, buf = _parse(msg)
    points = _view(layout, buf, organized)
    out: dict[str, np.ndarray] = {}
    for name in layout.names:
        a = points[name]
        if copy:
            a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("="))
        out[name] = a
    return out


def _first_scalar(layout: CloudLayout, names: Sequence[str]) -> FieldSpec | None:
    """First field named in ``names`` that holds one value per point (count > 1 is skipped)."""
    for name in names:
        f = layout.field(name)
        if f is not None and name != PADDING_FIELD and f.count == 1:
            return f
    return None


def _time_seconds(values: np.ndarray, name: str) -> np.ndarray:
    t = values.astype(np.float64)
    scale = TIME_FIELD_SCALE.get(name)
    if scale is None:
        finite = t[np.isfinite(t)]
        scale = 1e-9 if finite.size and float(np.abs(finite).max()) > _AUTO_NS_THRESHOLD else 1.0
    if scale != 1.0:
        t *= scale
    return t


def read_points(
    msg: Any,
    dtype: DTypeLike = np.float32,
    *,
    aliases: Mapping[str, Sequence[str]] = SCAN_FIELD_ALIASES,
    copy: bool = False,
) -> ScanArrays:
    """Decode xyz (+ intensity, ring, time when present) from any LiDAR layout.

    ``x``, ``y``, ``z`` are required (an empty cloud may lack them). Other quantities are taken
    from the first field named in ``aliases[role]`` (see :data:`SCAN_FIELD_ALIASES`) that has
    ``count == 1``. When x, y, z are consecutive float32 in native byte order and ``dtype`` is
    float32, ``xyz`` is a zero-copy strided view; likewise ``intensity`` when it already has
    ``dtype``. ``copy=True`` returns owned, writable, contiguous arrays instead.
    """
    out_dtype = np.dtype(dtype)
    if out_dtype.kind != "f":
        raise ValueError(f"read_points dtype must be a float type, got {out_dtype}")
    layout, buf = _parse(msg)
    n = layout.num_points
    xyz_fields = [layout.field(c) for c in "xyz"]
    missing = [c for c, f in zip("xyz", xyz_fields) if f is None]
    if missing:
        if n == 0:
            return ScanArrays(np.empty((0, 3), out_dtype), shape=layout.shape, is_dense=True)
        present = ", ".join(layout.names) or "none"
        raise PointCloudFormatError(
            f"cloud lacks field(s) {', '.join(missing)} (fields present: {present})"
        )
    fx, fy, fz = xyz_fields  # type: ignore[misc]
    for f in (fx, fy, fz):
        if f.count != 1:
            raise PointCloudFormatError(f"field {f.name!r} has count {f.count}, expected 1")

    raw = _flat_bytes(layout, buf) if n else buf[:0]
    points = _readonly(raw.view(layout.dtype)) if n else _view(layout, buf, False)
    native = layout.is_bigendian == (sys.byteorder == "big")
    if (
        n
        and not copy
        and native
        and out_dtype == np.float32
        and all(f.datatype == FLOAT32 for f in (fx, fy, fz))
        and fy.offset == fx.offset + 4
        and fz.offset == fx.offset + 8
    ):
        xyz = _readonly(
            np.ndarray(
                (n, 3), np.float32, buffer=raw, offset=fx.offset, strides=(layout.point_step, 4)
            )
        )
    else:
        xyz = np.empty((n, 3), out_dtype)
        with np.errstate(over="ignore", invalid="ignore"):
            for j, f in enumerate((fx, fy, fz)):
                xyz[:, j] = points[f.name]

    sources: dict[str, str] = {}
    intensity = ring = time = None
    with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values become inf / wrap
        f = _first_scalar(layout, aliases.get("intensity", ()))
        if f is not None:
            sources["intensity"] = f.name
            intensity = points[f.name].astype(out_dtype, copy=copy)
        f = _first_scalar(layout, aliases.get("ring", ()))
        if f is not None:
            sources["ring"] = f.name
            ring = points[f.name].astype(np.int32)
        f = _first_scalar(layout, aliases.get("time", ()))
        if f is not None:
            sources["time"] = f.name
            time = _time_seconds(points[f.name], f.name)
    return ScanArrays(
        xyz=xyz,
        intensity=intensity,
        ring=ring,
        time=time,
        shape=layout.shape,
        is_dense=layout.is_dense,
        source_fields=sources,
    )


def finite_mask(xyz: ArrayLike) -> np.ndarray:
    """Boolean ``[N]``: True where all three coordinates are finite (not NaN/Inf)."""
    a = np.asarray(xyz)
    if a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"xyz must be [N, 3], got shape {a.shape}")
    return np.isfinite(a).all(axis=1)


def drop_non_finite(scan: ScanArrays) -> ScanArrays:
    """The scan without points whose xyz has NaN/Inf (is_dense=False clouds, organized holes).

    Use :func:`finite_mask` first when the kept indices are needed to map results back.
    """
    mask = finite_mask(scan.xyz)
    if mask.all():
        return replace(scan, shape=(1, len(scan)), is_dense=True)
    return replace(scan.select(mask), is_dense=True)


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------

#: The labeled output layout (little-endian, 4-byte aligned, 2 bytes padding after ``label``).
LABELED_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("x", 0, FLOAT32),
    FieldSpec("y", 4, FLOAT32),
    FieldSpec("z", 8, FLOAT32),
    FieldSpec("intensity", 12, FLOAT32),
    FieldSpec("label", 16, UINT16),
    FieldSpec("score", 20, FLOAT32),
    FieldSpec("rgb", 24, FLOAT32),
)
LABELED_POINT_STEP = 28


def pack_rgb(colors: ArrayLike) -> np.ndarray:
    """``[N, 3]`` uint8 RGB -> ``[N]`` float32 holding the bits of ``0x00RRGGBB`` (PCL/RViz rgb)."""
    c = np.asarray(colors)
    if c.ndim != 2 or c.shape[1] != 3:
        raise PointCloudFormatError(f"colors must be [N, 3], got shape {c.shape}")
    if c.dtype != np.uint8:
        if c.dtype.kind not in "iu":
            raise PointCloudFormatError(f"colors must be integers in [0, 255], got {c.dtype}")
        if c.size and (c.min() < 0 or c.max() > 255):
            raise PointCloudFormatError("colors must be integers in [0, 255]")
    # Bytes B, G, R, 0 of a little-endian uint32 are 0x00RRGGBB: three strided uint8 copies.
    quad = np.zeros((c.shape[0], 4), np.uint8)
    quad[:, 0] = c[:, 2]
    quad[:, 1] = c[:, 1]
    quad[:, 2] = c[:, 0]
    return quad.view("<u4").reshape(-1).astype(np.uint32, copy=False).view(np.float32)


def unpack_rgb(rgb: ArrayLike) -> np.ndarray:
    """Inverse of :func:`pack_rgb`: ``[N]`` float32 (or uint32) packed rgb -> ``[N, 3]`` uint8."""
    a = np.asarray(rgb)
    if a.dtype.itemsize != 4 or a.dtype.kind not in "fiu":
        raise PointCloudFormatError(f"packed rgb must be 4-byte values, got {a.dtype}")
    flat = np.ascontiguousarray(a).reshape(-1)
    order = flat.dtype.byteorder if flat.dtype.byteorder in "<>" else "="
    bits = flat.view(np.dtype(np.uint32).newbyteorder(order)).astype(np.uint32)  # bit-exact
    out = np.empty((bits.shape[0], 3), np.uint8)
    out[:, 0] = (bits >> 16) & 0xFF
    out[:, 1] = (bits >> 8) & 0xFF
    out[:, 2] = bits & 0xFF
    return out


def _datatype_of(name: str, dt: np.dtype) -> int:
    if dt == np.bool_:
        return UINT8
    code = _NUMPY_TO_DATATYPE.get(dt.newbyteorder("<").str[1:])
    if code is None:
        raise PointCloudFormatError(
            f"array {name!r} has dtype {dt}, which no PointField datatype holds "
            "(use int8/16/32, uint8/16/32, float32 or float64)"
        )
    return code


def _auto_layout(arrays: Mapping[str, np.ndarray]) -> tuple[tuple[FieldSpec, ...], int]:
    """Fields in the given order, each aligned to its item size; point_step padded likewise."""
    specs, offset, align = [], 0, 1
    for name, a in arrays.items():
        code = _datatype_of(name, a.dtype)
        size = DATATYPE_TO_DTYPE[code].itemsize
        offset = -(-offset // size) * size
        count = 1 if a.ndim == 1 else int(a.shape[1])
        specs.append(FieldSpec(name, offset, code, count))
        offset += size * count
        align = max(align, size)
    return tuple(specs), -(-offset // align) * align


def _check_cast(name: str, a: np.ndarray, target: np.dtype) -> None:
    """Refuse casts that lose meaning silently: float->int, or integers out of range."""
    kind = a.dtype.kind
    if kind not in "biuf":
        raise PointCloudFormatError(f"array {name!r} has non-numeric dtype {a.dtype}")
    if target.kind in "iu":
        if kind == "f":
            raise PointCloudFormatError(
                f"array {name!r} is {a.dtype} but field is {target.name}: round it explicitly"
            )
        if kind in "iu" and a.size:
            info = np.iinfo(target)
            lo, hi = int(a.min()), int(a.max())
            if lo < info.min or hi > info.max:
                raise PointCloudFormatError(
                    f"array {name!r} has values in [{lo}, {hi}], outside {target.name} "
                    f"[{info.min}, {info.max}]"
                )


def pack_arrays(
    arrays: Mapping[str, ArrayLike],
    *,
    fields: Sequence[Any] | None = None,
    point_step: int | None = None,
    row_step: int | None = None,
    height: int = 1,
    big_endian: bool = False,
    is_dense: bool | None = None,
) -> PackedCloud:
    """Encode named per-point arrays into PointCloud2 bytes, without sensor_msgs.

    Each array is ``[N]`` or ``[N, count]``. Without ``fields`` the layout follows the mapping
    order with natural alignment; with ``fields`` (FieldSpec or PointField-like, names matching the
    arrays; ``_`` entries are padding) the given offsets/datatypes are used and values are cast to
    them. ``height > 1`` makes an organized cloud (``N`` must divide). ``row_step`` may exceed
    ``width * point_step`` (rows get zero padding). ``is_dense`` defaults to "x, y, z all finite".
    """
    if not isinstance(arrays, Mapping):
        raise PointCloudFormatError(f"arrays must be a mapping name -> array, got {type(arrays)}")
    arrs: dict[str, np.ndarray] = {}
    n: int | None = None
    for name, value in arrays.items():
        if not isinstance(name, str) or not name or name == PADDING_FIELD:
            raise PointCloudFormatError(f"invalid field name {name!r}")
        a = np.asarray(value)
        if a.ndim not in (1, 2) or (a.ndim == 2 and a.shape[1] == 0):
            raise PointCloudFormatError(f"array {name!r} must be [N] or [N, count], got {a.shape}")
        if n is None:
            n = int(a.shape[0])
        elif a.shape[0] != n:
            raise PointCloudFormatError(f"array {name!r} has {a.shape[0]} points, expected {n}")
        arrs[name] = a
    n = n or 0
    height = _as_count(height, "height")
    if height == 0 or n % height:
        raise PointCloudFormatError(f"{n} points cannot form {height} rows")
    width = n // height

    if fields is None:
        specs, auto_step = _auto_layout(arrs)
        for spec in specs:
            _check_cast(spec.name, arrs[spec.name], DATATYPE_TO_DTYPE[spec.datatype])
        step = auto_step if point_step is None else _as_count(point_step, "point_step")
        specs = _validate_fields(specs, step)
    else:
        specs = _validate_fields(fields, sys.maxsize)  # extents checked against step below
        if point_step is None:
            step = max((f.offset + f.nbytes for f in specs), default=0)
        else:
            step = _as_count(point_step, "point_step")
        specs = _validate_fields(specs, step)
        names = {f.name for f in specs if f.name != PADDING_FIELD}
        if names != set(arrs):
            raise PointCloudFormatError(
                f"fields {sorted(names)} do not match arrays {sorted(arrs)}: "
                f"missing {sorted(names - set(arrs))}, extra {sorted(set(arrs) - names)}"
            )
        for spec in specs:
            if spec.name == PADDING_FIELD:
                continue
            a = arrs[spec.name]
            got = 1 if a.ndim == 1 else a.shape[1]
            if got != spec.count or (spec.count > 1 and a.ndim == 1):
                raise PointCloudFormatError(
                    f"array {spec.name!r} has {got} values per point, field count is {spec.count}"
                )
            _check_cast(spec.name, a, DATATYPE_TO_DTYPE[spec.datatype])
    if n and step == 0:
        raise PointCloudFormatError("point_step is 0")
    rstep = width * step if row_step is None else _as_count(row_step, "row_step")
    if rstep < width * step:
        raise PointCloudFormatError(f"row_step {rstep} < width {width} x point_step {step}")

    nbytes = height * rstep if n else 0
    data = array.array("B", [0]) * nbytes
    if n:
        live = tuple(f for f in specs if f.name != PADDING_FIELD)
        dt = _structured_dtype(live, step, bool(big_endian))
        out = np.ndarray(
            (height, width), dtype=dt, buffer=np.frombuffer(data, np.uint8), strides=(rstep, step)
        )
        for spec in live:
            a = arrs[spec.name]
            out[spec.name] = a.reshape((height, width, *a.shape[1:]))
    if is_dense is None:  # integer coordinates are always finite
        is_dense = not all(c in arrs for c in "xyz") or all(
            arrs[c].dtype.kind != "f" or bool(np.isfinite(arrs[c]).all()) for c in "xyz"
        )
    return PackedCloud(
        fields=specs,
        height=height,
        width=width,
        point_step=step,
        row_step=rstep if n else width * step,
        is_bigendian=bool(big_endian),
        data=data,
        is_dense=bool(is_dense),
    )


def _per_point(name: str, value: ArrayLike | None, n: int, fill: float) -> np.ndarray:
    if value is None:
        return np.full(n, fill, np.float32)
    a = np.asarray(value)
    if a.shape != (n,):
        raise PointCloudFormatError(f"{name} must have shape ({n},), got {a.shape}")
    return a


def pack_labeled_cloud(
    xyz: ArrayLike,
    intensity: ArrayLike | None,
    label: ArrayLike,
    score: ArrayLike | None,
    rgb: ArrayLike | None,
    *,
    height: int = 1,
) -> PackedCloud:
    """Bytes of the labeled layout :data:`LABELED_FIELDS` (see :func:`labeled_cloud_to_msg`)."""
    xyz_a = np.asarray(xyz)
    if xyz_a.ndim != 2 or xyz_a.shape[1] != 3:
        raise PointCloudFormatError(f"xyz must be [N, 3], got shape {xyz_a.shape}")
    n = int(xyz_a.shape[0])
    lab = np.asarray(label)
    if lab.shape != (n,):
        raise PointCloudFormatError(f"label must have shape ({n},), got {lab.shape}")
    if rgb is None:
        rgb_a = np.zeros(n, np.float32)
    else:
        rgb_a = np.asarray(rgb)
        if rgb_a.ndim == 2:
            if rgb_a.shape[0] != n:
                raise PointCloudFormatError(f"rgb must have {n} rows, got {rgb_a.shape}")
            rgb_a = pack_rgb(rgb_a)
        elif rgb_a.shape != (n,):
            raise PointCloudFormatError(
                f"rgb must be [N] packed or [N, 3] uint8, got {rgb_a.shape}"
            )
        elif rgb_a.dtype.kind in "iu":  # already packed as integers 0x00RRGGBB
            if n and (int(rgb_a.min()) < 0 or int(rgb_a.max()) > 0xFFFFFF):
                raise PointCloudFormatError("packed integer rgb must lie in [0, 0xFFFFFF]")
            rgb_a = rgb_a.astype(np.uint32).view(np.float32)
        elif rgb_a.dtype != np.float32:
            raise PointCloudFormatError(f"packed rgb must be float32 bits, got {rgb_a.dtype}")
    arrays = {
        "x": xyz_a[:, 0],
        "y": xyz_a[:, 1],
        "z": xyz_a[:, 2],
        "intensity": _per_point("intensity", intensity, n, 0.0),
        "label": lab,
        "score": _per_point("score", score, n, 0.0),
        "rgb": rgb_a,
    }
    dense = xyz_a.dtype.kind != "f" or bool(np.isfinite(xyz_a).all())  # one pass over [N, 3]
    return pack_arrays(
        arrays,
        fields=LABELED_FIELDS,
        point_step=LABELED_POINT_STEP,
        height=height,
        is_dense=dense,
    )


def _header_or_default(header: Any) -> Any:
    from std_msgs.msg import Header

    if header is None:
        return Header()
    if not isinstance(header, Header):
        raise TypeError(f"header must be a std_msgs.msg.Header, got {type(header).__name__}")
    return header


def packed_to_msg(header: Any, packed: PackedCloud) -> PointCloud2:
    """Wrap encoded bytes into a ``sensor_msgs.msg.PointCloud2`` (the buffer is not copied).

    ``header`` (a ``std_msgs.msg.Header``, or None for an empty one) is assigned as-is.
    """
    from sensor_msgs.msg import PointCloud2, PointField

    try:  # Jazzy+: type-checked setters keep an array.array as-is instead of copying it
        msg = PointCloud2(check_fields=True)
    except (AssertionError, TypeError):  # older generators always check (and never copy)
        msg = PointCloud2()
    msg.header = _header_or_default(header)
    msg.height = int(packed.height)
    msg.width = int(packed.width)
    msg.fields = [
        PointField(name=f.name, offset=int(f.offset), datatype=int(f.datatype), count=int(f.count))
        for f in packed.fields
    ]
    msg.is_bigendian = bool(packed.is_bigendian)
    msg.point_step = int(packed.point_step)
    msg.row_step = int(packed.row_step)
    msg.data = packed.data
    msg.is_dense = bool(packed.is_dense)
    return msg


def labeled_cloud_to_msg(
    header: Any,
    xyz: ArrayLike,
    intensity: ArrayLike | None,
    label: ArrayLike,
    score: ArrayLike | None,
    rgb: ArrayLike | None,
    *,
    height: int = 1,
) -> PointCloud2:
    """Labeled points as a PointCloud2: x, y, z, intensity, score, rgb FLOAT32 and label UINT16.

    ``rgb`` is ``[N, 3]`` uint8 (packed here) or already packed ``[N]`` (float32 bits or uint32
    ``0x00RRGGBB``), so RViz's RGB8 colour transformer shows it. ``None`` fills intensity/score
    with 0 and rgb with black. Labels must fit uint16. ``is_dense`` is True when every xyz is
    finite. ``height > 1`` publishes an organized cloud (e.g. mirroring the input's shape).
    """
    return packed_to_msg(
        header, pack_labeled_cloud(xyz, intensity, label, score, rgb, height=height)
    )


def arrays_to_msg(
    header: Any,
    arrays: Mapping[str, ArrayLike],
    *,
    height: int = 1,
    is_dense: bool | None = None,
) -> PointCloud2:
    """Any named per-point arrays (e.g. ``x, y, z, score``) as a little-endian PointCloud2.

    Field order follows the mapping; datatypes follow the array dtypes (bool -> UINT8; 64-bit
    integers are refused). See :func:`pack_arrays` for explicit layouts.
    """
    return packed_to_msg(header, pack_arrays(arrays, height=height, is_dense=is_dense))
