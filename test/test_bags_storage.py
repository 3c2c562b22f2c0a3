"""lidar_ovseg_ros.bags.storage: rosbag2 bags written and read without rosbag2 or rclpy."""

import sys
from pathlib import Path

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.typesys import Stores, get_typestore
from std_msgs.msg import String

from lidar_ovseg_ros.bags.storage import (
    BagError,
    BagWriter,
    bag_output_path,
    default_typestore,
    ensure_msgtype,
    make_qos,
    read_bag_info,
    read_bag_messages,
)


def test_bag_writer_lazy_topics_and_qos(tmp_path):
    path = tmp_path / "written"
    texts = [f"message {i}" for i in range(5)]
    with BagWriter(path) as writer:
        for i, text in enumerate(texts):
            writer.write(
                "/text", "std_msgs/msg/String", serialize_message(String(data=text)), 10 + i
            )
        writer.write(
            "/latched",
            "std_msgs/msg/String",
            serialize_message(String(data="x")),
            12,
            qos=[make_qos(transient_local=True, depth=1)],
        )
        assert writer.message_counts == {"/text": 5, "/latched": 1}
    assert not writer.is_open
    info = read_bag_info(path)
    assert (info.start_ns, info.message_count) == (10, 6)
    assert info.topics["/latched"].transient_local and not info.topics["/text"].transient_local
    got = [deserialize_message(m.data, String).data for m in read_bag_messages(path, ["/text"])]
    assert got == texts
    with pytest.raises(BagError, match="exists already"):
        BagWriter(path)
    with pytest.raises(BagError, match="not open"):
        writer.write("/text", "std_msgs/msg/String", b"", 1)


def test_custom_message_type_from_msg_files(tmp_path):
    share = tmp_path / "share"
    (share / "my_pkg" / "msg").mkdir(parents=True)
    (share / "my_pkg" / "msg" / "Detections.msg").write_text(
        "std_msgs/Header header\nstring[] labels\nfloat32[] scores\n"
    )
    store = get_typestore(Stores.EMPTY)
    ensure_msgtype(store, "my_pkg/msg/Detections", [share, Path(sys.prefix) / "share"])
    assert "std_msgs/msg/Header" in store.fielddefs
    cls = store.types["my_pkg/msg/Detections"]
    header = store.types["std_msgs/msg/Header"](
        stamp=store.types["builtin_interfaces/msg/Time"](sec=3, nanosec=4), frame_id="map"
    )
    msg = cls(header=header, labels=["car", "tree"], scores=np.array([0.5, 0.25], np.float32))
    with BagWriter(tmp_path / "custom", typestore=store) as writer:
        writer.write("/det", "my_pkg/msg/Detections", store.serialize_cdr(msg, cls.__msgtype__), 5)
    (m,) = list(read_bag_messages(tmp_path / "custom"))
    back = store.deserialize_cdr(m.data, m.msgtype)
    assert back.labels == ["car", "tree"] and back.header.frame_id == "map"
    # Standard types parsed from the installed .msg files hash exactly like the Jazzy store.
    ensure_msgtype(store, "sensor_msgs/msg/CameraInfo")
    jazzy = default_typestore()
    assert store.hash_rihs01("sensor_msgs/msg/CameraInfo") == jazzy.hash_rihs01(
        "sensor_msgs/msg/CameraInfo"
    )
    with pytest.raises(BagError, match=r"no_pkg/msg/Missing\.msg"):
        ensure_msgtype(store, "no_pkg/msg/Missing", [share])


def test_bad_inputs_name_the_problem(tmp_path):
    with pytest.raises(BagError, match="does not exist"):
        read_bag_info(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(BagError, match="not a readable rosbag2 bag"):
        list(read_bag_messages(tmp_path / "notes.txt"))
    assert bag_output_path("runs/day1.mcap") == Path("runs/day1")
    assert bag_output_path("runs/day1") == Path("runs/day1")
