"""Background auto-vocabulary rounds: first round on the first scan, then every period on the
newest scan; errors are counted and the loop goes on."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from lidar_ovseg_ros.autovocab.pipeline import AutoVocabConfig, AutoVocabulary
from lidar_ovseg_ros.autovocab.runner import AutoVocabRunner

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def auto():
    return AutoVocabulary.from_config(AutoVocabConfig(profile="tiny", image_captioner=""))


def test_rounds_run_in_the_background_on_the_newest_scan(auto, nuscenes_frame):
    rounds = []
    first, second = threading.Event(), threading.Event()

    def on_round(r):
        rounds.append(r)
        (second if first.is_set() else first).set()

    runner = AutoVocabRunner(auto, period=0.2, on_round=on_round)
    runner.start()
    time.sleep(0.3)
    assert rounds == []  # nothing before a scan
    t0 = time.monotonic()
    runner.submit_scan(nuscenes_frame.xyz[::8])
    assert time.monotonic() - t0 < 0.05  # the callback side only stores a reference
    assert first.wait(60)
    time.sleep(0.5)
    assert len(rounds) == 1  # the same scan is not captioned twice
    runner.submit_scan(nuscenes_frame.xyz[::6])
    assert second.wait(60)
    assert runner.running
    runner.stop()
    assert not runner.running
    assert runner.stats.rounds == 2 and runner.stats.errors == 0
    assert runner.stats.scans_received == 2
    assert [r.proposal.round for r in rounds] == [1, 2]
    assert "lidar/sector_0" in rounds[0].captions


def test_a_failing_round_is_counted_and_the_loop_continues(auto, nuscenes_frame):
    errors = []
    ok = threading.Event()
    runner = AutoVocabRunner(
        auto, period=0.05, on_round=lambda r: ok.set(), on_error=lambda e: errors.append(e)
    )
    runner.submit_scan(np.zeros((5, 2), np.float32))  # not [N, >=3]: the round fails
    runner.start()
    deadline = time.monotonic() + 30
    while not errors and time.monotonic() < deadline:
        time.sleep(0.02)
    runner.submit_scan(nuscenes_frame.xyz[::3])
    assert ok.wait(60)
    runner.stop()
    assert runner.stats.errors >= 1 and "points must be" in runner.stats.last_error
    assert runner.stats.rounds >= 1
    with pytest.raises(ValueError, match="period"):
        AutoVocabRunner(auto, period=0, on_round=lambda r: None)


def test_images_are_decoded_in_the_round_and_a_bad_one_is_counted(nuscenes_frame):
    auto = AutoVocabulary.from_config(AutoVocabConfig(profile="tiny"))
    runner = AutoVocabRunner(auto, period=10.0, on_round=lambda r: None)
    calls = []
    front = nuscenes_frame.cameras["CAM_FRONT"].load_image()

    def decode():
        calls.append("front")
        return front

    def broken():
        raise ValueError("not a JPEG")

    runner.submit_image("CAM_FRONT", decode)
    runner.submit_image("CAM_BACK", broken)
    assert calls == []  # nothing decoded on submission
    assert runner.run_once() is None  # rounds follow scans
    runner.submit_scan(nuscenes_frame.xyz[::8])
    r = runner.run_once()
    assert calls == ["front"]
    assert "camera/CAM_FRONT" in r.captions and "camera/CAM_BACK" not in r.captions
    assert runner.stats.image_errors == 1 and "not a JPEG" in runner.stats.last_error
