"""Auto-vocabulary rounds in the background, on the newest scan (and camera images).

The node's subscription callbacks only hand the newest data over (`submit_scan`,
`submit_image`: a reference is stored, nothing is computed); one daemon thread runs a round as
soon as a first scan is there and then every `period` seconds on whatever is newest, and hands
the result to `on_round` (which publishes captions and requests the vocabulary switch); a scan
is captioned once (no new scan: no round). Labeling
never waits for it. A failing round is counted and reported through `on_error`; the loop goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .pipeline import AutoVocabRound, AutoVocabulary

_LOG = logging.getLogger(__name__)


@dataclass
class RunnerStats:
    rounds: int = 0
    errors: int = 0
    scans_received: int = 0
    scans_skipped: int = 0  # replaced by a newer scan before a round used them
    images_received: int = 0
    image_errors: int = 0
    last_round_seconds: float | None = None
    last_error: str = ""


class AutoVocabRunner:
    """A background thread that runs `auto.run_round` every `period` seconds."""

    def __init__(
        self,
        auto: AutoVocabulary,
        period: float,
        on_round: Callable[[AutoVocabRound], None],
        on_error: Callable[[Exception], None] | None = None,
        max_image_age: float | None = None,
    ) -> None:
        if not period > 0:
            raise ValueError(f"the auto-vocabulary period must be > 0 seconds, got {period}")
        self.auto = auto
        self.period = float(period)
        self._on_round = on_round
        self._on_error = on_error
        self._max_image_age = max_image_age
        self._lock = threading.Lock()
        self._scan: np.ndarray | None = None
        self._scan_used = True
        self._images: dict[str, tuple[np.ndarray, float]] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = RunnerStats()

    def submit_scan(self, points: np.ndarray) -> None:
        """Store the newest scan (a reference; the caller must not modify it afterwards)."""
        with self._lock:
            if self._scan is not None and not self._scan_used:
                self.stats.scans_skipped += 1
            self._scan = points
            self._scan_used = False
            self.stats.scans_received += 1
            first = self.stats.rounds == 0 and self.stats.errors == 0
        if first:
            self._wake.set()

    def submit_image(self, name: str, image: np.ndarray | Callable[[], np.ndarray]) -> None:
        """Store the newest image of a camera: an array, or a callable that decodes it (called
        in the round's thread, so a subscription callback never decodes)."""
        with self._lock:
            self._images[name] = (image, time.monotonic())
            self.stats.images_received += 1

    def _take(self) -> tuple[np.ndarray | None, Mapping[str, Any]]:
        with self._lock:
            scan = None if self._scan_used else self._scan  # a scan is captioned once
            self._scan_used = True
            now = time.monotonic()
            images = {
                n: img
                for n, (img, t) in self._images.items()
                if self._max_image_age is None or now - t <= self._max_image_age
            }
        return scan, images

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="autovocab", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run_once(self) -> AutoVocabRound | None:
        """One round now on the newest scan and the newest image of each camera (None without a
        new scan)."""
        scan, pending = self._take()
        if scan is None:
            return None  # rounds follow the scans; images ride along with the newest ones
        t0 = time.perf_counter()
        images: dict[str, np.ndarray] = {}
        for name, image in pending.items():
            try:
                images[name] = image() if callable(image) else image
            except Exception as exc:  # one undecodable image must not cost the round
                self.stats.image_errors += 1
                self.stats.last_error = f"image {name}: {type(exc).__name__}: {exc}"
        result = self.auto.run_round(scan, images or None)
        self.stats.rounds += 1
        self.stats.last_round_seconds = time.perf_counter() - t0
        return result

    def _loop(self) -> None:
        # the first round as soon as a scan is there, then one every period
        self._wake.wait()
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                result = self.run_once()
                if result is not None and not self._stop.is_set():
                    self._on_round(result)
            except Exception as exc:  # a bad round must not end the loop
                self.stats.errors += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                _LOG.exception("auto-vocabulary round failed")
                if self._on_error is not None:
                    try:
                        self._on_error(exc)
                    except Exception:
                        _LOG.exception("auto-vocabulary error callback failed")
            wait = self.period - (time.monotonic() - t0)
            if self._stop.wait(max(wait, 0.0)):
                break
