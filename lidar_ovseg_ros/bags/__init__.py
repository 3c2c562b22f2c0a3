"""rosbag2 bags without rosbag2: the one home of this package's bag tooling.

- `storage`: write and read MCAP / sqlite3 bags on raw CDR bytes (`rosbags`; no rclpy).
- `demo_bag`: the replayable demo bag built from the bundled real frames (no rclpy).
- `rclpy_tools`: `BagPlayer` / `BagRecorder` over DDS and the `replay` / `record` runners. The
  only module here that imports rclpy: import it explicitly (`lidar_ovseg_ros.bags.rclpy_tools`),
  and lazily from code that must run without ROS; this package's `__init__` never imports it.

Commands (`lidar_ovseg_ros.commands.{replay,record,demo_bag}`) are thin argument parsers on top
of these modules; nothing here imports a command.
"""

from .demo_bag import (
    DEMO_CAMERA_PREFIX,
    DEMO_LIDAR_TOPIC,
    EGO_FRAME,
    TF_STATIC_TOPIC,
    camera_topics,
    demo_cloud_fields,
    rotation_to_quaternion,
    write_demo_bag,
)
from .storage import (
    BAG_VERSION,
    STORAGES,
    BagError,
    BagInfo,
    BagMessage,
    BagTopic,
    BagWriter,
    bag_output_path,
    default_typestore,
    ensure_msgtype,
    make_qos,
    read_bag_info,
    read_bag_messages,
)

__all__ = [
    "BAG_VERSION",
    "DEMO_CAMERA_PREFIX",
    "DEMO_LIDAR_TOPIC",
    "EGO_FRAME",
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
