"""A replayable demo bag made from the bundled real frames (LiDAR, cameras, /tf_static).

Messages are built as `rosbags` objects and serialized to CDR, so this needs no rclpy either.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..pointcloud import FLOAT32, UINT16, FieldSpec, pack_arrays
from .storage import (
    BagError,
    BagInfo,
    BagWriter,
    _storage_plugin,
    default_typestore,
    make_qos,
    read_bag_info,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from rosbags.typesys.store import Typestore

    from ..frames import Frame

__all__ = [
    "DEMO_CAMERA_PREFIX",
    "DEMO_LIDAR_TOPIC",
    "EGO_FRAME",
    "TF_STATIC_TOPIC",
    "camera_topics",
    "demo_cloud_fields",
    "rotation_to_quaternion",
    "write_demo_bag",
]

DEMO_LIDAR_TOPIC = "/lidar/points"
DEMO_CAMERA_PREFIX = "/cameras"
TF_STATIC_TOPIC = "/tf_static"
EGO_FRAME = "base_link"

_POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"
_COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
_CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
_TF_MESSAGE = "tf2_msgs/msg/TFMessage"


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
    from ..frames import load_frame, load_nuscenes_frame

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
