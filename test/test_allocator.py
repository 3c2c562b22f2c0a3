"""allocator: freed arrays of a stream of varying sizes go back to the system (issue 9.6)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lidar_ovseg_ros import allocator

PROBE = """
import sys
import numpy as np
from lidar_ovseg_ros import allocator

def rss_mb():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

if sys.argv[1] == "tuned":
    assert allocator.configure()
big = np.ones(16 << 20, np.uint8)
del big  # a big free raises glibc's dynamic mmap threshold to 16 MB
base = rss_mb()
arrays = [np.ones(2 << 20, np.uint8) for _ in range(64)]  # 128 MB in 2 MB arrays
last = arrays[-1]
del arrays  # all freed but the last one, which pins the top of the heap
allocator.trim() if sys.argv[1] == "tuned" else None
print(rss_mb() - base)
"""

glibc = pytest.mark.skipif(not allocator.enabled(), reason="needs glibc malloc")


def _retained_mb(mode: str, **env: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    return float(out.stdout.strip().splitlines()[-1])


@glibc
def test_freed_arrays_are_returned_to_the_system():
    """Without the settings glibc keeps the 126 MB of freed 2 MB arrays resident (the heap
    grows with every burst of differently sized messages); with them it gives them back."""
    assert _retained_mb("plain") > 100
    assert _retained_mb("tuned") < 16


@glibc
def test_tuning_can_be_turned_off():
    assert _retained_mb("tuned", LIDAR_OVSEG_MALLOC_TUNING="1") < 16
    with pytest.raises(subprocess.CalledProcessError):  # configure() returns False: assert fails
        _retained_mb("tuned", LIDAR_OVSEG_MALLOC_TUNING="0")


def test_trimmer_is_rate_limited():
    trimmer = allocator.Trimmer(min_interval=3600.0)
    trimmer.maybe_trim()
    assert trimmer.trims == 1
    assert trimmer.maybe_trim() is False and trimmer.trims == 1
