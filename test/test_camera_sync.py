"""Camera-set synchronisation: complete sets, late cameras dropped after the wait."""

import numpy as np
import pytest

from lidar_ovseg_ros.occupancy.camera_sync import IMAGE_FATES, CameraImage, CameraSetSynchronizer

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
    assert sync.poll(1.55) is None  # due: one more poll, images already received get in first
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


# -- time jumps, out-of-order and future stamps (issue 8.1, issue 9.8) ---------------------------


def _send_set(sync, stamp, arrival, cams=CAMS, clock=None):
    out = None
    for i, n in enumerate(cams):
        got = sync.add(n, CameraImage(stamp + 0.001 * i, arrival + 0.001 * i, n), clock)
        out = got or out
    return out


def test_backwards_jump_clears_state_counts_once_and_goes_on():
    jumps = []
    sync = CameraSetSynchronizer(
        CAMS, max_delay=0.1, wait=0.5, on_time_jump=lambda old, new: jumps.append((old, new))
    )
    for k in range(3):  # the bag: 100.0, 100.1, 100.2
        assert _send_set(sync, 100.0 + 0.1 * k, k).stamp == pytest.approx(100.002 + 0.1 * k)
    # The bag replayed from its start: the first complete set from the past is a time jump.
    out = _send_set(sync, 100.0, 10.0)
    assert out is not None and out.missing == [] and out.stamp == pytest.approx(100.002)
    assert sync.time_jumps == 1 and len(jumps) == 1 and jumps[0][0] == pytest.approx(100.202)
    for k in range(1, 3):  # and mapping goes on along the new timeline
        assert _send_set(sync, 100.0 + 0.1 * k, 10.0 + k) is not None
    assert sync.time_jumps == 1


def test_a_looped_single_frame_bag_maps_every_pass():
    sync = CameraSetSynchronizer(CAMS, max_delay=0.1, wait=0.5)
    for k in range(4):  # the same stamps every pass
        assert _send_set(sync, 7.0, float(k)) is not None
    assert sync.time_jumps == 3


def test_jump_with_a_dead_camera_is_declared_after_twice_the_wait():
    sync = CameraSetSynchronizer(CAMS, max_delay=0.1, wait=0.5)
    assert _send_set(sync, 50.0, 0.0) is not None
    # Camera C dies; the bag restarts at 10 s.
    assert _send_set(sync, 10.0, 5.0, cams=("A", "B")) is None
    assert sync.poll(5.9) is None  # not yet: maybe A and B were just late
    assert sync.poll(6.01) is None  # 2 * wait without any newer image: time went backwards
    out = sync.poll(6.06)
    assert sync.time_jumps == 1 and out is not None
    assert out.missing == ["C"] and out.stamp == pytest.approx(10.001)
    # C is now known missing: the next sets are not held back by waiting for it.
    out = _send_set(sync, 10.1, 6.1, cams=("A", "B"))
    assert out is not None and out.missing == ["C"]


def test_one_camera_with_a_broken_clock_cannot_clear_the_others():
    sync = CameraSetSynchronizer(CAMS, max_delay=0.1, wait=0.5)
    emitted = []
    for k in range(20):  # C stamps from 1970, A and B are fine, all at 10 Hz
        t = 0.1 * k
        for n, stamp in (("A", 100.0 + t), ("C", 3.0 + t), ("B", 100.0 + t)):
            out = sync.add(n, CameraImage(stamp, t, n)) or sync.poll(t + 0.05)
            if out is not None:
                emitted.append(out)
        out = sync.poll(t + 0.09)
        if out is not None:
            emitted.append(out)
    assert sync.time_jumps == 0
    assert len(emitted) >= 15 and all(set(s.images) == {"A", "B"} for s in emitted)
    assert sync.counters.get("C", "out_of_order") >= 14
    assert sync.late_counts["C"] == len(emitted)


def test_future_stamp_is_dropped_and_counted_against_the_clock():
    sync = CameraSetSynchronizer(CAMS, max_delay=0.1, wait=0.5, future_tolerance=1.0)
    assert sync.add("A", CameraImage(1e9, 0.0, "future"), clock=200.0) is None
    assert sync.counters.get("A", "future") == 1 and sync.future_stamps == 1
    out = _send_set(sync, 200.0, 0.1, clock=200.0)
    assert out is not None and out.missing == [] and out.images["A"].image == "A"
    # within the tolerance is fine; a clock of 0 (simulated time not started) skips the check
    assert _send_set(sync, 200.9, 0.2, clock=200.0) is not None
    assert _send_set(sync, 500.0, 0.3, clock=0.0) is not None
    assert sync.future_stamps == 1


def test_future_stamp_without_a_clock_does_not_hold_sets_hostage():
    sync = CameraSetSynchronizer(CAMS, max_delay=0.1, wait=0.5)
    sync.add("A", CameraImage(1e9, 0.0, "future"))
    assert sync.poll(0.55) is None
    assert sync.poll(0.6).stamp == 1e9  # mapped alone (no clock to tell), then ...
    out = _send_set(sync, 200.0, 1.0)  # ... the next real set is mapped, not ignored forever
    assert out is not None and out.missing == [] and sync.time_jumps == 1


def test_out_of_order_image_is_dropped_when_a_newer_one_comes():
    sync = CameraSetSynchronizer(CAMS, max_delay=0.1, wait=0.5)
    _send_set(sync, 30.0, 0.0, cams=("A", "B"))
    sync.poll(0.55)
    out = sync.poll(0.6)
    assert out.missing == ["C"]
    assert sync.add("C", CameraImage(29.95, 0.7, "C late")) is None  # belonged to that set
    assert sync.pending()["C"] == 1
    out = _send_set(sync, 30.1, 0.8)
    assert out is not None and out.missing == [] and out.images["C"].image == "C"
    assert sync.counters.get("C", "out_of_order") == 1 and sync.time_jumps == 0


# -- late and dead cameras -------------------------------------------------------------------------


def test_a_dead_camera_never_holds_fast_cameras_hostage():
    # Before: the wait restarted with every newer image, so at 10 Hz with wait 0.5 s no set was
    # ever mapped while one camera was dead.
    sync = CameraSetSynchronizer(CAMS, max_delay=0.1, wait=0.5)
    emitted = []
    for k in range(30):
        t = 0.1 * k
        out = _send_set(sync, 100.0 + t, t, cams=("A", "B"))
        emitted += [o for o in (out, sync.poll(t + 0.05)) if o is not None]
    assert len(emitted) >= 23  # one wait (+ one poll) for the dead camera, then every set
    assert all(o.missing == ["C"] for o in emitted)
    assert sync.counters.get("A", "replaced") <= 6


def test_a_slow_camera_is_waited_for_again():
    sync = CameraSetSynchronizer(CAMS, max_delay=0.1, wait=0.5)
    _send_set(sync, 10.0, 0.0, cams=("A", "B"))
    sync.poll(0.55)
    assert sync.poll(0.6).missing == ["C"]
    sync.add("C", CameraImage(10.0, 0.65, "C slow"))  # C is alive, only slow
    assert list(sync.late_by) == [pytest.approx(0.65)]  # a wait of 0.65 s would have had it
    assert _send_set(sync, 11.0, 1.0, cams=("A", "B")) is None  # so it is waited for
    out = sync.add("C", CameraImage(11.0, 1.3, "C"))
    assert out is not None and out.missing == []


# -- accounting (issue 9.9) ------------------------------------------------------------------------


def test_every_image_is_accounted_under_random_traffic():
    rng = np.random.default_rng(0)
    sync = CameraSetSynchronizer(CAMS, max_delay=0.1, wait=0.3, future_tolerance=2.0)
    emitted = dict.fromkeys(CAMS, 0)
    t = 0.0
    for _ in range(5000):
        t += float(rng.exponential(0.02))
        name = CAMS[int(rng.integers(3))]
        kind = rng.random()
        stamp = 100.0 + t
        if kind < 0.05:
            stamp += 1000.0  # future
        elif kind < 0.15:
            stamp -= float(rng.uniform(0, 3))  # out of order / jump
        elif kind < 0.17:
            sync.reject(name, "undecodable")
            continue
        out = sync.add(name, CameraImage(stamp, t, None), clock=100.0 + t)
        out = out or (sync.poll(t) if rng.random() < 0.3 else None)
        for n in out.images if out else ():
            emitted[n] += 1
    pending = sync.pending()
    for name, c in sync.counters.snapshot().items():
        fates = sum(c[k] for k in IMAGE_FATES)
        assert c["received"] == fates + emitted[name] + pending[name], (name, c)
    assert sum(emitted.values()) > 1000 and sync.future_stamps > 0


def test_images_received_before_the_timeout_still_get_in():
    """A starved executor runs the poll timer first, then the image callbacks that were ready
    with it: the timed-out set waits one more poll, so the queued images complete it."""
    sync = CameraSetSynchronizer(CAMS, max_delay=0.1, wait=0.5)
    sync.add("A", CameraImage(40.0, 0.0, "a"))
    assert sync.poll(1.5) is None  # woke up late: due, but the callbacks queued behind it ...
    sync.add("B", CameraImage(40.01, 0.1, "b"))  # ... came in long before
    out = sync.add("C", CameraImage(40.02, 0.2, "c"))
    assert out is not None and out.missing == [] and sync.late_counts["C"] == 0


def test_a_newer_set_maps_the_overdue_one_first():
    sync = CameraSetSynchronizer(CAMS, max_delay=0.1, wait=0.5)
    _send_set(sync, 50.0, 0.0, cams=("A", "B"))
    out = sync.add("A", CameraImage(50.5, 0.7, "next a"))  # no poll ran in between
    assert out is not None and out.missing == ["C"] and out.stamp == pytest.approx(50.001)
    assert sync.pending()["A"] == 1 and sync.counters.get("A", "replaced") == 0
