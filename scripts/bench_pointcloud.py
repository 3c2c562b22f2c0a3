#!/usr/bin/env python3
"""Throughput of the PointCloud2 codec (lidar_ovseg_ros.pointcloud) against a plain memcpy.

For 35k points (one nuScenes sweep) and 260k points (a 128-beam sweep), times decoding and
encoding of a Velodyne XYZIRT layout with PCL padding (point_step 32), the same layout organized
with padded rows (copy path), and the labeled output layout (point_step 28). The baseline is
``numpy.frombuffer(data, np.uint8).copy()`` of a message of the same size; ``x memcpy`` is the
operation's median time divided by the baseline's. Prints a markdown table.

Run: ``.venv/bin/python scripts/bench_pointcloud.py [--repeats 60] [--sizes 35000 260000]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from lidar_ovseg_ros.pointcloud import (
    FLOAT32,
    UINT16,
    FieldSpec,
    decode_fields,
    labeled_cloud_to_msg,
    pack_arrays,
    pack_rgb,
    packed_to_msg,
    read_points,
)

# velodyne_pcl::PointXYZIRT as PCL lays it out: xyz + 4 pad bytes, intensity, ring, time, pad.
VELODYNE_FIELDS = (
    FieldSpec("x", 0, FLOAT32),
    FieldSpec("y", 4, FLOAT32),
    FieldSpec("z", 8, FLOAT32),
    FieldSpec("intensity", 16, FLOAT32),
    FieldSpec("ring", 20, UINT16),
    FieldSpec("time", 24, FLOAT32),
)
VELODYNE_STEP = 32
ROWS = 40  # organized variant: 40 rows (35k and 260k both divide)
ROW_PAD = 16  # bytes of padding per row in the organized variant


def p90(values: list[float]) -> float:
    return float(np.percentile(values, 90))


def velodyne_arrays(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "x": rng.normal(0, 20, n).astype(np.float32),
        "y": rng.normal(0, 20, n).astype(np.float32),
        "z": rng.normal(0, 2, n).astype(np.float32),
        "intensity": rng.integers(0, 256, n).astype(np.float32),
        "ring": rng.integers(0, 32, n).astype(np.uint16),
        "time": np.sort(rng.random(n, dtype=np.float32) * np.float32(0.1)),
    }


def bench_size(n: int, repeats: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    from std_msgs.msg import Header

    header = Header(frame_id="lidar")
    arrays = velodyne_arrays(n, rng)
    velodyne = packed_to_msg(
        header, pack_arrays(arrays, fields=VELODYNE_FIELDS, point_step=VELODYNE_STEP)
    )
    organized = packed_to_msg(
        header,
        pack_arrays(
            arrays,
            fields=VELODYNE_FIELDS,
            point_step=VELODYNE_STEP,
            height=ROWS,
            row_step=(n // ROWS) * VELODYNE_STEP + ROW_PAD,
        ),
    )
    xyz = np.stack([arrays["x"], arrays["y"], arrays["z"]], axis=1)
    label = rng.integers(0, 16, n).astype(np.uint16)
    score = rng.random(n, dtype=np.float32)
    colors = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    packed = pack_rgb(colors)
    labeled = labeled_cloud_to_msg(header, xyz, arrays["intensity"], label, score, colors)

    def encode_velodyne() -> Any:
        return pack_arrays(arrays, fields=VELODYNE_FIELDS, point_step=VELODYNE_STEP)

    def encode_labeled(rgb: np.ndarray) -> Any:
        return labeled_cloud_to_msg(header, xyz, arrays["intensity"], label, score, rgb)

    vel = "velodyne XYZIRT ps32"
    org = f"velodyne organized {ROWS} rows +{ROW_PAD} B/row"
    lab = "labeled ps28"
    cases: list[tuple[str, str, Any, Callable[[], Any]]] = [
        (vel, "decode read_points (views)", velodyne, lambda: read_points(velodyne)),
        (vel, "decode read_points copy=True", velodyne, lambda: read_points(velodyne, copy=True)),
        (vel, "decode decode_fields (views)", velodyne, lambda: decode_fields(velodyne)),
        (
            vel,
            "decode decode_fields copy=True",
            velodyne,
            lambda: decode_fields(velodyne, copy=True),
        ),
        (org, "decode read_points (row copy)", organized, lambda: read_points(organized)),
        (vel, "encode pack_arrays (bytes only)", velodyne, encode_velodyne),
        (vel, "encode to PointCloud2", velodyne, lambda: packed_to_msg(header, encode_velodyne())),
        (lab, "decode read_points (views)", labeled, lambda: read_points(labeled)),
        (lab, "decode decode_fields (views)", labeled, lambda: decode_fields(labeled)),
        (lab, "encode labeled_cloud_to_msg, rgb uint8", labeled, lambda: encode_labeled(colors)),
        (lab, "encode labeled_cloud_to_msg, rgb packed", labeled, lambda: encode_labeled(packed)),
    ]

    # One baseline per message size, then all cases timed round-robin so that load from other
    # processes on the machine spreads evenly over them (medians and ratios stay comparable).
    jobs: list[tuple[str, str, int, Callable[[], Any]]] = []
    seen_sizes: set[int] = set()
    for layout, op, msg, fn in cases:
        nbytes = len(msg.data)
        if nbytes not in seen_sizes:
            seen_sizes.add(nbytes)
            raw = bytes(msg.data)
            copy_op = "baseline frombuffer(bytes).copy()"
            jobs.append(
                (layout, copy_op, nbytes, lambda raw=raw: np.frombuffer(raw, np.uint8).copy())
            )
        jobs.append((layout, op, nbytes, fn))
    samples: list[list[float]] = [[] for _ in jobs]
    for _ in range(3):  # warm-up
        for _, _, _, fn in jobs:
            fn()
    for _ in range(repeats):
        for i, (_, _, _, fn) in enumerate(jobs):
            t0 = time.perf_counter()
            fn()
            samples[i].append(time.perf_counter() - t0)
    rows = []
    baselines: dict[int, float] = {}
    for (layout, op, nbytes, _), t in zip(jobs, samples):
        med = statistics.median(t)
        if op.startswith("baseline"):
            baselines[nbytes] = med
        rows.append(
            {"n": n, "layout": layout, "op": op, "bytes": nbytes, "median": med, "p90": p90(t)}
        )
    for r in rows:
        r["ratio"] = r["median"] / baselines[r["bytes"]]
    return rows


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"numpy {np.__version__}, no GPU"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[35_000, 260_000])
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(
        f"Machine: {machine()}; {args.repeats} repeats after 3 warm-up rounds, cases interleaved.\n"
    )
    print("| points | layout | operation | MB | median ms | p90 ms | MB/s | Mpoints/s | x memcpy |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for n in args.sizes:
        for r in bench_size(n, args.repeats, rng):
            mb = r["bytes"] / 1e6
            print(
                f"| {r['n']:,} | {r['layout']} | {r['op']} | {mb:.2f} | "
                f"{r['median'] * 1e3:.3f} | {r['p90'] * 1e3:.3f} | {mb / r['median']:,.0f} | "
                f"{r['n'] / r['median'] / 1e6:,.1f} | {r['ratio']:.2f} |"
            )


if __name__ == "__main__":
    main()
