"""rosbag2 bags without rosbag2: write, read and record MCAP / sqlite3 bags with `rosbags`.

Machines without a ROS 2 install (CI, laptops with only the PyPI rclpy wheels) still need bags:
a demo bag made from the bundled real frames to replay into the nodes, and a recorder to capture
what the nodes publish. Everything here works on raw CDR bytes, so it needs no rclpy; message
definitions and RIHS01 type hashes come from the `rosbags` Jazzy typestore, and types it does not
know are loaded from the `.msg` files installed under `share/<package>/msg/`.

Bags are rosbag2 directories (`metadata.yaml` + one storage file), metadata version 9 as written
by Jazzy's `ros2 bag record`, so `ros2 bag play` on a vehicle reads them too.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from .pointcloud import FLOAT32, UINT16, FieldSpec, pack_arrays

if TYPE_CHECKING:  # pragma: no cover - typing only
    from rosbags.interfaces import Connection
    from rosbags.typesys.store import Typestore

    from .frames import Frame

__all__ = [
    "BAG_VERSION",
    "DEMO_CAMERA_PREFIX",
    "DEMO_LIDAR_TOPIC",
    "STORAGES",
    "TF_STATIC_TOPIC",
    "BagError",
    "BagInfo",
    "BagMessage",
    "BagTopic",
    "BagWriter",
    "bag_output_path",
    "camera_topics",
    "default_typestore",
    "demo_cloud_fields",
    "ensure_msgtype",
    "make_qos",
    "read_bag_info",
    "read_bag_messages",
    "rotation_to_quaternion",
    "write_demo_bag",
]

#: rosbag2 metadata version written by Jazzy (QoS stored with string enums).
BAG_VERSION = 9
STORAGES: dict[str, StoragePlugin] = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
_STORAGE_SUFFIXES = {".mcap": "mcap", ".db3": "sqlite3"}

DEMO_LIDAR_TOPIC = "/lidar/points"
DEMO_CAMERA_PREFIX = "/cameras"
TF_STATIC_TOPIC = "/tf_static"
EGO_FRAME = "base_link"

_POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"
_COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
_CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
_TF_MESSAGE = "tf2_msgs/msg/TFMessage"


class BagError(ValueError):
    """A bag path, storage, option or message that cannot be used; the message names it."""


# --------------------------------------------------------------------------------------------
# Types and QoS
# --------------------------------------------------------------------------------------------


@cache
def default_typestore() -> Typestore:
    """The Jazzy typestore (message classes, definitions, RIHS01 hashes) shared by this module."""
    return get_typestore(Stores.ROS2_JAZZY)


def _share_dirs() -> list[Path]:
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    prefixes.append(sys.prefix)
    return [Path(p) / "share" for p in dict.fromkeys(prefixes)]


def _type_names(node: Any) -> Iterator[str]:
    """Every 'pkg/msg/Name' referenced inside a rosbags field definition tuple."""
    if isinstance(node, str):
        if node.count("/") == 2:
            yield node
    elif isinstance(node, tuple | list):
        for item in node:
            yield from _type_names(item)


def ensure_msgtype(
    typestore: Typestore, msgtype: str, search_dirs: Sequence[Path] | None = None
) -> None:
    """Make `msgtype` (and what it references) known to `typestore`.

    Standard types are already there; others are parsed from `share/<pkg>/msg/<Name>.msg`
    under AMENT_PREFIX_PATH and this interpreter's prefix (where the PyPI ROS wheels put them).
    """
    dirs = list(search_dirs) if search_dirs is not None else _share_dirs()
    pending, seen = [msgtype], set()
    found: dict[str, Any] = {}
    while pending:
        name = pending.pop()
        if name in seen or name in typestore.fielddefs:
            continue
        seen.add(name)
        parts = name.split("/")
        if len(parts) != 3:
            raise BagError(f"message type {name!r} is not of the form 'package/msg/Name'")
        pkg, kind, base = parts
        for share in dirs:
            path = share / pkg / kind / f"{base}.msg"
            if path.is_file():
                types = get_types_from_msg(path.read_text(), name)
                found.update(types)
                pending.extend(_type_names(types[name]))
                break
        else:
            raise BagError(
                f"message type {name!r} is unknown to the rosbags typestore and no "
                f"{pkg}/{kind}/{base}.msg was found under {[str(d) for d in dirs]}"
            )
    if found:
        typestore.register(found)


def make_qos(
    *, reliable: bool = True, transient_local: bool = False, depth: int = 10, keep_all: bool = False
) -> Qos:
    """A rosbag2 'offered_qos_profiles' entry (what the publisher offered)."""
    zero = QosTime(0, 0)
    return Qos(
        history=QosHistory.KEEP_ALL if keep_all else QosHistory.KEEP_LAST,
        depth=int(depth),
        reliability=QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
        durability=QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
        deadline=zero,
        lifespan=zero,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=zero,
        avoid_ros_namespace_conventions=False,
    )


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _storage_plugin(storage: str) -> StoragePlugin:
    try:
        return STORAGES[storage]
    except KeyError:
        raise BagError(f"storage {storage!r} is not one of {sorted(STORAGES)}") from None


def bag_output_path(path: str | os.PathLike[str]) -> Path:
    """The bag directory for a requested output name: 'run.mcap' or 'run.db3' -> 'run'.

    rosbag2 bags are directories (metadata.yaml + 'run/run.mcap'); users often name the file.
    """
    p = Path(path)
    return p.with_suffix("") if p.suffix in _STORAGE_SUFFIXES else p


class BagWriter:
    """A rosbag2 bag open for writing raw CDR messages; topics are added on first write.

    Thread-safe (a recorder's callbacks may run on several executor threads). Use as a context
    manager or call `open()` / `close()`; only a closed bag has its metadata.yaml and index.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        storage: str = "mcap",
        typestore: Typestore | None = None,
        version: int = BAG_VERSION,
    ) -> None:
        self.path = Path(path)
        self.storage = storage
        if self.path.exists():
            raise BagError(f"bag path {str(self.path)!r} exists already; rosbag2 never overwrites")
        self._writer = Writer(self.path, version=version, storage_plugin=_storage_plugin(storage))
        self._typestore = typestore or default_typestore()
        self._connections: dict[tuple[str, str], Connection] = {}
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._state = "new"

    def open(self) -> BagWriter:
        with self._lock:
            if self._state != "new":
                raise BagError(f"bag {str(self.path)!r} is {self._state}, cannot open it again")
            self._writer.open()
            self._state = "open"
        return self

    @property
    def is_open(self) -> bool:
        return self._state == "open"

    @property
    def message_counts(self) -> dict[str, int]:
        """Messages written so far, per topic."""
        with self._lock:
            return dict(self._counts)

    def add_topic(self, topic: str, msgtype: str, qos: Sequence[Qos] = ()) -> None:
        """Declare a topic before its first message (e.g. to record its offered QoS)."""
        with self._lock:
            self._connection(topic, msgtype, qos)

    def _connection(self, topic: str, msgtype: str, qos: Sequence[Qos]) -> Connection:
        if self._state != "open":
            raise BagError(f"bag {str(self.path)!r} is {self._state}, not open for writing")
        key = (topic, msgtype)
        conn = self._connections.get(key)
        if conn is None:
            ensure_msgtype(self._typestore, msgtype)
            conn = self._writer.add_connection(
                topic, msgtype, typestore=self._typestore, offered_qos_profiles=list(qos)
            )
            self._connections[key] = conn
            self._counts.setdefault(topic, 0)
        return conn

    def write(
        self,
        topic: str,
        msgtype: str,
        data: bytes | bytearray | memoryview,
        timestamp_ns: int,
        qos: Sequence[Qos] = (),
    ) -> None:
        """Append one serialized (CDR) message; `qos` is used only when the topic is new."""
        if timestamp_ns < 0:
            raise BagError(f"timestamp {timestamp_ns} ns on {topic!r} is negative")
        with self._lock:
            conn = self._connection(topic, msgtype, qos)
            self._writer.write(conn, int(timestamp_ns), bytes(data))
            self._counts[topic] += 1

    def close(self) -> None:
        """Finish the storage file and write metadata.yaml; safe to call twice."""
        with self._lock:
            if self._state == "open":
                self._writer.close()
            self._state = "closed"

    def __enter__(self) -> BagWriter:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


class BagMessage(NamedTuple):
    """One stored message: topic, type name, log time (ns) and the raw CDR bytes."""

    topic: str
    msgtype: str
    timestamp_ns: int
    data: bytes


@dataclass(frozen=True)
class BagTopic:
    """One topic of a bag: type, message count, the QoS its publisher offered."""

    name: str
    msgtype: str
    count: int
    qos: tuple[Qos, ...] = ()
    type_hash: str = ""  # RIHS01 of the message definition (what DDS endpoints advertise)

    @property
    def transient_local(self) -> bool:
        """True when the recorded publisher was latched (e.g. /tf_static)."""
        return any(q.durability == QosDurability.TRANSIENT_LOCAL for q in self.qos)


@dataclass(frozen=True)
class BagInfo:
    """What a bag holds; `start_ns` / `end_ns` are the first and last messages' log times."""

    path: Path
    start_ns: int
    end_ns: int
    message_count: int
    topics: dict[str, BagTopic] = field(default_factory=dict)

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)


def _open_reader(path: str | os.PathLike[str]) -> Reader:
    p = Path(path)
    if not p.exists():
        raise BagError(f"bag {str(p)!r} does not exist")
    try:
        return Reader(p)
    except Exception as err:  # rosbags raises its own errors for unknown layouts
        raise BagError(f"{str(p)!r} is not a readable rosbag2 bag: {err}") from err


def read_bag_info(path: str | os.PathLike[str]) -> BagInfo:
    """Topics (type, message count, offered QoS) and time range of a bag directory or file."""
    with _open_reader(path) as reader:
        topics: dict[str, BagTopic] = {}
        for conn in reader.connections:
            qos = tuple(getattr(conn.ext, "offered_qos_profiles", ()) or ())
            old = topics.get(conn.topic)
            if old is not None:  # a topic recorded from several connections
                qos = qos or old.qos
                count = conn.msgcount + old.count
            else:
                count = conn.msgcount
            topics[conn.topic] = BagTopic(conn.topic, conn.msgtype, count, qos, conn.digest or "")
        count = reader.message_count
        # rosbags' end_time is one past the last message; keep the last message's own time.
        start, end = (reader.start_time, reader.end_time - 1) if count else (0, 0)
        return BagInfo(Path(path), start, end, count, topics)


def read_bag_messages(
    path: str | os.PathLike[str],
    topics: Iterable[str] | None = None,
    *,
    start_ns: int | None = None,
    stop_ns: int | None = None,
) -> Iterator[BagMessage]:
    """Messages of a sqlite3 or MCAP rosbag2 bag (directory, .mcap or .db3) in log-time order."""
    wanted = None if topics is None else set(topics)
    with _open_reader(path) as reader:
        conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if not conns:
            return
        for conn, timestamp, data in reader.messages(conns, start=start_ns, stop=stop_ns):
            yield BagMessage(conn.topic, conn.msgtype, int(timestamp), bytes(data))


# --------------------------------------------------------------------------------------------
# Demo bag from the bundled frames
# --------------------------------------------------------------------------------------------


def camera_topics(camera: str, prefix: str = DEMO_CAMERA_PREFIX) -> tuple[str, str]:
    """(compressed image topic, camera_info topic) of one camera in the demo bag."""
    return f"{prefix}/{camera}/image_raw/compressed", f"{prefix}/{camera}/camera_info"


def demo_cloud_fields(frame: Frame) -> tuple[tuple[FieldSpec, ...], dict[str, np.ndarray]]:
    """Velodyne-driver layout: packed float32 x, y, z, intensity, then uint16 ring (if any)."""
    specs, arrays, offset = [], {}, 0
    for i, name in enumerate(frame.fields):
        column = frame.points[:, i]
        if name == "ring":
            specs.append(FieldSpec(name, offset, UINT16))
            arrays[name] = np.rint(column).astype(np.uint16)
            offset += 2
        else:
            specs.append(FieldSpec(name, offset, FLOAT32))
            arrays[name] = column.astype(np.float32, copy=False)
            offset += 4
    return tuple(specs), arrays


def rotation_to_quaternion(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a 3x3 rotation matrix (re-orthonormalised first; w >= 0)."""
    u, _, vt = np.linalg.svd(np.asarray(rotation, dtype=np.float64))
    r = u @ vt
    if np.linalg.det(r) < 0:
        raise BagError("transform has a reflection, not a rotation")
    w2 = 1.0 + np.trace(r)
    candidates = [w2, 1 + r[0, 0] - r[1, 1] - r[2, 2], 1 - r[0, 0] + r[1, 1] - r[2, 2]]
    candidates.append(1 - r[0, 0] - r[1, 1] + r[2, 2])
    k = int(np.argmax(candidates))
    s = 2.0 * np.sqrt(candidates[k])
    if k == 0:
        q = [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, s / 4]
    elif k == 1:
        q = [s / 4, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s, (r[2, 1] - r[1, 2]) / s]
    elif k == 2:
        q = [(r[0, 1] + r[1, 0]) / s, s / 4, (r[1, 2] + r[2, 1]) / s, (r[0, 2] - r[2, 0]) / s]
    else:
        q = [(r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, s / 4, (r[1, 0] - r[0, 1]) / s]
    qa = np.asarray(q)
    qa /= np.linalg.norm(qa)
    if qa[3] < 0:
        qa = -qa
    return float(qa[0]), float(qa[1]), float(qa[2]), float(qa[3])


class _DemoMessages:
    """Builds the demo bag's messages as rosbags objects and serializes them to CDR."""

    def __init__(self, typestore: Typestore) -> None:
        self.ts = typestore
        self.t = typestore.types

    def header(self, stamp_ns: int, frame_id: str) -> Any:
        sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
        stamp = self.t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)
        return self.t["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)

    def cdr(self, msg: Any) -> bytes:
        return bytes(self.ts.serialize_cdr(msg, msg.__msgtype__))

    def cloud(self, frame: Frame, stamp_ns: int) -> bytes:
        specs, arrays = demo_cloud_fields(frame)
        packed = pack_arrays(arrays, fields=specs)
        point_field = self.t["sensor_msgs/msg/PointField"]
        msg = self.t[_POINTCLOUD2](
            header=self.header(stamp_ns, frame.frame_id),
            height=packed.height,
            width=packed.width,
            fields=[point_field(f.name, f.offset, f.datatype, f.count) for f in packed.fields],
            is_bigendian=packed.is_bigendian,
            point_step=packed.point_step,
            row_step=packed.row_step,
            data=np.frombuffer(packed.data, dtype=np.uint8),
            is_dense=packed.is_dense,
        )
        return self.cdr(msg)

    def image(self, name: str, path: Path, stamp_ns: int) -> bytes:
        fmt = "png" if path.suffix.lower() == ".png" else "jpeg"
        data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
        msg = self.t[_COMPRESSED_IMAGE](header=self.header(stamp_ns, name), format=fmt, data=data)
        return self.cdr(msg)

    def camera_info(self, cam: Any, stamp_ns: int) -> bytes:
        k = np.asarray(cam.K, dtype=np.float64)
        p = np.zeros((3, 4))
        p[:, :3] = k
        roi = self.t["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        )
        msg = self.t[_CAMERA_INFO](
            header=self.header(stamp_ns, cam.name),
            height=int(cam.height),
            width=int(cam.width),
            distortion_model="plumb_bob",
            d=np.zeros(5),  # the bundled images are already undistorted
            k=k.reshape(-1),
            r=np.eye(3).reshape(-1),
            p=p.reshape(-1),
            binning_x=0,
            binning_y=0,
            roi=roi,
        )
        return self.cdr(msg)

    def transform(self, stamp_ns: int, parent: str, child: str, child2parent: np.ndarray) -> Any:
        x, y, z, w = rotation_to_quaternion(child2parent[:3, :3])
        tx, ty, tz = (float(v) for v in child2parent[:3, 3])
        return self.t["geometry_msgs/msg/TransformStamped"](
            header=self.header(stamp_ns, parent),
            child_frame_id=child,
            transform=self.t["geometry_msgs/msg/Transform"](
                translation=self.t["geometry_msgs/msg/Vector3"](x=tx, y=ty, z=tz),
                rotation=self.t["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w),
            ),
        )

    def tf_static(self, frames: Sequence[Frame], stamp_ns: int) -> bytes:
        transforms = []
        for frame in frames:
            if frame.lidar2ego is not None:  # ego <- lidar: lidar2ego maps LiDAR points to ego
                transforms.append(
                    self.transform(stamp_ns, EGO_FRAME, frame.frame_id, frame.lidar2ego)
                )
            for cam in frame.cameras.values():  # lidar <- camera: the inverse of lidar2cam
                cam2lidar = np.linalg.inv(np.asarray(cam.lidar2cam, dtype=np.float64))
                transforms.append(self.transform(stamp_ns, frame.frame_id, cam.name, cam2lidar))
        return self.cdr(self.t[_TF_MESSAGE](transforms=transforms))


def _demo_frames(frames: Sequence[Frame | str] | None) -> list[Frame]:
    from .frames import load_frame, load_nuscenes_frame

    if frames is None:
        return [load_nuscenes_frame()]
    out = [load_frame(f) if isinstance(f, str) else f for f in frames]
    if not out:
        raise BagError("frames is empty: give at least one Frame (or 'nuscenes' / 'kitti')")
    cameras: dict[str, str] = {}
    for f in out:
        for cam in f.cameras:
            if cameras.setdefault(cam, f.name) != f.name:
                raise BagError(f"camera {cam!r} appears in frames {cameras[cam]!r} and {f.name!r}")
    return out


def write_demo_bag(
    path: str | os.PathLike[str],
    frames: Sequence[Frame | str] | None = None,
    *,
    storage: str = "mcap",
    repeats: int = 20,
    rate_hz: float = 10.0,
    cameras: bool = True,
    lidar_topic: str = DEMO_LIDAR_TOPIC,
    camera_prefix: str = DEMO_CAMERA_PREFIX,
    start_time_ns: int | None = None,
) -> BagInfo:
    """A replayable rosbag2 bag made from the bundled real frames (nuScenes by default).

    Per sweep: the LiDAR cloud on `lidar_topic` (Velodyne layout, see `demo_cloud_fields`), and per
    camera the original JPEG/PNG bytes as CompressedImage plus its CameraInfo (K, P = [K | 0]).
    `/tf_static` (latched) holds base_link -> LiDAR (lidar2ego) and LiDAR -> camera (inverse
    lidar2cam) transforms. The frames play in order, `repeats` times, one sweep every 1/rate_hz s;
    cameras keep their real offsets to the sweep. Log times equal header stamps.
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise BagError(f"repeats must be an integer >= 1, got {repeats!r}")
    if not (rate_hz > 0 and np.isfinite(rate_hz)):
        raise BagError(f"rate_hz must be a positive number, got {rate_hz!r}")
    _storage_plugin(storage)  # fail before the (slow) message building
    seq = _demo_frames(frames)
    if start_time_ns is None:
        start_time_ns = round((seq[0].timestamp or 1.7e9) * 1e9)
    # Camera offsets can be negative (exposure before the sweep ends): keep every stamp >= 0.
    start_time_ns = max(int(start_time_ns), 1_000_000_000)
    period_ns = round(1e9 / rate_hz)
    build = _DemoMessages(default_typestore())

    records: list[tuple[int, int, str, str, bytes]] = []  # (time, order, topic, type, cdr)
    sweep_qos = (make_qos(),)
    tf_qos = (make_qos(transient_local=True, depth=1),)
    for k in range(repeats * len(seq)):
        frame = seq[k % len(seq)]
        stamp = start_time_ns + k * period_ns
        records.append((stamp, len(records), lidar_topic, _POINTCLOUD2, build.cloud(frame, stamp)))
        if not cameras:
            continue
        for cam in frame.cameras.values():
            offset = 0
            if cam.timestamp is not None and frame.timestamp is not None:
                offset = round((cam.timestamp - frame.timestamp) * 1e9)
            cam_stamp = max(0, stamp + offset)
            image_topic, info_topic = camera_topics(cam.name, camera_prefix)
            image = build.image(cam.name, cam.image_path, cam_stamp)
            records.append((cam_stamp, len(records), image_topic, _COMPRESSED_IMAGE, image))
            info = build.camera_info(cam, cam_stamp)
            records.append((cam_stamp, len(records), info_topic, _CAMERA_INFO, info))
    first = min(r[0] for r in records)
    records.append((first, -1, TF_STATIC_TOPIC, _TF_MESSAGE, build.tf_static(seq, first)))
    records.sort(key=lambda r: (r[0], r[1]))

    with BagWriter(path, storage=storage) as writer:
        for stamp, _, topic, msgtype, data in records:
            qos = tf_qos if topic == TF_STATIC_TOPIC else sweep_qos
            writer.write(topic, msgtype, data, stamp, qos)
    return read_bag_info(path)
