"""rclpy plumbing shared by the nodes: QoS, vocabulary parameters, diagnostics, markers, legend.

Everything here converts between ROS messages/parameters and the ROS-free core; no model logic.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Vector3
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.exceptions import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    ParameterNotDeclaredException,
)
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from rclpy.signals import SignalHandlerOptions
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
# Node parameters: declared once on the dataclass fields, described, ranged, validated here
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamSpec:
    """What `ros2 param describe` shows for one dataclass field, and how a value is checked.

    `range` (inclusive) becomes an IntegerRange/FloatingPointRange; every float must also be
    finite. `runtime` parameters can be set while the node runs, the others are read-only (read
    at start-up). `choices` lists the accepted strings."""

    description: str
    range: tuple[float, float] | None = None
    runtime: bool = False
    choices: tuple[str, ...] = ()


def node_param(
    default: Any,
    description: str,
    *,
    range: tuple[float, float] | None = None,
    runtime: bool = False,
    choices: tuple[str, ...] = (),
) -> Any:
    """A dataclass field that is a node parameter: `x: float = node_param(0.4, "what", ...)`."""
    spec = ParamSpec(description, range, runtime, tuple(choices))
    return field(default=default, metadata={"ros": spec})


def param_spec(cls: type, f: Any) -> ParamSpec:
    """The ParamSpec of a dataclass field; a field without one is a programming error."""
    spec = f.metadata.get("ros")
    if not isinstance(spec, ParamSpec) or not spec.description.strip():
        raise TypeError(
            f"{cls.__name__}.{f.name} has no description: declare it as "
            f'`{f.name}: <type> = node_param(<default>, "what it does", range=(lo, hi), '
            "runtime=<settable while running?>)` (see lidar_ovseg_ros/nodes/common.py)"
        )
    return spec


def param_descriptor(spec: ParamSpec, default: Any) -> ParameterDescriptor:
    """The ParameterDescriptor of one field: description, constraints, range, read-only."""
    constraints = []
    if spec.choices:
        constraints.append(f"one of: {', '.join(spec.choices)}")
    desc = ParameterDescriptor(
        description=spec.description,
        additional_constraints="; ".join(constraints),
        read_only=not spec.runtime,
    )
    if spec.range is not None:
        lo, hi = spec.range
        if isinstance(default, bool):
            pass
        elif isinstance(default, int):
            desc.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
        elif isinstance(default, float):
            desc.floating_point_range = [
                FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)
            ]
    return desc


def check_param_value(name: str, spec: ParamSpec, value: Any) -> str | None:
    """The reason `value` is refused for parameter `name`, or None when it is acceptable."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name} must be a finite number, got {value}"
    if spec.range is not None and isinstance(value, int | float) and not isinstance(value, bool):
        lo, hi = spec.range
        if not lo <= value <= hi:
            return f"{name} must be in [{lo}, {hi}], got {value}"
    if spec.choices and value not in spec.choices:
        return f"{name} must be one of {list(spec.choices)}, got {value!r}"
    return None


def declare_node_params(node: Node, cls: type) -> Any:
    """Declare every field of the dataclass `cls` as a described parameter of `node`, check the
    start-up values, and keep `node.params` (an instance of `cls`) current: a runtime change is
    validated (finite, in range, one of the choices; then `node.check_param`), refused with its
    reason, and applied by replacing `node.params` atomically after every callback accepted it.
    Raises TypeError for a field without a description, ValueError for a bad start-up value."""
    specs = {f.name: (f, param_spec(cls, f)) for f in fields(cls)}
    values = {}
    for name, (f, spec) in specs.items():
        default = list(f.default) if isinstance(f.default, tuple) else f.default
        value = node.declare_parameter(name, default, param_descriptor(spec, default)).value
        reason = check_param_value(name, spec, value)
        if reason:
            raise ValueError(f"parameter {reason}")
        values[name] = tuple(value) if isinstance(f.default, tuple) else value
    node.params = cls(**values)

    def on_set(params: list[Parameter]) -> SetParametersResult:
        for prm in params:
            if prm.name in specs:
                reason = check_param_value(prm.name, specs[prm.name][1], prm.value)
                check = getattr(node, "check_param", None)
                if reason is None and callable(check):
                    reason = check(prm.name, prm.value)
                if reason:
                    return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def post_set(params: list[Parameter]) -> None:
        changes = {}
        for prm in params:
            if prm.name in specs:
                f = specs[prm.name][0]
                changes[prm.name] = tuple(prm.value) if isinstance(f.default, tuple) else prm.value
        if changes:
            node.params = replace(node.params, **changes)
            hook = getattr(node, "params_changed", None)
            if callable(hook):
                hook(set(changes))

    node.add_on_set_parameters_callback(on_set)
    node.add_post_set_parameters_callback(post_set)
    return node.params


def render_params_yaml(cls: type, node_name: str, source: str) -> str:
    """The `config/<node>.yaml` text for the dataclass `cls`: every parameter with its default,
    description, range and whether it is runtime, plus the two vocabulary parameters. The files
    in config/ are exactly this (a test checks it); regenerate with
    `python scripts/write_node_configs.py`."""
    import yaml

    def value(v: Any) -> str:
        if isinstance(v, tuple | list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, str) and v == "":
            return '""'
        text = yaml.safe_dump(v, default_flow_style=True, width=1000).strip()
        return text.removesuffix("\n...").strip()

    lines = [
        f"# Parameters of {node_name}, generated from {cls.__name__} ({source}).",
        "# Do not edit by hand: run `python scripts/write_node_configs.py` after changing the",
        "# dataclass. `ros2 param describe` shows the same descriptions and ranges.",
        "/**:",
        "  ros__parameters:",
    ]
    rows: list[tuple[str, Any, str]] = []
    for f in fields(cls):
        spec = param_spec(cls, f)
        notes = []
        if spec.range is not None:
            notes.append(f"range [{spec.range[0]}, {spec.range[1]}]")
        if spec.choices:
            notes.append("one of: " + " | ".join(spec.choices))
        notes.append("runtime" if spec.runtime else "read at start-up")
        rows.append((f.name, f.default, f"{spec.description} ({'; '.join(notes)})"))
    for name, description in VOCABULARY_DESCRIPTIONS.items():
        rows.append((name, VOCABULARY_DEFAULTS[name], description))
    for name, default, description in rows:
        words, line = description.split(), "    #"
        for word in words:
            if len(line) + 1 + len(word) > 99:
                lines.append(line)
                line = "    #"
            line += " " + word
        lines.append(line)
        lines.append(f"    {name}: {value(default)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Vocabulary parameters
# --------------------------------------------------------------------------------------------


def parse_vocabulary_names(value: Any) -> Vocabulary:
    """`vocabulary` parameter: a list of class-name strings (or one comma-separated string).

    Anything but strings is refused: `[true, false]` must not become classes "True"/"False"."""
    if isinstance(value, str):
        if value.strip() == "":
            raise VocabularyError("the vocabulary is empty: give at least one class")
        names = [n.strip() for n in value.split(",")]
    elif isinstance(value, list | tuple):
        bad = [n for n in value if not isinstance(n, str)]
        if bad:
            raise VocabularyError(
                f"class names must be strings; got {bad[0]!r} ({type(bad[0]).__name__})"
            )
        names = [n.strip() for n in value]
    else:
        raise VocabularyError(
            f"'vocabulary' must be a list of class names or a comma-separated string, "
            f"got {type(value).__name__}"
        )
    return Vocabulary.from_names(names, name="parameter")


def _vocabulary_list(value: Any) -> list[str]:
    """The `vocabulary` value as the list it is declared as (None/'' -> [], 'a, b' -> [a, b])."""
    if value is None:
        return []
    if isinstance(value, str):
        return [n.strip() for n in value.split(",")] if value.strip() else []
    return list(value)


VOCABULARY_DESCRIPTIONS = {
    "vocabulary": (
        "Class names to look for, e.g. ['car', 'tree'] (a comma-separated string 'car, tree' is "
        "converted). Empty: the classes of vocabulary_file. After vocabulary_file is set this "
        "shows the file's class names. Runtime."
    ),
    "vocabulary_file": (
        "Vocabulary preset name (nuscenes, semantickitti) or YAML file path (UTF-8, at most "
        "1 MiB); used when 'vocabulary' is empty or equals its class names. Runtime."
    ),
}
VOCABULARY_DEFAULTS: dict[str, Any] = {"vocabulary": [], "vocabulary_file": "nuscenes"}


class VocabularyParameters:
    """Declares `vocabulary` (string array) and `vocabulary_file`, validates changes, drives the
    switcher, and keeps the two parameters consistent with what is active.

    - `vocabulary` is a STRING_ARRAY; a comma-separated string ('car, tree', also as a start-up
      override) is converted to the list before validation. An empty list means "the classes of
      `vocabulary_file`"; setting it empty switches back to the file.
    - After `vocabulary_file` is set, `vocabulary` is set to the file's class names, so
      `ros2 param dump` restarts with the same classes: at start-up a non-empty `vocabulary` that
      equals the file's class names uses the file (its prompts and colours); otherwise the list
      overrides the file.
    - Validation happens in the set-parameters callback: every source error (missing file,
      directory, permission, I/O, over 1 MiB, not UTF-8, bad YAML, nested too deep, non-string
      names, duplicates...) is a refusal with its reason, logged, and the active vocabulary stays.
      Accepted ones build in the background.
    """

    def __init__(self, node: Node, switcher: VocabularySwitcher | None = None) -> None:
        self._node = node
        self._switcher = switcher
        self._sync_thread: int | None = None  # the thread writing `vocabulary` back (no rebuild)
        self._pending_names: list[str] | None = None
        overrides = getattr(node, "_parameter_overrides", {})  # rclpy keeps -p/params-file here
        if "vocabulary" in overrides and overrides["vocabulary"].type_ in (
            Parameter.Type.STRING,
            Parameter.Type.NOT_SET,  # `vocabulary: []` in a params file arrives unset
            Parameter.Type.BYTE_ARRAY,  # rclpy types an untyped empty list (value=[]) as bytes
        ):
            names = _vocabulary_list(overrides["vocabulary"].value)
            if names:
                kind = Parameter.Type.STRING_ARRAY
                overrides["vocabulary"] = Parameter("vocabulary", kind, names)
            else:  # rclpy re-infers an empty override as BYTE_ARRAY: leave it unset (-> [] below)
                del overrides["vocabulary"]
        node.declare_parameter(
            "vocabulary",
            Parameter.Type.STRING_ARRAY,
            ParameterDescriptor(
                description=VOCABULARY_DESCRIPTIONS["vocabulary"],
            ),
        )
        if self._node.get_parameter_or("vocabulary").value is None:
            node.set_parameters([Parameter("vocabulary", Parameter.Type.STRING_ARRAY, [])])
        node.declare_parameter(
            "vocabulary_file",
            VOCABULARY_DEFAULTS["vocabulary_file"],
            ParameterDescriptor(description=VOCABULARY_DESCRIPTIONS["vocabulary_file"]),
        )
        node.add_pre_set_parameters_callback(self._pre_set)
        node.add_on_set_parameters_callback(self._on_set)
        node.add_post_set_parameters_callback(self._post_set)

    def attach(self, switcher: VocabularySwitcher | None) -> None:
        """The switcher accepted vocabularies go to (None while the model is not loaded)."""
        self._switcher = switcher

    def initial(self) -> tuple[Vocabulary, str]:
        """The start-up vocabulary; raises VocabularyError with the reason if invalid."""
        names = _vocabulary_list(self._node.get_parameter("vocabulary").value)
        spec = self._node.get_parameter("vocabulary_file").value
        if names:
            listed = parse_vocabulary_names(names)
            try:
                from_file = load_vocabulary(spec)
            except VocabularyError:
                return listed, "parameter 'vocabulary'"
            if from_file.names == listed.names:  # written back after vocabulary_file was set
                return from_file, f"vocabulary_file '{spec}'"
            return listed, "parameter 'vocabulary'"
        return load_vocabulary(spec), f"vocabulary_file '{spec}'"

    def _syncing(self) -> bool:
        return self._sync_thread == threading.get_ident()

    def _pre_set(self, params: list[Parameter]) -> list[Parameter]:
        out = []
        for p in params:
            if p.name == "vocabulary" and (
                p.type_ == Parameter.Type.STRING
                or (isinstance(p.value, list | tuple | np.ndarray) and len(p.value) == 0)
            ):
                # 'car, tree' -> [car, tree]; an empty list of any type (the CLI sends `[]` as
                # a bool array) -> the empty string array.
                p = Parameter("vocabulary", Parameter.Type.STRING_ARRAY, _vocabulary_list(p.value))
            out.append(p)
        return out

    def _refuse(self, name: str, reason: str) -> SetParametersResult:
        self._node.get_logger().warning(f"refused {name}: {reason}")
        return SetParametersResult(successful=False, reason=reason)

    def _on_set(self, params: list[Parameter]) -> SetParametersResult:
        if self._syncing():
            return SetParametersResult(successful=True)
        mine = {p.name: p for p in params if p.name in ("vocabulary", "vocabulary_file")}
        if not mine:
            return SetParametersResult(successful=True)
        self._pending_names = None
        try:
            if "vocabulary_file" in mine:
                p = mine["vocabulary_file"]
                if p.type_ != Parameter.Type.STRING:
                    return self._refuse(p.name, "'vocabulary_file' must be a string")
                request = (load_vocabulary(p.value), f"vocabulary_file '{p.value}'")
                if "vocabulary" not in mine:
                    self._pending_names = request[0].names
            if "vocabulary" in mine:
                names = _vocabulary_list(mine["vocabulary"].value)
                if names:
                    request = (parse_vocabulary_names(names), "parameter 'vocabulary'")
                elif "vocabulary_file" not in mine:  # cleared: back to the file's classes
                    spec = self._node.get_parameter("vocabulary_file").value
                    request = (load_vocabulary(spec), f"vocabulary_file '{spec}'")
        except VocabularyError as exc:
            return self._refuse(", ".join(mine), str(exc))
        except Exception as exc:  # never let a bad value escape into the executor
            return self._refuse(", ".join(mine), f"{type(exc).__name__}: {exc}")
        vocabulary, source = request
        if self._switcher is None:  # not configured: `configure` builds what the parameters say
            self._node.get_logger().info(
                f"vocabulary '{vocabulary.name}' ({len(vocabulary)} classes) from {source} "
                "accepted; it is built when the node is configured"
            )
            return SetParametersResult(successful=True)
        self._node.get_logger().info(
            f"building vocabulary '{vocabulary.name}' ({len(vocabulary)} classes) "
            f"from {source} in the background; the active one keeps labeling"
        )
        self._switcher.request(vocabulary, source)
        return SetParametersResult(successful=True)

    def _post_set(self, params: list[Parameter]) -> None:
        names, self._pending_names = self._pending_names, None
        if self._syncing() or names is None:
            return
        if not any(p.name == "vocabulary_file" for p in params):
            return
        # `vocabulary` shows the file's class names; written without triggering a rebuild.
        self._sync_thread = threading.get_ident()
        try:
            self._node.set_parameters(
                [Parameter("vocabulary", Parameter.Type.STRING_ARRAY, list(names))]
            )
        finally:
            self._sync_thread = None


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
        for pub in (self._pub, self._legend_pub):
            if isinstance(pub, SafePublisher):
                pub.managed = False  # the build progress is shown while inactive too
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
        if isinstance(self._pub, SafePublisher):
            self._pub.managed = False  # reports in every lifecycle state
        self._timer = node.create_timer(period, self.publish)

    def publish(self) -> None:
        node = self._node
        state = node.lifecycle_state if isinstance(node, GuardedNode) else "active"
        if isinstance(node, GuardedNode) and not node.configured:
            level, message, values = DiagnosticStatus.OK, f"{state}: models not loaded", {}
        else:
            level, message, values = self._collect()
        values = {"lifecycle_state": state, **values}
        if isinstance(node, GuardedNode):
            values.setdefault("callback_errors", node.callback_errors)
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


class SafePublisher(Publisher):
    """A publisher that never publishes once its node is closing and never raises because the
    context was shut down underneath it (Ctrl-C while a frame is in flight)."""

    owner: GuardedNode | None = None
    managed = True  # outputs: only while the node is active; diagnostics/vocabulary: always

    def publish(self, msg: Any) -> None:
        owner = self.owner
        if owner is not None and (owner.closing or (self.managed and not owner.active)):
            return
        try:
            super().publish(msg)
        except Exception:
            # RCLError "publisher's context is invalid", or the publisher already destroyed:
            # only expected while shutting down; anything else is a real error.
            if owner is None or (owner.context.ok() and not owner.closing):
                raise


class GuardedNode(LifecycleNode):
    """A managed (lifecycle) node whose callbacks can never take the executor down.

    Every subscription, timer and service callback created through this node is wrapped: an
    exception is logged (throttled), counted in `callback_errors` (reported on /diagnostics) and
    the executor keeps spinning. Setting parameters never raises out of the parameter service
    either, and every refused change is logged with its reason.

    Lifecycle (as yolo_ros): the constructor declares parameters only; `configure` runs the
    node's `load()` (models, publishers, worker), `activate` subscribes to the inputs created by
    `load()` and enables the output publishers, `deactivate` unsubscribes and stops publishing
    (models stay loaded), `cleanup` runs `unload()` and frees everything `load()` created,
    `shutdown` does what is needed from any state. With the `autostart` parameter (default true)
    the constructor configures and activates, so plain start-up works without a lifecycle manager
    and a configure error is raised to the caller as a start-up error.
    """

    # Class defaults: rclpy creates the parameter services inside Node.__init__, before ours.
    callback_errors = 0
    last_callback_error = ""
    closing = False  # set once shutdown starts: nothing is published after it
    params: Any = None  # the node's parameter dataclass, kept current by declare_node_params
    configured = False  # load() ran: models in memory
    active = False  # inputs subscribed, outputs published
    _loading = False

    def __init__(self, node_name: str, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._inputs: list[list[Any]] = []  # [create_subscription args, subscription or None]
        self._owned: list[Any] = []  # publishers and timers created by load()
        self._startup_error: BaseException | None = None
        self._close_timeout = 5.0

    # -- what each node provides -------------------------------------------------------------

    def load(self) -> None:
        """Load models, create publishers, subscriptions, timers, workers (configure)."""
        raise NotImplementedError(f"{type(self).__name__} must define load()")

    def unload(self, timeout: float = 5.0) -> None:
        """Stop workers and drop the models (cleanup); publishers etc. are freed here."""

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def lifecycle_state(self) -> str:
        try:
            return str(self._state_machine.current_state[1])
        except Exception:
            return "finalized"

    def start(self) -> None:
        """Call at the end of the constructor: with `autostart`, configure and activate now and
        raise a configure error as a start-up error; else wait for lifecycle transitions."""
        if not getattr(self.params, "autostart", True):
            self.get_logger().info(
                "autostart is false: waiting for lifecycle transitions "
                f"(ros2 lifecycle set {self.get_fully_qualified_name()} configure, then activate)"
            )
            return
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise self._startup_error or RuntimeError("configure failed")
        self.trigger_activate()

    def on_configure(self, state: Any) -> TransitionCallbackReturn:
        self._startup_error = None
        self._loading = True
        try:
            self.load()
        except Exception as exc:
            self._startup_error = exc
            self.get_logger().error(f"configure failed: {exc}")
            self._loading = False
            with contextlib.suppress(Exception):
                self._free(1.0)
            return TransitionCallbackReturn.FAILURE
        finally:
            self._loading = False
        for entry in self._inputs:  # inputs are subscribed only while active
            self.destroy_subscription(entry[1])
            entry[1] = None
        self.configured = True
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: Any) -> TransitionCallbackReturn:
        for entry in self._inputs:
            if entry[1] is None:
                msg_type, topic, callback, a, kw = entry[0]
                entry[1] = self.create_subscription(msg_type, topic, callback, *a, **kw)
        self.active = True
        self.get_logger().info("active: subscribed, publishing")
        return super().on_activate(state)

    def on_deactivate(self, state: Any) -> TransitionCallbackReturn:
        self.active = False
        self._unsubscribe()
        self.get_logger().info("inactive: unsubscribed, models kept loaded")
        return super().on_deactivate(state)

    def on_cleanup(self, state: Any) -> TransitionCallbackReturn:
        self._free(self._close_timeout)
        self.get_logger().info("unconfigured: models freed")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: Any) -> TransitionCallbackReturn:
        self.closing = True
        self._free(self._close_timeout)
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: Any) -> TransitionCallbackReturn:
        with contextlib.suppress(Exception):
            self._free(1.0)
        return TransitionCallbackReturn.SUCCESS

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop for good (Ctrl-C, tests): nothing is published after this, models are freed."""
        self.closing = True
        self._close_timeout = timeout
        if self.lifecycle_state in ("unconfigured", "inactive", "active"):
            try:
                self.trigger_shutdown()
                return
            except Exception:  # a transition in progress: free directly
                pass
        self._free(timeout)

    def _unsubscribe(self) -> None:
        for entry in self._inputs:
            if entry[1] is not None:
                with contextlib.suppress(Exception):
                    self.destroy_subscription(entry[1])
                entry[1] = None

    def _free(self, timeout: float) -> None:
        self.active = False
        self._unsubscribe()
        if self.configured or self._inputs or self._owned:
            try:
                self.unload(timeout)
            except Exception as exc:
                self.callback_failed("unload", exc)
        for entity in self._owned:
            with contextlib.suppress(Exception):
                if isinstance(entity, Publisher):
                    self.destroy_publisher(entity)
                else:
                    self.destroy_timer(entity)
        self._owned.clear()
        self._inputs.clear()
        self.configured = False
        if self.closing:
            return  # the process ends: no point collecting
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    @property
    def _runtime(self) -> dict[str, Any]:
        """The current parameter values by name (read-only view of `params`)."""
        return vars(self.params)

    def check_param(self, name: str, value: Any) -> str | None:
        """Node-specific check of a runtime parameter change: the refusal reason, or None."""
        return None

    def params_changed(self, names: set[str]) -> None:
        """Called after runtime parameters changed (`self.params` is already the new one)."""

    def create_publisher(self, msg_type: Any, topic: str, *a: Any, **kw: Any) -> Publisher:  # type: ignore[override]
        kw.setdefault("publisher_class", SafePublisher)
        pub = super().create_publisher(msg_type, topic, *a, **kw)
        if isinstance(pub, SafePublisher):
            pub.owner = self
        if self._loading:
            self._owned.append(pub)
        return pub

    def guard(self, callback: Callable[..., Any], what: str) -> Callable[..., Any]:
        """`callback` wrapped so that an exception is logged and counted, never raised."""

        @functools.wraps(callback)  # keeps the signature rclpy inspects (message info or not)
        def guarded(*args: Any) -> Any:
            try:
                return callback(*args)
            except Exception as exc:
                self.callback_failed(what, exc)
                # A service must still answer: return the (default) response object.
                return args[1] if what.startswith("service") and len(args) == 2 else None

        return guarded

    def callback_failed(self, what: str, exc: BaseException) -> None:
        self.callback_errors += 1
        self.last_callback_error = f"{what}: {type(exc).__name__}: {exc}"
        with contextlib.suppress(Exception):  # the logger must not turn this into a crash
            self.get_logger().error(
                f"{self.last_callback_error} (the node keeps running)", throttle_duration_sec=5.0
            )

    def create_subscription(self, msg_type: Any, topic: str, callback: Callable, *a, **kw):  # type: ignore[override]
        sub = super().create_subscription(
            msg_type, topic, self.guard(callback, f"subscription {topic}"), *a, **kw
        )
        if self._loading:  # an input: subscribed while active only
            self._inputs.append([(msg_type, topic, callback, a, kw), sub])
        return sub

    def create_timer(self, timer_period_sec: float, callback: Callable, *a, **kw):  # type: ignore[override]
        timer = super().create_timer(timer_period_sec, self.guard(callback, "timer"), *a, **kw)
        if self._loading:
            self._owned.append(timer)
        return timer

    def create_service(self, srv_type: Any, srv_name: str, callback: Callable, *a, **kw):  # type: ignore[override]
        return super().create_service(
            srv_type, srv_name, self.guard(callback, f"service {srv_name}"), *a, **kw
        )

    def set_parameters_atomically(self, parameter_list: list[Parameter]) -> SetParametersResult:
        names = ", ".join(p.name for p in parameter_list)
        try:
            result = super().set_parameters_atomically(parameter_list)
        except ParameterNotDeclaredException as exc:
            result = SetParametersResult(successful=False, reason=str(exc))
        except Exception as exc:  # a parameter callback failed: refuse, never crash
            self.callback_failed(f"setting parameter(s) {names}", exc)
            result = SetParametersResult(
                successful=False, reason=f"refused after an internal error: {exc}"
            )
        if not result.successful:
            self.get_logger().warning(f"refused parameter(s) {names}: {result.reason}")
        return result

    def set_parameters(self, parameter_list: list[Parameter]) -> list[SetParametersResult]:  # type: ignore[override]
        return [self.set_parameters_atomically([p]) for p in parameter_list]


STARTUP_ERRORS = (
    FileNotFoundError,
    VocabularyError,
    ValueError,
    InvalidParameterTypeException,
    InvalidParameterValueException,
)
"""Errors a user can fix before starting again: reported as one line, exit code 1."""


SHUTDOWN_SECONDS = 0.8
"""Time the node gives its worker and vocabulary build to finish after SIGINT/SIGTERM; a frame
still inside the model after that is abandoned (nothing is published after shutdown starts)."""


def run_node(factory: Callable[[], Node], name: str, args: list[str] | None = None) -> int:
    """The console-script main of a node: spin until SIGINT/SIGTERM, clean exit, no traceback.

    - Start-up errors a user can fix (a missing checkpoint, an invalid vocabulary or parameter)
      print one line "start-up failed" and return 1; a signal during start-up exits 0.
    - Once running, an error escaping the executor is logged and counted as a runtime error
      and the node keeps spinning; it is never reported as a start-up failure.
    - SIGINT and SIGTERM are handled here (rclpy's handlers are not installed): the first one
      requests shutdown, later ones are ignored (a terminal's and launch's both arrive), so no
      KeyboardInterrupt lands in a thread join. Nothing is published after shutdown starts. The
      process exits 0 within about SHUTDOWN_SECONDS; a worker still inside a model forward pass
      after that is abandoned with os._exit instead of risking an abort at interpreter exit.
    """
    stop = threading.Event()
    state = {"running": False, "aborting": False}

    def on_signal(signum: int, _frame: Any) -> None:
        if state["running"]:
            stop.set()
        elif not state["aborting"]:  # still loading models: nothing to save, leave now
            state["aborting"] = True
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    node = None
    code = 0
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        try:
            node = factory()
        except STARTUP_ERRORS as exc:
            print(f"[{name}] start-up failed: {exc}", file=sys.stderr)
            code = 1
            return code
        executor = MultiThreadedExecutor(num_threads=2)
        executor.add_node(node)
        state["running"] = True
        while not stop.is_set() and rclpy.ok():
            try:
                executor.spin_once(timeout_sec=0.1)  # wakes often enough to see a signal
            except ExternalShutdownException:
                break
            except Exception as exc:  # log, count, keep spinning
                if isinstance(node, GuardedNode):
                    node.callback_failed("executor", exc)
                else:
                    print(f"[{name}] runtime error: {exc}", file=sys.stderr)
        state["running"] = False
        state["aborting"] = True  # from here on every signal is ignored
        if node is not None:
            _close(node, executor)
            node = None
    except KeyboardInterrupt:  # a signal while starting up
        state["aborting"] = True
    finally:
        state["aborting"] = True
        if node is not None:
            with contextlib.suppress(Exception):
                _close(node, None)
        rclpy.try_shutdown()
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and t.is_alive()]
    if others:
        # A thread is still inside native code (a forward pass, a build): leave now rather than
        # let interpreter finalisation abort ("terminate called without an active exception").
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _close(node: Node, executor: MultiThreadedExecutor | None) -> None:
    """Stop processing and publishing, free the node, within SHUTDOWN_SECONDS."""
    deadline = time.monotonic() + SHUTDOWN_SECONDS
    if isinstance(node, GuardedNode):
        node.closing = True
    shutdown = getattr(node, "shutdown", None)
    if callable(shutdown):
        shutdown(timeout=SHUTDOWN_SECONDS * 0.8)
    if executor is not None:
        executor.shutdown(timeout_sec=max(0.1, deadline - time.monotonic()))
    node.destroy_node()
