"""Keep-the-newest worker: stale items are dropped and counted, failures do not kill it."""

import threading

from lidar_ovseg_ros.latest_worker import LatestWorker


def test_newest_wins_and_stale_items_are_counted():
    gate, started = threading.Event(), threading.Event()
    seen: list[int] = []

    def process(item: int) -> None:
        if item == 0:
            started.set()
            gate.wait(5)
        seen.append(item)

    worker = LatestWorker(process)
    worker.submit(0)  # blocks the worker
    assert started.wait(5)
    for i in range(1, 6):
        worker.submit(i)  # 1..4 are replaced before the worker is free
    gate.set()
    assert worker.wait_idle(5)
    worker.stop()
    assert seen == [0, 5]
    assert worker.dropped == 4
    assert worker.submitted == 6 and worker.processed == 2


def test_a_failing_item_does_not_stop_the_worker():
    seen: list[int] = []

    def process(item: int) -> None:
        if item == 1:
            raise RuntimeError("bad item")
        seen.append(item)

    worker = LatestWorker(process)
    worker.submit(1)
    assert worker.wait_idle(5)
    worker.submit(2)
    assert worker.wait_idle(5)
    worker.stop()
    assert seen == [2]
    assert worker.failed == 1 and "bad item" in worker.last_error
