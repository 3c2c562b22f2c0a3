"""lidar_ovseg_ros.bags.rclpy_tools: bag replay and recording over real DDS, via the CLI too."""

import importlib.util
import itertools
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import wait_for
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, CompressedImage, PointCloud2
from std_msgs.msg import String

from lidar_ovseg_ros.bags import (
    DEMO_LIDAR_TOPIC,
    TF_STATIC_TOPIC,
    BagError,
    camera_topics,
    read_bag_info,
    read_bag_messages,
    write_demo_bag,
)
from lidar_ovseg_ros.bags.rclpy_tools import (
    BagPlayer,
    BagRecorder,
    PlayOptions,
    message_class,
    parse_remaps,
)
from lidar_ovseg_ros.pointcloud import structured_view

pytestmark = pytest.mark.ros

REPEATS, RATE_HZ = 5, 10.0
HAVE_TF2_MSGS = importlib.util.find_spec("tf2_msgs") is not None
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture(scope="module")
def demo_bag(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bag") / "demo"
    write_demo_bag(path, repeats=REPEATS, rate_hz=RATE_HZ)
    return path


def _stamp(header) -> int:
    return _ns(header.stamp)


def _ns(t) -> int:
    return t.sec * 1_000_000_000 + t.nanosec


def _check_cloud(msg: PointCloud2, frame) -> None:
    pts = structured_view(msg)
    for i, name in enumerate(["x", "y", "z", "intensity"]):
        np.testing.assert_array_equal(pts[name], frame.points[:, i])
    np.testing.assert_array_equal(pts["ring"], frame.points[:, 4].astype(np.uint16))


def test_player_publishes_the_bag_with_timing_and_clock(ros, demo_bag, nuscenes_frame):
    info = read_bag_info(demo_bag)
    image_topic, info_topic = camera_topics("CAM_FRONT")
    sub = ros.make_node("player_listener")
    clouds, images, cam_infos, clocks = [], [], [], []
    arrivals = []

    def on_cloud(msg):
        arrivals.append(time.monotonic())
        clouds.append(msg)

    sub.create_subscription(PointCloud2, DEMO_LIDAR_TOPIC, on_cloud, RELIABLE)
    sub.create_subscription(CompressedImage, image_topic, images.append, RELIABLE)
    sub.create_subscription(CameraInfo, info_topic, cam_infos.append, RELIABLE)
    sub.create_subscription(Clock, "/clock", clocks.append, RELIABLE)

    options = PlayOptions(clock=True, wait_for_subscribers=3, wait_timeout=20)
    player = ros.add_node(BagPlayer(demo_bag, options, context=ros.context))
    # tf2_msgs is not on PyPI: the venv skips /tf_static; a full ROS install plays it.
    assert player.skipped == ({} if HAVE_TF2_MSGS else {TF_STATIC_TOPIC: "tf2_msgs/msg/TFMessage"})
    assert wait_for(lambda: player.count_subscribers("/clock") > 0, 20)
    player.start()
    assert player.wait(30) and player.error is None
    assert wait_for(lambda: len(clouds) == REPEATS and len(images) == REPEATS, 10)
    assert wait_for(lambda: len(cam_infos) == REPEATS, 5)

    t0 = round(nuscenes_frame.timestamp * 1e9)
    period = round(1e9 / RATE_HZ)
    assert [_stamp(c.header) for c in clouds] == [t0 + k * period for k in range(REPEATS)]
    for cloud in clouds:
        assert cloud.header.frame_id == "LIDAR_TOP"
        _check_cloud(cloud, nuscenes_frame)
    jpeg = nuscenes_frame.cameras["CAM_FRONT"].image_path.read_bytes()
    assert all(bytes(im.data) == jpeg and im.format == "jpeg" for im in images)
    np.testing.assert_allclose(
        np.reshape(cam_infos[0].k, (3, 3)), nuscenes_frame.cameras["CAM_FRONT"].K
    )
    assert player.published[DEMO_LIDAR_TOPIC] == REPEATS
    assert sum(player.published.values()) == info.message_count - len(player.skipped)

    # The sweeps arrive spread out like the recording (a lower bound only: no timing flakiness).
    assert arrivals[-1] - arrivals[0] >= 0.8 * (REPEATS - 1) / RATE_HZ

    # /clock carries bag time: inside the bag's range, never going back, reaching the last sweep.
    assert wait_for(lambda: _ns(clocks[-1].clock) == info.end_ns, 10)
    ticks = [_ns(c.clock) for c in clocks]
    assert len(ticks) > REPEATS
    assert ticks == sorted(ticks)
    assert info.start_ns <= ticks[0] and ticks[-1] == info.end_ns
    assert any(t == t0 + (REPEATS - 1) * period for t in ticks)


def test_player_options_filter_remap_offset_rate_loop(ros, demo_bag, nuscenes_frame):
    info = read_bag_info(demo_bag)
    sub = ros.make_node("options_listener")
    stamps = []
    sub.create_subscription(
        PointCloud2, "/remapped/points", lambda m: stamps.append(_stamp(m.header)), RELIABLE
    )
    options = PlayOptions(
        rate=5.0,
        loop=True,
        topics=[DEMO_LIDAR_TOPIC],
        remap=parse_remaps([f"{DEMO_LIDAR_TOPIC}:=/remapped/points"]),
        start_offset=0.2,  # skips the sweeps before bag start + 0.2 s
        wait_for_subscribers=1,
        wait_timeout=20,
    )
    player = ros.add_node(BagPlayer(demo_bag, options, context=ros.context))
    assert player.topics == {DEMO_LIDAR_TOPIC: "/remapped/points"}
    player.start()
    assert wait_for(lambda: len(stamps) >= 7, 20)
    player.stop()
    assert player.done.is_set() and player.loops_completed >= 2
    t0 = round(nuscenes_frame.timestamp * 1e9)
    period = round(1e9 / RATE_HZ)
    kept = [t0 + k * period for k in range(REPEATS) if t0 + k * period >= info.start_ns + 2e8]
    assert len(kept) == 3
    assert stamps[: 2 * len(kept)] == kept + kept  # the loop starts over at the offset


def test_player_with_nothing_to_play_ends_even_when_looping(ros, demo_bag):
    options = PlayOptions(loop=True, start_offset=60.0)  # the bag lasts half a second
    player = ros.add_node(BagPlayer(demo_bag, options, context=ros.context))
    player.start()
    assert player.wait(10) and player.error is None
    assert sum(player.published.values()) == 0 and player.loops_completed == 1


def test_recorder_records_topics_found_on_the_graph(ros, tmp_path, nuscenes_frame):
    talker = ros.make_node("record_talker")
    cloud_pub = talker.create_publisher(PointCloud2, "/rec/points", RELIABLE)
    latched = QoSProfile(
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )
    text_pub = talker.create_publisher(String, "/rec/text", latched)
    text_pub.publish(String(data="published before the recorder started"))

    clouds = [
        deserialize_message(m.data, PointCloud2)
        for m in read_bag_messages(_demo(tmp_path), topics=[DEMO_LIDAR_TOPIC])
    ]
    out = tmp_path / "recorded"
    recorder = ros.add_node(
        BagRecorder(out, ["/rec/points", "/rec/text", "/rec/never"], context=ros.context)
    )
    assert wait_for(lambda: set(recorder.subscribed) == {"/rec/points", "/rec/text"}, 20)
    assert wait_for(lambda: cloud_pub.get_subscription_count() > 0, 20)
    for cloud in clouds:
        cloud_pub.publish(cloud)
    assert wait_for(lambda: recorder.message_counts.get("/rec/points") == len(clouds), 20)
    assert wait_for(lambda: recorder.message_counts.get("/rec/text") == 1, 10)
    endpoint = recorder.get_publishers_info_by_topic("/rec/points")[0]
    assert recorder.close() == out

    info = read_bag_info(out)
    assert {t: (v.msgtype, v.count) for t, v in info.topics.items()} == {
        "/rec/points": ("sensor_msgs/msg/PointCloud2", len(clouds)),
        "/rec/text": ("std_msgs/msg/String", 1),
    }
    assert info.topics["/rec/text"].transient_local
    h = endpoint.topic_type_hash
    assert info.topics["/rec/points"].type_hash == f"RIHS{h.version:02d}_{h.value.hex()}"
    got = list(read_bag_messages(out, topics=["/rec/points"]))
    # Compare decoded messages: serialize_message leaves CDR padding bytes uninitialised.
    back = [deserialize_message(m.data, PointCloud2) for m in got]
    assert [_stamp(b.header) for b in back] == [_stamp(c.header) for c in clouds]
    assert all(bytes(b.data) == bytes(c.data) for b, c in zip(back, clouds))
    assert all(a.timestamp_ns <= b.timestamp_ns for a, b in itertools.pairwise(got))
    assert abs(got[0].timestamp_ns / 1e9 - time.time()) < 120  # receive time, not header stamp
    for m in got:
        _check_cloud(deserialize_message(m.data, PointCloud2), nuscenes_frame)
    (text,) = list(read_bag_messages(out, topics=["/rec/text"]))
    assert deserialize_message(text.data, String).data == "published before the recorder started"


def _demo(tmp_path: Path) -> Path:
    path = tmp_path / "small_demo"
    if not path.exists():
        write_demo_bag(path, repeats=3, rate_hz=RATE_HZ, cameras=False)
    return path


def test_record_and_replay_cli_exit_cleanly_on_signals(ros, node_process, tmp_path, nuscenes_frame):
    bag = _demo(tmp_path)
    out = tmp_path / "cli_record.mcap"
    cli = "lidar_ovseg_ros.cli"  # what the `lidar-ovseg` console script runs
    recorder = node_process(["-m", cli, "record", str(out), "--topics", DEMO_LIDAR_TOPIC])
    seen = []
    listener = ros.make_node("cli_listener")
    listener.create_subscription(PointCloud2, DEMO_LIDAR_TOPIC, seen.append, RELIABLE)
    # Wait for the recorder to be up (its node is on the graph) before the player starts.
    assert wait_for(lambda: "bag_recorder" in listener.get_node_names(), 30)
    player = node_process(
        ["-m", cli, "replay", str(bag), "--loop", "--rate", "3", "--wait-for-subscribers", "2"]
    )
    # More than the bag holds (it loops); two spare messages so the recorder, which receives
    # in another process, has its 4th before the signal.
    assert wait_for(lambda: len(seen) >= 6, 40)
    player.send_signal(signal.SIGINT)
    recorder.send_signal(signal.SIGTERM)  # docker stop / systemd: the bag must still be closed
    assert player.wait(20) == 0
    assert recorder.wait(20) == 0

    recorded = out.with_suffix("")  # 'cli_record.mcap' names the bag directory 'cli_record'
    assert (recorded / "metadata.yaml").is_file() and (recorded / "cli_record.mcap").is_file()
    info = read_bag_info(recorded)
    assert info.topics[DEMO_LIDAR_TOPIC].count >= 4
    played = {m.timestamp_ns for m in read_bag_messages(bag, topics=[DEMO_LIDAR_TOPIC])}
    for m in read_bag_messages(recorded):
        cloud = deserialize_message(m.data, PointCloud2)
        assert _stamp(cloud.header) in played
        _check_cloud(cloud, nuscenes_frame)


def test_replay_cli_runs_to_the_end_and_reports_bad_input(node_process, tmp_path, capsys):
    from lidar_ovseg_ros.cli import main

    def replay_main(argv: list[str]) -> int:
        return main(["replay", *argv])

    def record_main(argv: list[str]) -> int:
        return main(["record", *argv])

    bag = _demo(tmp_path)
    proc = node_process(["-m", "lidar_ovseg_ros.cli", "replay", str(bag), "--rate", "4", "--clock"])
    assert proc.wait(30) == 0  # no --loop: exits by itself once the bag is played
    assert replay_main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert replay_main([str(bag), "--remap", "/a"]) == 2
    assert "old_topic:=new_topic" in capsys.readouterr().err
    assert record_main([str(bag), "--topics", "/x"]) == 2  # never overwrites
    assert "exists already" in capsys.readouterr().err
    assert record_main([str(tmp_path / "new"), "--topics", "/x", "--type", "/x:=String"]) == 2
    assert "package/msg/Type" in capsys.readouterr().err


def test_cli_registers_the_bag_commands(tmp_path, capsys):
    from lidar_ovseg_ros.cli import build_parser, main

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"replay", "record", "demo-bag"} <= set(sub.choices)
    assert main(["demo-bag", str(tmp_path / "d.mcap"), "--repeats", "2", "--no-cameras"]) == 0
    assert "wrote" in capsys.readouterr().out
    info = read_bag_info(tmp_path / "d")  # the .mcap suffix names the directory
    assert {t: v.count for t, v in info.topics.items()} == {DEMO_LIDAR_TOPIC: 2, TF_STATIC_TOPIC: 1}


def test_message_class_and_option_checks():
    from lidar_ovseg_ros.bags import STORAGES
    from lidar_ovseg_ros.bags.rclpy_tools import RELIABILITY
    from lidar_ovseg_ros.commands.record import STORAGE_CHOICES
    from lidar_ovseg_ros.commands.replay import RELIABILITY_CHOICES

    assert set(RELIABILITY_CHOICES) == set(RELIABILITY)
    assert set(STORAGE_CHOICES) == set(STORAGES)
    assert message_class("sensor_msgs/msg/PointCloud2") is PointCloud2
    assert message_class("sensor_msgs/PointCloud2") is PointCloud2
    # None exactly when the package is not installed (the PyPI venv), the class on a ROS install.
    assert (message_class("tf2_msgs/msg/TFMessage") is not None) == HAVE_TF2_MSGS
    assert message_class("no_such_msgs/msg/Thing") is None
    assert message_class("sensor_msgs/msg/NoSuchType") is None
    assert parse_remaps(["/a:=/b", "/c:=/d"]) == {"/a": "/b", "/c": "/d"}
    with pytest.raises(BagError, match="rate"):
        PlayOptions(rate=0).validate()
    with pytest.raises(BagError, match="reliability"):
        PlayOptions(reliability="sometimes").validate()


def test_replay_cli_accepts_ros_arguments_like_launch_ros_passes_them(ros, node_process, tmp_path):
    """launch_ros (replay.launch.py player:=lidar_ovseg) and `ros2 run` append `--ros-args ...`;
    the CLI hands them to rclpy (here a node-name remap) instead of refusing them."""
    from lidar_ovseg_ros.cli import split_ros_args

    assert split_ros_args(["replay", "b", "--ros-args", "-r", "a:=b", "--", "--loop"]) == (
        ["replay", "b", "--loop"],
        ["--ros-args", "-r", "a:=b", "--"],
    )
    bag = _demo(tmp_path)
    args = ["-m", "lidar_ovseg_ros.cli", "replay", str(bag), "--loop", "--rate", "3"]
    player = node_process([*args, "--ros-args", "-r", "__node:=launched_player"])
    probe = ros.make_node("ros_args_probe")
    assert wait_for(lambda: "launched_player" in probe.get_node_names(), 30)
    assert player.poll() is None
    player.send_signal(signal.SIGINT)
    assert player.wait(20) == 0
