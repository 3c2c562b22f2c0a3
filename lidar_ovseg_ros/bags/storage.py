"""rosbag2 bags without rosbag2: write and read MCAP / sqlite3 bags with `rosbags`.

Machines without a ROS 2 install (CI, laptops with only the PyPI rclpy wheels) still need bags.
Everything here works on raw CDR bytes, so it needs no rclpy; message definitions and RIHS01 type
hashes come from the `rosbags` Jazzy typestore, and types it does not know are loaded from the
`.msg` files installed under `share/<package>/msg/`.

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

if TYPE_CHECKING:  # pragma: no cover - typing only
    from rosbags.interfaces import Connection
    from rosbags.typesys.store import Typestore

__all__ = [
    "BAG_VERSION",
    "STORAGES",
    "BagError",
    "BagInfo",
    "BagMessage",
    "BagTopic",
    "BagWriter",
    "bag_output_path",
    "default_typestore",
    "ensure_msgtype",
    "make_qos",
    "read_bag_info",
    "read_bag_messages",
]

#: rosbag2 metadata version written by Jazzy (QoS stored with string enums).
BAG_VERSION = 9
STORAGES: dict[str, StoragePlugin] = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
_STORAGE_SUFFIXES = {".mcap": "mcap", ".db3": "sqlite3"}


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
