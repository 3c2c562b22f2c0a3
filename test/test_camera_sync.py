"""Camera-set synchronisation: complete sets, late cameras dropped after the wait."""

import pytest

from lidar_ovseg_ros.occupancy.camera_sync import CameraImage, CameraSetSynchronizer

CAMS = ("A", "B", "C")


def test_complete_set_is_emitted_when_all_cameras_agree():
    sync = CameraSetSynchronizer(CAMS, max_delay=0.1, wait=0.5)
    assert sync.add("A", CameraImage(10.00, 0.0, "a")) is None
    assert sync.add("B", CameraImage(10.03, 0.01, "b")) is None
    out = sync.add("C", CameraImage(10.05, 0.02, "c"))
    assert out is not None and out.missing == [] and out.stamp == 10.05
    assert {n: im.image for n, im in out.images.items()} == {"A": "a", "B": "b", "C": "c"}
    assert sync.poll(1.0) is None  # nothing new


def test_late_camera_is_dropped_after_wait_and_counted():
    sync = CameraSetSynchronizer(CAMS, max_delay=0.1, wait=0.5)
    sync.add("A", CameraImage(20.0, 1.0, "a"))
    sync.add("B", CameraImage(20.0, 1.0, "b"))
    sync.add("C", CameraImage(19.0, 1.0, "old c"))  # a second behind: out of the window
    assert sync.poll(1.2) is None  # still waiting for C
    out = sync.poll(1.6)
    assert out is not None and out.missing == ["C"] and set(out.images) == {"A", "B"}
    assert sync.late_counts == {"A": 0, "B": 0, "C": 1}


def test_old_images_are_not_reused_and_bad_names_refused():
    sync = CameraSetSynchronizer(CAMS, max_delay=0.1, wait=10.0)
    for n in CAMS:
        out = sync.add(n, CameraImage(5.0, 0.0, n))
    assert out is not None
    assert sync.add("A", CameraImage(4.0, 0.1, "stale")) is None  # older than the last set
    with pytest.raises(KeyError, match="unknown camera 'Z'"):
        sync.add("Z", CameraImage(6.0, 0.0, "z"))
    with pytest.raises(ValueError, match="duplicate"):
        CameraSetSynchronizer(("A", "A"))
