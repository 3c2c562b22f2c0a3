"""Background vocabulary builds with atomic swaps."""

import threading
import time

import pytest

from lidar_ovseg_ros.vocabulary import Vocabulary
from lidar_ovseg_ros.vocabulary_switch import VocabularySwitcher


class RecordingModel:
    """A real model stand-in at the interface level: prepare is slow and can be gated."""

    def __init__(self) -> None:
        self.active = None
        self.gates: dict[str, threading.Event] = {}
        self.prepared: list[str] = []

    def prepare_vocabulary(self, vocabulary, progress=None, cancel=None):
        gate = self.gates.get(vocabulary.names[0])
        for i in range(3):
            if progress:
                progress(i, 3, f"class {i}")
            if gate is not None:
                gate.wait(5)
            if vocabulary.names[0] == "broken":
                raise RuntimeError("no images for class 'broken'")
        self.prepared.append(vocabulary.names[0])
        return ("prepared", vocabulary)

    def activate(self, prepared):
        self.active = prepared[1]


def test_old_vocabulary_stays_active_until_new_one_is_complete():
    model = RecordingModel()
    switcher = VocabularySwitcher(model)
    first = Vocabulary.from_names(["car", "tree"])
    switcher.activate_now(first, "start")
    model.gates["road"] = threading.Event()
    second = Vocabulary.from_names(["road", "person"])
    switcher.request(second, "parameter")
    time.sleep(0.1)
    st = switcher.status()
    assert st.state == "building" and st.pending == second
    assert model.active == first and st.active == first
    model.gates["road"].set()
    assert switcher.wait(5)
    st = switcher.status()
    assert st.state == "active" and st.active == second and model.active == second
    assert st.switches == 2


def test_failed_build_keeps_the_active_vocabulary_and_reports():
    model = RecordingModel()
    statuses = []
    switcher = VocabularySwitcher(model, on_change=statuses.append)
    good = Vocabulary.from_names(["car"])
    switcher.activate_now(good, "start")
    switcher.request(Vocabulary.from_names(["broken"]), "parameter")
    assert switcher.wait(5)
    st = switcher.status()
    assert st.active == good and model.active == good
    assert st.state == "active" and "no images for class 'broken'" in st.last_error
    assert any(s.state == "building" for s in statuses)


def test_newer_request_cancels_unfinished_one():
    model = RecordingModel()
    switcher = VocabularySwitcher(model)
    model.gates["slow"] = threading.Event()
    switcher.request(Vocabulary.from_names(["slow"]), "a")
    time.sleep(0.05)
    switcher.request(Vocabulary.from_names(["fast"]), "b")
    model.gates["slow"].set()
    assert switcher.wait(5)
    assert model.active.names == ["fast"]
    assert "slow" not in model.prepared
    assert switcher.status().active_source == "b"


def test_startup_failure_raises():
    model = RecordingModel()
    switcher = VocabularySwitcher(model)
    with pytest.raises(RuntimeError, match="broken"):
        switcher.activate_now(Vocabulary.from_names(["broken"]), "start")
