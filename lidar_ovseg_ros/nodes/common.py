"""rclpy plumbing shared by the nodes: QoS, vocabulary parameters, diagnostics, markers, legend.

Everything here converts between ROS messages/parameters and the ROS-free core; no model logic.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Vector3
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import Image
from std_msgs.msg import ColorRGBA, Header, String
from visualization_msgs.msg import Marker, MarkerArray

from lidar_ovseg_ros.viz import render_legend
from lidar_ovseg_ros.vocabulary import (
    NO_CLASS_ID,
    Vocabulary,
    VocabularyError,
    load_vocabulary,
)
from lidar_ovseg_ros.vocabulary_switch import SwitchStatus, VocabularySwitcher
from lidar_ovseg_ros.voxels import VoxelGrid

RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}


def input_qos(reliability: str) -> QoSProfile:
    """SensorDataQoS with depth 1; reliability selectable (bags and many drivers are reliable)."""
    if reliability not in RELIABILITY:
        raise ValueError(
            f"input_reliability must be one of {sorted(RELIABILITY)}, got {reliability!r}"
        )
    qos = QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=RELIABILITY[reliability],
        durability=qos_profile_sensor_data.durability,
    )
    return qos


def latched_qos() -> QoSProfile:
    """Transient-local, reliable, depth 1: late subscribers (RViz) get the last message."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )


def output_qos() -> QoSProfile:
    return QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)


def stamp_to_seconds(stamp: TimeMsg) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


# --------------------------------------------------------------------------------------------
# Vocabulary parameters
# --------------------------------------------------------------------------------------------


def parse_vocabulary_names(value: Any) -> Vocabulary:
    """`vocabulary` parameter: a string array, or one comma-separated string."""
    if isinstance(value, str):
        names = [n.strip() for n in value.split(",")]
        if value.strip() == "":
            raise VocabularyError("the vocabulary is empty: give at least one class")
    elif isinstance(value, list | tuple):
        names = [str(n).strip() for n in value]
    else:
        raise VocabularyError(
            f"'vocabulary' must be a list of class names or a comma-separated string, "
            f"got {type(value).__name__}"
        )
    return Vocabulary.from_names(names, name="parameter")


class VocabularyParameters:
    """Declares `vocabulary` and `vocabulary_file`, validates changes, and drives the switcher.

    Validation happens in the set-parameters callback, so `ros2 param set` reports a refused
    vocabulary with its reason and the active one stays. Accepted ones build in the background.
    """

    def __init__(self, node: Node, switcher: VocabularySwitcher) -> None:
        self._node = node
        self._switcher = switcher
        node.declare_parameter(
            "vocabulary",
            "",
            ParameterDescriptor(
                description=(
                    "Class names to look for, e.g. ['car', 'tree'] or 'car, tree'. "
                    "Non-empty overrides vocabulary_file."
                ),
                dynamic_typing=True,
            ),
        )
        node.declare_parameter(
            "vocabulary_file",
            "nuscenes",
            ParameterDescriptor(description="Vocabulary preset name or YAML file path."),
        )
        node.add_on_set_parameters_callback(self._on_set)

    def initial(self) -> tuple[Vocabulary, str]:
        """The start-up vocabulary; raises VocabularyError with the reason if invalid."""
        names = self._node.get_parameter("vocabulary").value
        if names not in ("", None, []):
            return parse_vocabulary_names(names), "parameter 'vocabulary'"
        spec = self._node.get_parameter("vocabulary_file").value
        return load_vocabulary(spec), f"vocabulary_file '{spec}'"

    def _on_set(self, params: list[Parameter]) -> SetParametersResult:
        requests: list[tuple[Vocabulary, str]] = []
        for p in params:
            try:
                if p.name == "vocabulary":
                    if p.value in ("", None, []):
                        return SetParametersResult(
                            successful=False,
                            reason="the vocabulary is empty: give at least one class name",
                        )
                    requests.append((parse_vocabulary_names(p.value), "parameter 'vocabulary'"))
                elif p.name == "vocabulary_file":
                    if p.type_ != Parameter.Type.STRING:
                        return SetParametersResult(
                            successful=False, reason="'vocabulary_file' must be a string"
                        )
                    requests.append((load_vocabulary(p.value), f"vocabulary_file '{p.value}'"))
            except VocabularyError as exc:
                self._node.get_logger().warning(f"refused {p.name}: {exc}")
                return SetParametersResult(successful=False, reason=str(exc))
        for vocabulary, source in requests:
            self._node.get_logger().info(
                f"building vocabulary '{vocabulary.name}' ({len(vocabulary)} classes) "
                f"from {source} in the background; the active one keeps labeling"
            )
            self._switcher.request(vocabulary, source)
        return SetParametersResult(successful=True)


def vocabulary_status_json(status: SwitchStatus) -> str:
    """The `~/output/vocabulary` payload: ids, names, colours of the active vocabulary, state."""

    def describe(v: Vocabulary | None) -> dict[str, Any] | None:
        if v is None:
            return None
        return {
            "name": v.name,
            "fingerprint": v.fingerprint(),
            "classes": [
                {"id": i, "name": c.name, "color": list(c.color), "prompts": list(c.prompts)}
                for i, c in enumerate(v.classes)
            ],
        }

    payload = {
        "state": status.state,
        "active": describe(status.active),
        "active_source": status.active_source,
        "pending": describe(status.pending),
        "pending_source": status.pending_source,
        "progress": round(status.progress, 4),
        "progress_message": status.progress_message,
        "last_error": status.last_error,
        "switches": status.switches,
        "no_class_id": NO_CLASS_ID,
    }
    return json.dumps(payload)


class VocabularyPublisher:
    """Latched `~/output/vocabulary` (JSON) and `~/output/legend` (image) on every change."""

    def __init__(self, node: Node, min_period: float = 0.5) -> None:
        self._node = node
        self._pub = node.create_publisher(String, "~/output/vocabulary", latched_qos())
        self._legend_pub = node.create_publisher(Image, "~/output/legend", latched_qos())
        self._lock = threading.Lock()
        self._last_fingerprint: str | None = None
        self._last_state: str | None = None
        self._last_time = 0.0
        self._min_period = min_period

    def publish(self, status: SwitchStatus, frame_id: str = "") -> None:
        with self._lock:
            now = time.monotonic()
            fp = status.active.fingerprint() if status.active is not None else None
            changed = fp != self._last_fingerprint or status.state != self._last_state
            if not changed and now - self._last_time < self._min_period:
                return  # throttle progress updates; state changes always go out
            self._last_time = now
            self._last_state = status.state
            self._pub.publish(String(data=vocabulary_status_json(status)))
            if status.active is not None and fp != self._last_fingerprint:
                self._last_fingerprint = fp
                rgb = render_legend(status.active, title=f"vocabulary: {status.active.name}")
                self._legend_pub.publish(image_msg(rgb, frame_id, self._node.get_clock().now()))


def image_msg(rgb: np.ndarray, frame_id: str, now: Any) -> Image:
    msg = Image()
    msg.header.frame_id = frame_id
    msg.header.stamp = now.to_msg()
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = int(rgb.shape[1] * 3)
    msg.data = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    return msg


# --------------------------------------------------------------------------------------------
# Markers
# --------------------------------------------------------------------------------------------


def voxel_markers(grid: VoxelGrid, vocabulary: Vocabulary, header: Header) -> MarkerArray:
    """DELETEALL, then one CUBE_LIST per class present (namespace = class name)."""
    out = MarkerArray()
    clear = Marker()
    clear.header = header
    clear.action = Marker.DELETEALL
    out.markers.append(clear)
    size = float(grid.voxel_size)
    for class_id in np.unique(grid.labels):
        if int(class_id) >= len(vocabulary):
            continue
        cls = vocabulary.classes[int(class_id)]
        centers = grid.centers[grid.labels == class_id]
        m = Marker()
        m.header = header
        m.ns = cls.name
        m.id = int(class_id)
        m.type = Marker.CUBE_LIST
        m.action = Marker.ADD
        m.pose.orientation.w = 1.0
        m.scale = Vector3(x=size, y=size, z=size)
        r, g, b = cls.color
        m.color = ColorRGBA(r=r / 255.0, g=g / 255.0, b=b / 255.0, a=0.85)
        m.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in centers.tolist()]
        out.markers.append(m)
    return out


# --------------------------------------------------------------------------------------------
# Diagnostics
# --------------------------------------------------------------------------------------------


class DiagnosticsPublisher:
    """Publishes one DiagnosticStatus on /diagnostics every `period` seconds.

    `collect()` returns (level, message, key-values); levels are DiagnosticStatus.OK/WARN/ERROR.
    """

    def __init__(
        self,
        node: Node,
        name: str,
        collect: Callable[[], tuple[int, str, dict[str, Any]]],
        period: float = 1.0,
    ) -> None:
        self._node = node
        self._name = name
        self._collect = collect
        self._pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._timer = node.create_timer(period, self.publish)

    def publish(self) -> None:
        level, message, values = self._collect()
        status = DiagnosticStatus()
        status.level = bytes([level]) if isinstance(level, int) else level
        status.name = f"{self._node.get_name()}: {self._name}"
        status.message = message
        status.hardware_id = self._node.get_fully_qualified_name()
        status.values = [KeyValue(key=str(k), value=_fmt(v)) for k, v in values.items()]
        arr = DiagnosticArray()
        arr.header.stamp = self._node.get_clock().now().to_msg()
        arr.status = [status]
        self._pub.publish(arr)


def vocabulary_diagnostics(
    status: SwitchStatus,
) -> tuple[dict[str, Any], tuple[bytes, str] | None]:
    """The vocabulary's diagnostic key-values, and the (level, message) its state imposes, if any:
    no vocabulary yet (WARN, or ERROR when its build failed), a build in progress (OK with the
    progress), or the last build failed while an older vocabulary stays active (WARN)."""
    values = {
        "vocabulary": status.active.name if status.active else "",
        "vocabulary_classes": len(status.active) if status.active else 0,
        "vocabulary_state": status.state,
        "vocabulary_progress": status.progress,
        "vocabulary_error": status.last_error,
    }
    if status.active is None:
        level = DiagnosticStatus.ERROR if status.state == "failed" else DiagnosticStatus.WARN
        return values, (level, status.last_error or "building the first vocabulary")
    if status.state == "building":
        pending = status.pending.name if status.pending else ""
        return values, (
            DiagnosticStatus.OK,
            f"building vocabulary '{pending}' ({status.progress:.0%})",
        )
    if status.last_error:
        return values, (DiagnosticStatus.WARN, status.last_error)
    return values, None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


class RollingStats:
    """Thread-safe rolling window of a measurement (processing time, latency)."""

    def __init__(self, size: int = 100) -> None:
        self._values: list[float] = []
        self._size = size
        self._lock = threading.Lock()

    def add(self, value: float) -> None:
        with self._lock:
            self._values.append(value)
            if len(self._values) > self._size:
                self._values.pop(0)

    def summary(self) -> dict[str, float]:
        with self._lock:
            if not self._values:
                return {}
            a = np.asarray(self._values)
        return {
            "last": float(a[-1]),
            "median": float(np.median(a)),
            "p90": float(np.percentile(a, 90)),
        }


def run_node(factory: Callable[[], Node], name: str, args: list[str] | None = None) -> int:
    """The console-script main of a node: spin until Ctrl-C, clean exit, no traceback.

    Start-up errors a user can fix (a missing checkpoint, an invalid vocabulary or parameter)
    print one line and return 1.
    """
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = factory()
        executor = MultiThreadedExecutor(num_threads=2)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (FileNotFoundError, VocabularyError, ValueError) as exc:
        print(f"[{name}] start-up failed: {exc}", file=sys.stderr)
        code = 1
    finally:
        if node is not None:
            node.shutdown()
            node.destroy_node()
        rclpy.try_shutdown()
    return code
