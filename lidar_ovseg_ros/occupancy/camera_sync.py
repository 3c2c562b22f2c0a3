"""Surround-camera sets: keep the newest image per camera, fuse when they agree in time.

Stamps are header stamps (seconds); arrivals are monotonic clock readings (seconds).

- A set is the newest pending image of each camera within `max_delay` seconds (stamps) of the
  newest one. It is emitted as soon as every camera is in it, or every camera except those that
  were already missing from the previous set (a dead camera is waited for once, not every set).
  Otherwise, `wait` seconds (arrival time) after the first image of the pending set arrived, the
  set is emitted without the late cameras, which are counted (`late`); the caller blanks them.
  The wait is not restarted when a newer image replaces a pending one, so a dead camera can
  never hold the other cameras hostage, whatever their rate. A timed-out set is emitted by the
  second `poll` that finds it due (or when an image of a newer set arrives): a ROS executor runs
  timers before the subscriptions that became ready with them, so images already received when
  the wait ran out still get in.
- An image stamped more than `future_tolerance` seconds after the caller's clock is dropped and
  counted (`future`): one bad stamp cannot push the set time ahead of every later image.
- An image not newer than the last emitted set is out of order. It is held aside; it is dropped
  and counted (`out_of_order`) as soon as any newer image arrives. When instead only such images
  arrive, time has jumped backwards (a bag replayed or looped, a simulation reset): the usual
  ROS rule applies, the state is cleared, the jump counted (`time_jumps`) and reported to
  `on_time_jump`, and the held-aside images start the new timeline. A jump is declared at once
  when the held-aside images form a complete set, else after `2 * wait` seconds without any
  newer image (so one camera with a broken clock cannot clear the others' state).

Every image received ends in exactly one counter (per camera, see `CameraCounters`):
received = used + replaced + undecodable + bad_calibration + dropped + out_of_order + future
+ stale + pending. The synchronizer counts received, replaced, out_of_order, future and stale;
the caller counts what happens to the images of an emitted set.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# What became of each image received, per camera (plus `late`: sets a camera was missing from,
# and `bad_camera_info`: calibration messages refused).
IMAGE_FATES = (
    "used",  # in a published map
    "replaced",  # overwritten by a newer image (or set) before a set (or the worker) took it
    "undecodable",  # not a decodable image (at arrival or in the worker)
    "bad_calibration",  # no valid CameraInfo, no pose, or an image size its CameraInfo cannot fit
    "dropped",  # in a set that was not mapped (no model yet, or the model failed)
    "out_of_order",  # stamped no later than the last set, and a newer image came
    "future",  # stamped more than future_tolerance ahead of the node clock
    "stale",  # older than max_delay before the set emitted without it, or cleared by a time jump
)
COUNTER_KEYS = ("received", *IMAGE_FATES, "late", "bad_camera_info")


class CameraCounters:
    """Thread-safe per-camera counters with the keys of `COUNTER_KEYS`."""

    def __init__(self, camera_names: tuple[str, ...]) -> None:
        self._lock = threading.Lock()
        self._counts = {n: dict.fromkeys(COUNTER_KEYS, 0) for n in camera_names}

    def add(self, name: str, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name][key] += n

    def get(self, name: str, key: str) -> int:
        with self._lock:
            return self._counts[name][key]

    def total(self, key: str) -> int:
        with self._lock:
            return sum(c[key] for c in self._counts.values())

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {n: dict(c) for n, c in self._counts.items()}


@dataclass
class CameraImage:
    stamp: float  # header stamp, seconds
    arrival: float  # monotonic seconds when it arrived
    image: Any  # decoded later by the worker (bytes or array)
    info: Any = None  # camera intrinsics source (e.g. a CameraInfo)


@dataclass
class CameraSet:
    images: dict[str, CameraImage]
    missing: list[str]  # cameras dropped from this set (late or never seen)
    stamp: float  # newest stamp in the set

    @property
    def arrival_spread(self) -> float:
        """Seconds between the first and the last arrival of the images in the set."""
        arrivals = [im.arrival for im in self.images.values()]
        return max(arrivals) - min(arrivals) if arrivals else 0.0


@dataclass
class CameraSetSynchronizer:
    camera_names: tuple[str, ...]
    max_delay: float = 0.1
    wait: float = 0.5
    future_tolerance: float = 0.0  # > 0: drop images stamped this far after the clock given
    on_time_jump: Callable[[float, float], None] | None = None  # (old set stamp, new stamp)
    counters: CameraCounters = field(init=False)
    time_jumps: int = 0
    # Seconds after a set's first image that the image of a camera left out of it came (the
    # wait that would have included it); the most recent ones.
    late_by: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    _last_first_arrival: float | None = None  # first arrival of the last emitted set
    _latest: dict[str, CameraImage] = field(default_factory=dict)  # newer than the last set
    _behind: dict[str, CameraImage] = field(default_factory=dict)  # not newer: held aside
    _behind_since: float | None = None  # arrival of the first held-aside image
    _waiting_since: float | None = None  # arrival of the first image of the pending set
    _absent: set[str] = field(default_factory=set)  # cameras missing from the previous set
    _last_emitted: float = float("-inf")
    _overdue_seen: bool = False  # the last poll found the pending set past its wait
    _jump_note: tuple[float, float] | None = None  # reported to on_time_jump outside the lock
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if not self.camera_names:
            raise ValueError("give at least one camera name")
        if len(set(self.camera_names)) != len(self.camera_names):
            raise ValueError(f"duplicate camera names in {list(self.camera_names)}")
        if self.max_delay < 0 or self.wait < 0 or self.future_tolerance < 0:
            raise ValueError("max_delay, wait and future_tolerance must be >= 0")
        self.counters = CameraCounters(tuple(self.camera_names))

    @property
    def late_counts(self) -> dict[str, int]:
        """Per camera: how many sets were emitted without it."""
        snap = self.counters.snapshot()
        return {n: snap[n]["late"] for n in self.camera_names}

    @property
    def future_stamps(self) -> int:
        return self.counters.total("future")

    @property
    def out_of_order_stamps(self) -> int:
        return self.counters.total("out_of_order")

    def pending(self) -> dict[str, int]:
        """Per camera: images held now (waiting for a set, or held aside)."""
        with self._lock:
            return {n: int(n in self._latest) + int(n in self._behind) for n in self.camera_names}

    def late_by_seconds(self) -> list[float]:
        """A copy of `late_by`."""
        with self._lock:
            return list(self.late_by)

    def _check_name(self, name: str) -> None:
        if name not in self.camera_names:
            raise KeyError(f"unknown camera '{name}'; expected one of {list(self.camera_names)}")

    def reject(self, name: str, fate: str) -> None:
        """Count an image the caller refused before adding it (e.g. `undecodable`)."""
        self._check_name(name)
        if fate not in IMAGE_FATES:
            raise KeyError(f"unknown image fate '{fate}'")
        self.counters.add(name, "received")
        self.counters.add(name, fate)

    def add(self, name: str, item: CameraImage, clock: float | None = None) -> CameraSet | None:
        """Store the newest image of `name`; return a set when one is ready.

        `clock`: the receiver's clock in the stamps' time base (seconds), for the future check;
        None or 0 (a simulated clock not started yet) skips it."""
        self._check_name(name)
        early = None
        with self._lock:
            self.counters.add(name, "received")
            if (
                self.future_tolerance > 0
                and clock
                and clock > 0
                and item.stamp > clock + self.future_tolerance
            ):
                self.counters.add(name, "future")
            elif item.stamp > self._last_emitted:
                if self._behind:  # the timeline goes on: the held-aside images were just late
                    for n in self._behind:
                        self.counters.add(n, "out_of_order")
                    self._behind.clear()
                    self._behind_since = None
                if self._overdue(item):  # a new round begins: map the overdue one first
                    early = self._try_emit(item.arrival, polling=True, force=True)
                if name in self._latest:
                    self.counters.add(name, "replaced")
                self._latest[name] = item
                self._absent.discard(name)
                if self._waiting_since is None:
                    self._waiting_since = item.arrival
            else:
                late = item.stamp >= self._last_emitted - self.max_delay
                if late and name in self._absent:
                    self._absent.discard(name)  # alive, only slow: wait for it next time
                    if self._last_first_arrival is not None:
                        self.late_by.append(item.arrival - self._last_first_arrival)
                if name in self._behind:
                    self.counters.add(name, "out_of_order")
                self._behind[name] = item
                if self._behind_since is None:
                    self._behind_since = item.arrival
            out = early or self._step(item.arrival, polling=False)
        self._notify_jump()
        return out

    def poll(self, now: float) -> CameraSet | None:
        """Called periodically: emits a partial set once the late cameras exceeded `wait`."""
        with self._lock:
            out = self._step(now, polling=True)
        self._notify_jump()
        return out

    def _notify_jump(self) -> None:
        with self._lock:
            jump, self._jump_note = self._jump_note, None
        if jump is not None and self.on_time_jump is not None:
            self.on_time_jump(*jump)

    def reset(self) -> None:
        """Forget everything (e.g. the receiver's clock jumped back); counted as a time jump."""
        with self._lock:
            old = self._last_emitted
            for n in self._latest:
                self.counters.add(n, "stale")
            for n in self._behind:
                self.counters.add(n, "out_of_order")
            self._latest.clear()
            self._behind.clear()
            self._behind_since = self._waiting_since = None
            self._overdue_seen = False
            self._absent.clear()
            self._last_emitted = float("-inf")
            self._last_first_arrival = None
            self.time_jumps += 1
            self._jump_note = (old, float("-inf"))
        self._notify_jump()

    def _step(self, now: float, polling: bool) -> CameraSet | None:
        if self._behind and self._jump_due(now):
            self._jump()
        return self._try_emit(now, polling)

    def _overdue(self, item: CameraImage) -> bool:
        """`item` starts a newer set while the pending one waited `wait` already."""
        if not self._latest or self._waiting_since is None:
            return False
        newest = max(im.stamp for im in self._latest.values())
        late = item.arrival - self._waiting_since >= self.wait
        return late and item.stamp - newest > self.max_delay

    def _jump_due(self, now: float) -> bool:
        expected = [n for n in self.camera_names if n not in self._absent]
        stamps = [self._behind[n].stamp for n in expected if n in self._behind]
        if (
            expected
            and len(stamps) == len(expected)
            and max(stamps) - min(stamps) <= self.max_delay
        ):
            return True  # a complete set from the past: time went backwards
        assert self._behind_since is not None
        return now - self._behind_since >= 2 * self.wait

    def _jump(self) -> None:
        old = self._last_emitted
        for n in self._latest:
            self.counters.add(n, "stale")
        self._latest = dict(self._behind)
        self._behind.clear()
        self._behind_since = None
        self._waiting_since = min(im.arrival for im in self._latest.values())
        self._absent.clear()  # a new timeline: wait for every camera again
        self._overdue_seen = False
        self._last_emitted = float("-inf")
        self._last_first_arrival = None
        self.time_jumps += 1
        self._jump_note = (old, max(im.stamp for im in self._latest.values()))

    def _try_emit(self, now: float, polling: bool, force: bool = False) -> CameraSet | None:
        if not self._latest:
            return None
        newest = max(im.stamp for im in self._latest.values())
        in_window = {n: im for n, im in self._latest.items() if newest - im.stamp <= self.max_delay}
        missing = [n for n in self.camera_names if n not in in_window]
        if missing:
            awaited = [n for n in missing if n not in self._absent]
            assert self._waiting_since is not None
            if awaited and not force:
                if now - self._waiting_since < self.wait:
                    return None  # give the late cameras a little longer
                if not polling:
                    return None  # timeouts are the poller's (see poll)
                if not self._overdue_seen:
                    self._overdue_seen = True  # let images already received come in first
                    return None
            for n in missing:
                self.counters.add(n, "late")
        for n in self._latest:
            if n not in in_window:
                self.counters.add(n, "stale")
        self._latest = {}
        self._overdue_seen = False
        self._last_first_arrival = self._waiting_since
        self._waiting_since = None
        self._absent = set(missing)
        self._last_emitted = newest
        return CameraSet(images=in_window, missing=missing, stamp=newest)
