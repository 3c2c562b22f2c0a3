"""lidar_ovseg_ros.bags.demo_bag: the demo bag made from the real frames, read back."""

import numpy as np
import pytest
from rclpy.serialization import deserialize_message
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, CompressedImage, PointCloud2

from lidar_ovseg_ros.bags import (
    BAG_VERSION,
    DEMO_LIDAR_TOPIC,
    TF_STATIC_TOPIC,
    BagError,
    camera_topics,
    default_typestore,
    read_bag_info,
    read_bag_messages,
    write_demo_bag,
)

REPEATS, RATE_HZ = 3, 10.0
_NUMPY_OF_DATATYPE = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}


def cloud_points(msg: PointCloud2) -> np.ndarray:
    """Structured array built only from the message's own PointField description."""
    assert not msg.is_bigendian
    dtype = np.dtype(
        {
            "names": [f.name for f in msg.fields],
            "formats": ["<" + _NUMPY_OF_DATATYPE[f.datatype] for f in msg.fields],
            "offsets": [f.offset for f in msg.fields],
            "itemsize": msg.point_step,
        }
    )
    return np.frombuffer(bytes(msg.data), dtype=dtype, count=msg.width * msg.height)


def stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


@pytest.fixture(scope="module", params=["mcap", "sqlite3"])
def demo_bag(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param) / "demo"
    info = write_demo_bag(path, storage=request.param, repeats=REPEATS, rate_hz=RATE_HZ)
    return path, info, request.param


def test_demo_bag_layout(demo_bag, nuscenes_frame):
    path, info, storage = demo_bag
    files = sorted(p.name for p in path.iterdir())
    assert files == sorted(["metadata.yaml", f"demo.{'mcap' if storage == 'mcap' else 'db3'}"])
    meta = (path / "metadata.yaml").read_text()
    assert f"version: {BAG_VERSION}" in meta
    assert f"storage_identifier: {storage}" in meta

    expected = {
        DEMO_LIDAR_TOPIC: "sensor_msgs/msg/PointCloud2",
        TF_STATIC_TOPIC: "tf2_msgs/msg/TFMessage",
    }
    for cam in nuscenes_frame.cameras:
        image, cinfo = camera_topics(cam)
        expected[image] = "sensor_msgs/msg/CompressedImage"
        expected[cinfo] = "sensor_msgs/msg/CameraInfo"
    assert {t: v.msgtype for t, v in info.topics.items()} == expected
    assert len(nuscenes_frame.cameras) == 6
    for topic, meta_topic in info.topics.items():
        assert meta_topic.count == (1 if topic == TF_STATIC_TOPIC else REPEATS), topic
    assert info.topics[TF_STATIC_TOPIC].transient_local
    assert not info.topics[DEMO_LIDAR_TOPIC].transient_local
    assert info.message_count == 1 + REPEATS * (1 + 2 * 6)
    # Stamps span (repeats - 1) sweep periods plus the earliest camera's lead on the sweep.
    lead_ns = max(
        round((nuscenes_frame.timestamp - c.timestamp) * 1e9)
        for c in nuscenes_frame.cameras.values()
    )
    assert 0 < lead_ns < 50_000_000
    assert info.duration_ns == (REPEATS - 1) * round(1e9 / RATE_HZ) + lead_ns


def test_demo_bag_messages_in_time_order_and_filtered(demo_bag):
    path, info, _ = demo_bag
    stamps = [m.timestamp_ns for m in read_bag_messages(path)]
    assert len(stamps) == info.message_count
    assert stamps == sorted(stamps)
    assert stamps[0] == info.start_ns
    only = list(read_bag_messages(path, topics=[DEMO_LIDAR_TOPIC]))
    assert [m.topic for m in only] == [DEMO_LIDAR_TOPIC] * REPEATS
    assert all(isinstance(m.data, bytes) for m in only)
    assert list(read_bag_messages(path, topics=["/not/there"])) == []


def test_demo_cloud_is_the_real_sweep(demo_bag, nuscenes_frame):
    path, _, _ = demo_bag
    clouds = list(read_bag_messages(path, topics=[DEMO_LIDAR_TOPIC]))
    t0 = round(nuscenes_frame.timestamp * 1e9)
    for k, m in enumerate(clouds):
        msg = deserialize_message(m.data, PointCloud2)
        assert msg.header.frame_id == "LIDAR_TOP"
        assert stamp_ns(msg.header) == m.timestamp_ns == t0 + k * round(1e9 / RATE_HZ)
        assert [(f.name, f.datatype) for f in msg.fields] == [
            ("x", 7),
            ("y", 7),
            ("z", 7),
            ("intensity", 7),
            ("ring", 4),
        ]
        assert (msg.height, msg.width) == (1, len(nuscenes_frame.points))
        assert msg.row_step == msg.width * msg.point_step
        pts = cloud_points(msg)
        for i, name in enumerate(["x", "y", "z", "intensity"]):
            np.testing.assert_array_equal(pts[name], nuscenes_frame.points[:, i])
        np.testing.assert_array_equal(pts["ring"], nuscenes_frame.points[:, 4].astype(np.uint16))
        assert pts["ring"].max() == 31


def test_demo_cameras(demo_bag, nuscenes_frame):
    path, _, _ = demo_bag
    by_topic: dict[str, list] = {}
    for m in read_bag_messages(path):
        by_topic.setdefault(m.topic, []).append(m)
    for cam in nuscenes_frame.cameras.values():
        image_topic, info_topic = camera_topics(cam.name)
        images, infos = by_topic[image_topic], by_topic[info_topic]
        assert len(images) == len(infos) == REPEATS
        offset = round((cam.timestamp - nuscenes_frame.timestamp) * 1e9)
        for k, (im, ci) in enumerate(zip(images, infos)):
            img = deserialize_message(im.data, CompressedImage)
            assert img.format == "jpeg"
            assert bytes(img.data) == cam.image_path.read_bytes()
            assert img.header.frame_id == cam.name
            expected = round(nuscenes_frame.timestamp * 1e9) + k * round(1e9 / RATE_HZ) + offset
            assert stamp_ns(img.header) == im.timestamp_ns == expected
            info = deserialize_message(ci.data, CameraInfo)
            assert (info.width, info.height) == (cam.width, cam.height) == (1600, 900)
            assert info.header.frame_id == cam.name
            np.testing.assert_allclose(np.reshape(info.k, (3, 3)), cam.K)
            p = np.reshape(info.p, (3, 4))
            np.testing.assert_allclose(p[:, :3], cam.K)
            np.testing.assert_array_equal(p[:, 3], 0.0)
            # P maps LiDAR points (through lidar2cam) to the same pixels as the frame's lidar2img.
            xyz1 = np.c_[nuscenes_frame.xyz[:50], np.ones(50)]
            uvw = (p @ (np.asarray(cam.lidar2cam) @ xyz1.T)).T
            ref = (np.asarray(cam.lidar2img) @ xyz1.T).T[:, :3]
            np.testing.assert_allclose(uvw, ref, rtol=1e-9, atol=1e-6)


def _tf_matrix(t) -> np.ndarray:
    m = np.eye(4)
    q = t.transform.rotation
    m[:3, :3] = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
    v = t.transform.translation
    m[:3, 3] = [v.x, v.y, v.z]
    return m


def test_demo_tf_static(demo_bag, nuscenes_frame):
    path, info, _ = demo_bag
    (msg,) = list(read_bag_messages(path, topics=[TF_STATIC_TOPIC]))
    assert msg.timestamp_ns == info.start_ns
    tf = default_typestore().deserialize_cdr(msg.data, msg.msgtype)
    edges = {(t.header.frame_id, t.child_frame_id): t for t in tf.transforms}
    assert set(edges) == {("base_link", "LIDAR_TOP")} | {
        ("LIDAR_TOP", cam) for cam in nuscenes_frame.cameras
    }
    for cam in nuscenes_frame.cameras.values():
        cam2lidar = _tf_matrix(edges[("LIDAR_TOP", cam.name)])
        # A point in the camera frame, moved to the LiDAR frame and back through lidar2cam.
        np.testing.assert_allclose(np.asarray(cam.lidar2cam) @ cam2lidar, np.eye(4), atol=1e-6)
    import json

    calib = json.loads((cam.image_path.parent / "calib.json").read_text())
    lidar2ego = np.asarray(calib["lidar"]["lidar2ego"])
    np.testing.assert_allclose(_tf_matrix(edges[("base_link", "LIDAR_TOP")]), lidar2ego, atol=1e-6)


def test_kitti_demo_bag(tmp_path, kitti_frame):
    info = write_demo_bag(tmp_path / "kitti", ["kitti"], storage="sqlite3", repeats=2, rate_hz=5)
    image_topic, info_topic = camera_topics("CAM2")
    assert set(info.topics) == {DEMO_LIDAR_TOPIC, image_topic, info_topic, TF_STATIC_TOPIC}
    (cloud, _) = list(read_bag_messages(tmp_path / "kitti", topics=[DEMO_LIDAR_TOPIC]))
    msg = deserialize_message(cloud.data, PointCloud2)
    assert msg.header.frame_id == kitti_frame.frame_id
    assert [f.name for f in msg.fields] == ["x", "y", "z", "intensity"]
    pts = cloud_points(msg)
    np.testing.assert_array_equal(pts["intensity"], kitti_frame.points[:, 3])
    img = deserialize_message(
        next(read_bag_messages(tmp_path / "kitti", [image_topic])).data, CompressedImage
    )
    assert (
        img.format == "png"
        and bytes(img.data) == kitti_frame.cameras["CAM2"].image_path.read_bytes()
    )
    (tf_msg,) = list(read_bag_messages(tmp_path / "kitti", topics=[TF_STATIC_TOPIC]))
    tf = default_typestore().deserialize_cdr(tf_msg.data, tf_msg.msgtype)
    assert [(t.header.frame_id, t.child_frame_id) for t in tf.transforms] == [
        (kitti_frame.frame_id, "CAM2")
    ]  # KITTI records no LiDAR mounting on the vehicle, so there is no base_link edge


def test_single_storage_file_reads_like_the_directory(demo_bag):
    path, info, _ = demo_bag
    (storage_file,) = [p for p in path.iterdir() if p.name != "metadata.yaml"]
    direct = read_bag_info(storage_file)
    assert direct.message_count == info.message_count
    assert {t: v.count for t, v in direct.topics.items()} == {
        t: v.count for t, v in info.topics.items()
    }


def test_bad_inputs_name_the_problem(tmp_path):
    with pytest.raises(BagError, match="storage 'zip'"):
        write_demo_bag(tmp_path / "a", storage="zip", repeats=1)
    with pytest.raises(BagError, match="repeats"):
        write_demo_bag(tmp_path / "b", repeats=0)
    with pytest.raises(BagError, match="rate_hz"):
        write_demo_bag(tmp_path / "c", repeats=1, rate_hz=0)
