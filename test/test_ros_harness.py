"""The ROS test harness itself: isolation and a real PointCloud2 round trip over DDS."""

import os

import numpy as np
from conftest import wait_for
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2, PointField


def test_dds_is_isolated():
    assert 1 <= int(os.environ["ROS_DOMAIN_ID"]) <= 100
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert "lidar_ovseg_roslog_" in os.environ["ROS_LOG_DIR"]


def _cloud_from_frame(frame) -> PointCloud2:
    msg = PointCloud2()
    msg.header.frame_id = frame.frame_id
    msg.header.stamp.sec = 1532402927
    msg.header.stamp.nanosec = 647951000
    msg.height, msg.width = 1, len(frame.points)
    msg.fields = [
        PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
        for i, n in enumerate(frame.fields)
    ]
    msg.point_step = 4 * len(frame.fields)
    msg.row_step = msg.point_step * msg.width
    msg.is_bigendian = False
    msg.is_dense = True
    msg.data = frame.points.tobytes()
    return msg


def test_pointcloud_round_trip_over_dds(ros, nuscenes_frame):
    sender = ros.make_node("harness_sender")
    receiver = ros.make_node("harness_receiver")
    received: list[PointCloud2] = []
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    receiver.create_subscription(PointCloud2, "/harness/points", received.append, qos)
    pub = sender.create_publisher(PointCloud2, "/harness/points", qos)
    assert wait_for(lambda: pub.get_subscription_count() > 0, 10)
    msg = _cloud_from_frame(nuscenes_frame)
    pub.publish(msg)
    assert wait_for(lambda: bool(received), 10)
    got = received[0]
    assert got.header.frame_id == "LIDAR_TOP"
    assert (got.header.stamp.sec, got.header.stamp.nanosec) == (1532402927, 647951000)
    assert (got.width, got.point_step) == (34688, 20)
    points = np.frombuffer(got.data, dtype=np.float32).reshape(-1, 5)
    np.testing.assert_array_equal(points, nuscenes_frame.points)
