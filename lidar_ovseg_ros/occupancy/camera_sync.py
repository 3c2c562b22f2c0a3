"""Surround-camera sets: keep the newest image per camera, fuse when they agree in time.

A set is complete when every camera has an image within `max_delay` seconds of the newest one.
A camera that stays late (its newest image is more than `max_delay` older than the others, or
missing, for longer than `wait` seconds of arrival time) is dropped from that set rather than
stalling all of them; the caller fills it with a blank view and reports it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


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


@dataclass
class CameraSetSynchronizer:
    camera_names: tuple[str, ...]
    max_delay: float = 0.1
    wait: float = 0.5
    _latest: dict[str, CameraImage] = field(default_factory=dict)
    _last_emitted: float = float("-inf")
    late_counts: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if not self.camera_names:
            raise ValueError("give at least one camera name")
        if len(set(self.camera_names)) != len(self.camera_names):
            raise ValueError(f"duplicate camera names in {list(self.camera_names)}")
        if self.max_delay < 0 or self.wait < 0:
            raise ValueError("max_delay and wait must be >= 0")
        self.late_counts = dict.fromkeys(self.camera_names, 0)

    def add(self, name: str, item: CameraImage) -> CameraSet | None:
        """Store the newest image of `name`; return a set when one is ready."""
        if name not in self.late_counts:
            raise KeyError(f"unknown camera '{name}'; expected one of {list(self.camera_names)}")
        with self._lock:
            self._latest[name] = item
            return self._try_emit(item.arrival)

    def poll(self, now: float) -> CameraSet | None:
        """Called periodically: emits a partial set once the late cameras exceeded `wait`."""
        with self._lock:
            return self._try_emit(now)

    def _try_emit(self, now: float) -> CameraSet | None:
        fresh = {n: im for n, im in self._latest.items() if im.stamp > self._last_emitted}
        if not fresh:
            return None
        newest = max(im.stamp for im in fresh.values())
        in_window = {n: im for n, im in fresh.items() if newest - im.stamp <= self.max_delay}
        missing = [n for n in self.camera_names if n not in in_window]
        if missing:
            first_arrival = min(im.arrival for im in in_window.values())
            if now - first_arrival < self.wait:
                return None  # give the late cameras a little longer
            for n in missing:
                self.late_counts[n] += 1
        self._last_emitted = newest
        for n in in_window:
            self._latest.pop(n, None)
        return CameraSet(images=in_window, missing=missing, stamp=newest)
