"""Bag replay and recording over DDS with rclpy, for machines without rosbag2 (`ros2 bag` is
preferred where it is installed). The only module of `lidar_ovseg_ros.bags` that imports rclpy:
import it lazily (the `replay` / `record` commands do, inside their handlers).

`BagPlayer` publishes a bag's raw CDR bytes with the recorded timing (like `ros2 bag play`):
rclpy's `Publisher.publish(bytes)` sends serialized data as is, but creating the publisher still
needs the message's Python type support, so topics whose package is not installed (tf2_msgs in
the PyPI venv: the demo bag's /tf_static) are skipped with a warning. `BagRecorder` subscribes
with `raw=True` and hands the bytes to `lidar_ovseg_ros.bags.storage.BagWriter`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rclpy
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock

from .storage import (
    BagError,
    BagInfo,
    BagWriter,
    bag_output_path,
    make_qos,
    read_bag_info,
    read_bag_messages,
)

__all__ = [
    "BagPlayer",
    "BagRecorder",
    "PlayOptions",
    "message_class",
    "parse_remaps",
    "run_record",
    "run_replay",
]

RELIABILITY = {"reliable": ReliabilityPolicy.RELIABLE, "best_effort": ReliabilityPolicy.BEST_EFFORT}
_CLOCK_TOPIC = "/clock"


def message_class(msgtype: str) -> type | None:
    """'sensor_msgs/msg/PointCloud2' -> sensor_msgs.msg.PointCloud2, or None if not installed."""
    parts = msgtype.split("/")
    if len(parts) == 2:  # 'pkg/Name' (ROS 1 style names in old bags)
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3:
        return None
    pkg, kind, name = parts
    try:
        module = importlib.import_module(f"{pkg}.{kind}")
    except ImportError:
        return None
    return getattr(module, name, None)


def parse_remaps(items: Iterable[str]) -> dict[str, str]:
    """['/a:=/b', ...] -> {'/a': '/b'}; raises BagError naming a malformed entry."""
    out: dict[str, str] = {}
    for item in items:
        old, sep, new = item.partition(":=")
        if not sep or not old or not new:
            raise BagError(f"remap {item!r} is not of the form old_topic:=new_topic")
        out[old] = new
    return out


@dataclass
class PlayOptions:
    """How to replay: `rate` scales time (2.0 = twice as fast); `start_offset` is seconds into the
    bag; `wait_for_subscribers` holds playback (up to `wait_timeout` s) until the data topics have
    that many subscriptions in total; `delay` adds a fixed pause before the first message."""

    rate: float = 1.0
    loop: bool = False
    clock: bool = False
    clock_hz: float = 40.0
    start_offset: float = 0.0
    topics: Sequence[str] | None = None
    remap: Mapping[str, str] = field(default_factory=dict)
    reliability: str = "reliable"
    depth: int = 10
    wait_for_subscribers: int = 0
    wait_timeout: float = 10.0
    delay: float = 0.0

    def validate(self) -> PlayOptions:
        for name in ("rate", "clock_hz"):
            value = getattr(self, name)
            if not value > 0:
                raise BagError(f"{name} must be > 0, got {value!r}")
        for name in ("start_offset", "wait_timeout", "delay"):
            value = getattr(self, name)
            if not value >= 0:
                raise BagError(f"{name} must be >= 0, got {value!r}")
        if self.reliability not in RELIABILITY:
            raise BagError(
                f"reliability must be one of {sorted(RELIABILITY)}, not {self.reliability!r}"
            )
        if self.depth < 1 or self.wait_for_subscribers < 0:
            raise BagError("depth must be >= 1 and wait_for_subscribers >= 0")
        return self


class BagPlayer(Node):
    """Publishes a bag over DDS with its original timing; playback runs in its own thread.

    Publishers are created in the constructor (so subscribers can match before `start()`); header
    stamps are not rewritten. With `clock`, `/clock` carries the bag time (use_sim_time nodes
    follow the bag); on loop the clock jumps back to the bag's start, as with `ros2 bag play`.
    """

    def __init__(
        self,
        bag: str | Path,
        options: PlayOptions | None = None,
        *,
        node_name: str = "bag_player",
        context: Context | None = None,
        **node_kwargs: Any,
    ) -> None:
        super().__init__(node_name, context=context, **node_kwargs)
        self.bag = Path(bag)
        self.options = (options or PlayOptions()).validate()
        self.info: BagInfo = read_bag_info(self.bag)
        wanted = self.info.topics if self.options.topics is None else set(self.options.topics)
        missing = sorted(set(wanted) - set(self.info.topics))
        if missing:
            self.get_logger().warning(f"topics not in {self.bag}: {missing}")
        self.skipped: dict[str, str] = {}
        self._pubs: dict[str, Any] = {}
        for name, topic in self.info.topics.items():
            if name not in wanted:
                continue
            cls = message_class(topic.msgtype)
            if cls is None:
                self.skipped[name] = topic.msgtype
                self.get_logger().warning(
                    f"skipping {name}: message type {topic.msgtype} is not installed in this "
                    "Python environment (rclpy needs its type support to publish)"
                )
                continue
            latched = topic.transient_local or name == "/tf_static"
            qos = QoSProfile(
                history=HistoryPolicy.KEEP_LAST,
                depth=max(self.options.depth, topic.count) if latched else self.options.depth,
                reliability=RELIABILITY[self.options.reliability],
                durability=(
                    DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE
                ),
            )
            out = self.options.remap.get(name, name)
            self._pubs[name] = self.create_publisher(cls, out, qos)
        self._clock_pub = None
        if self.options.clock:
            # Reliable matches both reliable and best-effort (rclpy's TimeSource) subscribers.
            self._clock_pub = self.create_publisher(Clock, _CLOCK_TOPIC, QoSProfile(depth=1))
        self.published: dict[str, int] = dict.fromkeys(self._pubs, 0)
        self.loops_completed = 0
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def topics(self) -> dict[str, str]:
        """Bag topic -> published topic name, for the topics being played."""
        return {name: pub.topic_name for name, pub in self._pubs.items()}

    def subscription_count(self) -> int:
        return sum(pub.get_subscription_count() for pub in self._pubs.values())

    def start(self) -> BagPlayer:
        if self._thread is not None:
            raise BagError("this player was started already")
        self._thread = threading.Thread(target=self._run, name="bag_player", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Block until playback ends (or `timeout`); True when it ended."""
        return self.done.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def destroy_node(self) -> None:
        self.stop()
        super().destroy_node()

    # -- playback thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._wait_before_start()
            while not self._stop.is_set():
                sent = self._play_once()
                if self._stop.is_set():
                    break
                self.loops_completed += 1
                if not self.options.loop:
                    break
                if not sent:  # nothing to play (no topics, offset past the end): do not spin
                    self.get_logger().warning(f"nothing to play in {self.bag}; stopping the loop")
                    break
        except Exception as exc:  # the node may be torn down mid-publish on shutdown
            if self.context.ok() and not self._stop.is_set():
                self.error = exc
                self.get_logger().error(f"playback of {self.bag} failed: {exc}")
        finally:
            self.done.set()

    def _wait_before_start(self) -> None:
        want = self.options.wait_for_subscribers
        if want:
            deadline = time.monotonic() + self.options.wait_timeout
            while self.subscription_count() < want and time.monotonic() < deadline:
                if self._stop.wait(0.02):
                    return
            if self.subscription_count() < want:
                self.get_logger().warning(
                    f"only {self.subscription_count()} of {want} subscriptions after "
                    f"{self.options.wait_timeout:.1f} s; playing anyway"
                )
        if self.options.delay:
            self._stop.wait(self.options.delay)

    def _publish_clock(self, bag_ns: int) -> None:
        if self._clock_pub is not None:
            msg = Clock()
            msg.clock.sec, msg.clock.nanosec = divmod(int(bag_ns), 1_000_000_000)
            self._clock_pub.publish(msg)

    def _sleep_until(self, wall: float, bag_start: int, wall_start: float, bag_next: int) -> None:
        """Wait for `wall` (monotonic s), ticking /clock at clock_hz meanwhile."""
        tick = 1.0 / self.options.clock_hz
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= wall:
                return
            if self._clock_pub is None:
                self._stop.wait(wall - now)
                continue
            bag_now = bag_start + int((now - wall_start) * self.options.rate * 1e9)
            self._publish_clock(min(bag_now, bag_next))
            self._stop.wait(min(tick, wall - now))

    def _play_once(self) -> int:
        """One pass over the bag; returns the number of messages published."""
        sent = 0
        if not self._pubs:
            return sent
        start = self.info.start_ns + int(self.options.start_offset * 1e9)
        bag_start: int | None = None
        wall_start = 0.0
        for msg in read_bag_messages(self.bag, self._pubs, start_ns=start):
            if self._stop.is_set():
                return sent
            if bag_start is None:
                bag_start, wall_start = msg.timestamp_ns, time.monotonic()
            wall = wall_start + (msg.timestamp_ns - bag_start) / 1e9 / self.options.rate
            self._sleep_until(wall, bag_start, wall_start, msg.timestamp_ns)
            if self._stop.is_set():
                return sent
            self._publish_clock(msg.timestamp_ns)
            self._pubs[msg.topic].publish(msg.data)
            self.published[msg.topic] += 1
            sent += 1
        return sent


def _adapted_qos(infos: Sequence[Any]) -> QoSProfile:
    """Subscription QoS that matches every publisher (like rosbag2's adaptive QoS)."""
    best_effort = any(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in infos)
    latched = bool(infos) and all(
        i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos
    )
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=100,
        reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )


class BagRecorder(Node):
    """Records topics into a rosbag2 bag (MCAP by default) with receive timestamps.

    Topic types come from `types` or from the ROS graph (the recorder waits for a publisher, then
    subscribes with a QoS that matches it). Call `close()` (or `destroy_node()`) to finish the
    bag; only a closed bag has its metadata and index.
    """

    def __init__(
        self,
        output: str | Path,
        topics: Sequence[str],
        *,
        types: Mapping[str, str] | None = None,
        storage: str = "mcap",
        discovery_period: float = 0.1,
        node_name: str = "bag_recorder",
        context: Context | None = None,
        **node_kwargs: Any,
    ) -> None:
        if not topics:
            raise BagError("give at least one topic to record")
        super().__init__(node_name, context=context, **node_kwargs)
        self.topics = [self.resolve_topic_name(t) for t in topics]
        self.types = {self.resolve_topic_name(k): v for k, v in (types or {}).items()}
        self.writer = BagWriter(output, storage=storage).open()
        self.path = self.writer.path
        self._subs: dict[str, Any] = {}
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        self._timer = self.create_timer(discovery_period, self._discover)
        self._discover()

    @property
    def subscribed(self) -> list[str]:
        with self._lock:
            return list(self._subs)

    @property
    def message_counts(self) -> dict[str, int]:
        return self.writer.message_counts

    def _warn_once(self, topic: str, text: str) -> None:
        if topic not in self._warned:
            self._warned.add(topic)
            self.get_logger().warning(text)

    def _discover(self) -> None:
        with self._lock:
            if not self.writer.is_open:
                return
            pending = [t for t in self.topics if t not in self._subs]
            if not pending:
                self._timer.cancel()
                return
            graph = dict(self.get_topic_names_and_types())
            for topic in pending:
                infos = self.get_publishers_info_by_topic(topic)
                msgtype = self.types.get(topic)
                if msgtype is None:
                    if not infos or not graph.get(topic):
                        continue  # no publisher yet: its type and QoS are unknown
                    msgtype = graph[topic][0]
                cls = message_class(msgtype)
                if cls is None:
                    self._warn_once(topic, f"cannot record {topic}: {msgtype} is not installed")
                    continue
                offered = [self._bag_qos(i.qos_profile) for i in infos[:1]]
                self.writer.add_topic(topic, msgtype, offered)
                self._subs[topic] = self.create_subscription(
                    cls,
                    topic,
                    lambda data, t=topic, m=msgtype: self._on_message(t, m, data),
                    _adapted_qos(infos),
                    raw=True,
                )
                self.get_logger().info(f"recording {topic} [{msgtype}]")

    @staticmethod
    def _bag_qos(profile: QoSProfile) -> Any:
        return make_qos(
            reliable=profile.reliability != ReliabilityPolicy.BEST_EFFORT,
            transient_local=profile.durability == DurabilityPolicy.TRANSIENT_LOCAL,
            depth=max(1, int(profile.depth)),
            keep_all=profile.history == HistoryPolicy.KEEP_ALL,
        )

    def _on_message(self, topic: str, msgtype: str, data: bytes) -> None:
        stamp = self.get_clock().now().nanoseconds
        # A message that arrives while the bag is being closed is dropped.
        with contextlib.suppress(BagError):
            self.writer.write(topic, msgtype, data, stamp)

    def close(self) -> Path:
        """Stop recording and finish the bag; returns its directory."""
        with self._lock:
            self._timer.cancel()
            for sub in self._subs.values():
                self.destroy_subscription(sub)
            self._subs.clear()
        self.writer.close()
        return self.path

    def destroy_node(self) -> None:
        self.close()
        super().destroy_node()


# --------------------------------------------------------------------------------------------
# Runners of `lidar-ovseg replay ...` / `lidar-ovseg record ...` (the parsers are the commands')
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (docker stop, systemd, launch escalation) ends like SIGINT: the bag is closed.

    Installed before rclpy.init so rclpy's handler chains to it instead of the default, which
    would kill the process with the bag unfinished.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _spin_until(executor: SingleThreadedExecutor, context: Context, stop: Any) -> None:
    try:
        while context.ok() and not stop():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass


def _shutdown(context: Context, executor: SingleThreadedExecutor | None, node: Node | None) -> None:
    if executor is not None:
        executor.shutdown(timeout_sec=1.0)
    if node is not None:
        node.destroy_node()
    rclpy.try_shutdown(context=context)


def _ros_argv(args: argparse.Namespace) -> list[str]:
    """argv for rclpy.init: the `--ros-args` sections the CLI set aside (remaps, parameters)."""
    return ["lidar-ovseg", *getattr(args, "ros_args", [])]


def run_replay(args: argparse.Namespace) -> int:
    """Replay `args.bag` until it ends (or SIGINT/SIGTERM); returns an exit code."""
    with _sigterm_as_interrupt():
        return _replay(args)


def _replay(args: argparse.Namespace) -> int:
    try:
        options = PlayOptions(
            rate=args.rate,
            loop=args.loop,
            clock=args.clock,
            clock_hz=args.clock_hz,
            start_offset=args.start_offset,
            topics=args.topics,
            remap=parse_remaps(args.remap),
            reliability=args.qos_reliability,
            wait_for_subscribers=args.wait_for_subscribers,
            wait_timeout=args.wait_timeout,
            delay=args.delay,
        ).validate()
        read_bag_info(args.bag)
    except BagError as exc:
        print(f"lidar-ovseg replay: {exc}", file=sys.stderr)
        return 2
    context = Context()
    executor: SingleThreadedExecutor | None = None
    player: BagPlayer | None = None
    code = 0
    try:
        rclpy.init(args=_ros_argv(args), context=context)
        executor = SingleThreadedExecutor(context=context)
        player = BagPlayer(args.bag, options, context=context)
        executor.add_node(player)
        info = player.info
        skipped = f", skipped {sorted(player.skipped)}" if player.skipped else ""
        print(
            f"playing {args.bag}: {info.message_count} messages, {info.duration_ns / 1e9:.2f} s, "
            f"{len(player.topics)} topics{skipped}",
            flush=True,
        )
        player.start()
        _spin_until(executor, context, player.done.is_set)
        if player.done.is_set():
            print(f"published {sum(player.published.values())} messages", flush=True)
        code = 1 if player.error is not None else 0
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except BagError as exc:
        print(f"lidar-ovseg replay: {exc}", file=sys.stderr)
        code = 2
    finally:
        _shutdown(context, executor, player)
    return code


def _parse_types(items: Iterable[str]) -> dict[str, str]:
    out = {}
    for item in items:
        topic, sep, msgtype = item.partition(":=")
        if not sep or not topic or msgtype.count("/") != 2:
            raise BagError(f"--type {item!r} is not of the form /topic:=package/msg/Type")
        out[topic] = msgtype
    return out


def run_record(args: argparse.Namespace) -> int:
    """Record until --duration elapses or SIGINT/SIGTERM, then close the bag; exit code."""
    with _sigterm_as_interrupt():
        return _record(args)


def _record(args: argparse.Namespace) -> int:
    try:
        types = _parse_types(args.types)
        if args.duration is not None and not args.duration > 0:
            raise BagError(f"--duration must be > 0, got {args.duration}")
        output = bag_output_path(args.output)
        if output.exists():
            raise BagError(f"{output} exists already; choose a new bag name")
    except BagError as exc:
        print(f"lidar-ovseg record: {exc}", file=sys.stderr)
        return 2
    context = Context()
    executor: SingleThreadedExecutor | None = None
    recorder: BagRecorder | None = None
    code = 0
    try:
        rclpy.init(args=_ros_argv(args), context=context)
        executor = SingleThreadedExecutor(context=context)
        recorder = BagRecorder(
            output, args.topics, types=types, storage=args.storage, context=context
        )
        executor.add_node(recorder)
        print(f"recording {recorder.topics} into {output}", flush=True)
        deadline = None if args.duration is None else time.monotonic() + args.duration
        _spin_until(
            executor, context, lambda: deadline is not None and time.monotonic() >= deadline
        )
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except BagError as exc:
        print(f"lidar-ovseg record: {exc}", file=sys.stderr)
        code = 2
    finally:
        if recorder is not None:
            recorder.close()
            print(f"wrote {recorder.path}: {recorder.message_counts}", flush=True)
        _shutdown(context, executor, recorder)
    return code
