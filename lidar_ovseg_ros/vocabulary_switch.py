"""Runtime vocabulary changes: build the new one in the background, then swap it in atomically.

Building a vocabulary can take minutes (images are generated per class). Meanwhile frames keep
being labeled with the active one. The model object is told to `activate` the new state only when
it is complete, so a frame is labeled either entirely by the old or entirely by the new
vocabulary. A newer request cancels an unfinished older one; a failed build leaves the active
vocabulary untouched and records the reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from lidar_ovseg_ros.vocabulary import Vocabulary

_LOG = logging.getLogger(__name__)


class VocabularyModel(Protocol):
    """What a model must offer to switch vocabularies without reloading its network."""

    def prepare_vocabulary(
        self,
        vocabulary: Vocabulary,
        progress: Callable[[int, int, str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Any: ...

    def activate(self, prepared: Any) -> None: ...


@dataclass
class SwitchStatus:
    """A snapshot for diagnostics and the vocabulary topic."""

    state: str  # "idle" (nothing active yet), "active", "building", "failed"
    active: Vocabulary | None
    active_source: str
    pending: Vocabulary | None = None
    pending_source: str = ""
    progress_done: int = 0
    progress_total: int = 0
    progress_message: str = ""
    last_error: str = ""
    switches: int = 0
    last_build_seconds: float | None = None
    history: list[str] = field(default_factory=list)

    @property
    def progress(self) -> float:
        if self.progress_total <= 0:
            return 0.0
        return self.progress_done / self.progress_total


class BuildCancelledError(RuntimeError):
    """A newer request replaced the build in progress."""


class VocabularySwitcher:
    """Serialises vocabulary builds on one background thread and swaps them in when complete."""

    def __init__(
        self,
        model: VocabularyModel,
        on_change: Callable[[SwitchStatus], None] | None = None,
    ) -> None:
        self._model = model
        self._on_change = on_change
        self._lock = threading.Lock()
        self._status = SwitchStatus(state="idle", active=None, active_source="")
        self._cancel: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self._generation = 0

    def status(self) -> SwitchStatus:
        with self._lock:
            s = self._status
            return SwitchStatus(**{**s.__dict__, "history": list(s.history)})

    def _notify(self) -> None:
        if self._on_change is not None:
            try:
                self._on_change(self.status())
            except Exception:
                _LOG.exception("vocabulary status callback failed")

    def activate_now(self, vocabulary: Vocabulary, source: str) -> None:
        """Build and activate synchronously (start-up); raises on failure."""
        start = time.monotonic()
        prepared = self._model.prepare_vocabulary(vocabulary)
        self._model.activate(prepared)
        with self._lock:
            self._status.state = "active"
            self._status.active = vocabulary
            self._status.active_source = source
            self._status.switches += 1
            self._status.last_build_seconds = time.monotonic() - start
            self._status.history.append(f"activated '{vocabulary.name}' from {source}")
        self._notify()

    def request(self, vocabulary: Vocabulary, source: str) -> None:
        """Start building `vocabulary` in the background, cancelling an unfinished build."""
        with self._lock:
            if self._cancel is not None:
                self._cancel.set()
            self._generation += 1
            generation = self._generation
            cancel = threading.Event()
            self._cancel = cancel
            self._status.state = "building"
            self._status.pending = vocabulary
            self._status.pending_source = source
            self._status.progress_done = 0
            self._status.progress_total = 0
            self._status.progress_message = "queued"
            previous = self._thread
            thread = threading.Thread(
                target=self._build,
                args=(vocabulary, source, generation, cancel, previous),
                name="vocabulary-build",
                daemon=True,
            )
            self._thread = thread
        thread.start()
        self._notify()

    def _build(
        self,
        vocabulary: Vocabulary,
        source: str,
        generation: int,
        cancel: threading.Event,
        previous: threading.Thread | None,
    ) -> None:
        if previous is not None:
            previous.join()  # one build at a time; the previous one was cancelled
        if cancel.is_set():
            return
        start = time.monotonic()

        def progress(done: int, total: int, message: str = "") -> None:
            if cancel.is_set():
                raise BuildCancelledError("replaced by a newer vocabulary request")
            with self._lock:
                if generation == self._generation:
                    self._status.progress_done = done
                    self._status.progress_total = total
                    self._status.progress_message = message
            self._notify()

        try:
            prepared = self._model.prepare_vocabulary(vocabulary, progress=progress, cancel=cancel)
        except Exception as exc:
            if cancel.is_set():
                return
            with self._lock:
                if generation != self._generation:
                    return
                self._status.state = "failed" if self._status.active is None else "active"
                self._status.last_error = (
                    f"building vocabulary '{vocabulary.name}' from {source} failed: "
                    f"{type(exc).__name__}: {exc}"
                )
                self._status.pending = None
                self._status.history.append(self._status.last_error)
            _LOG.error("%s", self._status.last_error)
            self._notify()
            return
        with self._lock:
            if cancel.is_set() or generation != self._generation:
                return
            self._model.activate(prepared)  # atomic swap inside the model
            self._status.state = "active"
            self._status.active = vocabulary
            self._status.active_source = source
            self._status.pending = None
            self._status.pending_source = ""
            self._status.progress_message = "done"
            self._status.last_error = ""
            self._status.switches += 1
            self._status.last_build_seconds = time.monotonic() - start
            self._status.history.append(f"activated '{vocabulary.name}' from {source}")
        self._notify()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the current background build to end (tests, shutdown)."""
        with self._lock:
            thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def shutdown(self, timeout: float = 5.0) -> None:
        with self._lock:
            if self._cancel is not None:
                self._cancel.set()
        self.wait(timeout)
