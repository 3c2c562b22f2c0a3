"""Keep-the-newest work queue: callbacks hand items over, one worker thread processes the newest.

Sensor callbacks must never run the model: they store the latest message here and return. When the
worker is busy and a newer item arrives, the older unprocessed one is dropped and counted, so the
output always follows the newest input and latency never accumulates.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

_LOG = logging.getLogger(__name__)


class LatestWorker(Generic[T]):
    """One worker thread over a one-slot mailbox; newer submissions replace older ones."""

    def __init__(self, process: Callable[[T], None], name: str = "latest-worker") -> None:
        self._process = process
        self._cond = threading.Condition()
        self._item: T | None = None
        self._has_item = False
        self._stopping = False
        self._busy = False
        self.submitted = 0
        self.dropped = 0
        self.processed = 0
        self.failed = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> None:
        """Hand over an item; a still-pending older one is dropped (and counted)."""
        with self._cond:
            if self._has_item:
                self.dropped += 1
            self._item = item
            self._has_item = True
            self.submitted += 1
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._has_item and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                item = self._item
                self._item = None
                self._has_item = False
                self._busy = True
            try:
                self._process(item)  # type: ignore[arg-type]
                with self._cond:
                    self.processed += 1
            except Exception as exc:  # the worker must outlive any single bad item
                with self._cond:
                    self.failed += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    stopping = self._stopping
                if not stopping:  # an item cut short by shutdown is counted, not reported
                    _LOG.exception("processing failed")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is pending or running (for tests and clean shutdown)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._has_item and not self._busy, timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the item in progress; pending items are dropped."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
