#!/usr/bin/env python3
"""Peak memory per point of the LiDAR labeling path, one fresh process per (model, size).

Each measurement runs in its own subprocess: build the model and a random 16-class prototype
set, label a small warm-up cloud, reset the peak-RSS mark (`/proc/self/clear_refs` = 5, Linux),
then label one cloud of N points and report `VmHWM - VmRSS before` (falls back to `ru_maxrss`
where the mark cannot be reset), plus the peak of the numpy/Python allocations (tracemalloc; torch
tensors are not traced) and psutil's RSS when psutil is installed.

Clouds are the worst case for memory: points spread uniformly over the 128 m x 128 m x 6 m crop,
so voxel subsampling keeps almost every point (M ~ N); a real 32-beam scan keeps about half.

Paths:
- segment: `LidarSegmenter.segment(points)` (preprocess, kNN, backbone, classifier, labels);
- node: what the LiDAR node does per cloud without DDS: PointCloud2 decode (`read_points`),
  segment, labeled PointCloud2 encode, voxel markers (`voxelize_labels`).

Models: tiny (the tiny profile backbone, 32 channels, 3 layers) and wide4 (the ScaLR+ width:
768 channels, 1024-d output, MLP head 2048, 4 layers instead of 48; memory does not grow with
depth since layers run one after the other).

    python scripts/bench_memory.py                                   # tiny + wide4, node path
    python scripts/bench_memory.py --models tiny --sizes 100000 500000 --path segment
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np

PROTOTYPES_PER_CLASS = 4
CLASSES = 16


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _cloud(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pts = np.empty((n, 4), np.float32)
    pts[:, :2] = rng.uniform(-63.0, 63.0, (n, 2))
    pts[:, 2] = rng.uniform(-3.0, 3.0, n)
    pts[:, 3] = rng.uniform(0.0, 100.0, n)
    return pts


def _build(model: str):
    import torch

    from lidar_ovseg_ros.models.waffleiron import WaffleIron, WaffleIronConfig
    from lidar_ovseg_ros.segmentation.classifier import ClassifierConfig
    from lidar_ovseg_ros.segmentation.features import PointFeatureExtractor
    from lidar_ovseg_ros.segmentation.preprocess import PreprocessConfig
    from lidar_ovseg_ros.segmentation.segmenter import LidarSegmenter
    from lidar_ovseg_ros.vocabulary import load_preset

    wi = WaffleIronConfig.tiny() if model == "tiny" else WaffleIronConfig.scalr_plus(depth=4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = WaffleIron(wi)
    extractor = PointFeatureExtractor(net, PreprocessConfig.nuscenes().for_backbone(wi))
    seg = LidarSegmenter(extractor, None, ClassifierConfig(), profile=model)
    vocab = load_preset("nuscenes")
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(len(vocab) * PROTOTYPES_PER_CLASS, wi.out_channels))
    labels = np.repeat(np.arange(len(vocab)), PROTOTYPES_PER_CLASS)
    seg.activate(seg.prepare_from_prototypes(vocab, feats.astype(np.float32), labels))
    return seg


def _node_path(seg, msg) -> int:
    from lidar_ovseg_ros.pointcloud import labeled_cloud_to_msg, read_points
    from lidar_ovseg_ros.voxels import voxelize_labels

    scan = read_points(msg)
    n = len(scan)
    points = np.zeros((n, 4), np.float32)
    points[:, :3] = scan.xyz
    points[:, 3] = scan.intensity
    result = seg.segment(points)
    rgb = result.vocabulary.vocabulary.colors_for(result.labels)
    out = labeled_cloud_to_msg(msg.header, scan.xyz, points[:, 3], result.labels, None, rgb)
    voxelize_labels(scan.xyz, result.labels, 0.4, max_voxels=20_000)
    return len(out.data)


def child(model: str, n: int, path: str, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    seg = _build(model)
    msg = None
    if path == "node":
        from lidar_ovseg_ros.pointcloud import arrays_to_msg

        warm = _cloud(2000, seed=1)
        _node_path(seg, arrays_to_msg(None, {k: warm[:, i] for i, k in enumerate("xyzi")}))
        pts = _cloud(n)
        msg = arrays_to_msg(
            None, {"x": pts[:, 0], "y": pts[:, 1], "z": pts[:, 2], "intensity": pts[:, 3]}
        )
        del pts
    else:
        seg.segment(_cloud(2000, seed=1))
        pts = _cloud(n)
    import gc

    gc.collect()
    reset = _reset_peak()
    rss_before_kb = _status_kb("VmRSS") or 0
    maxrss_before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    t0 = time.perf_counter()
    if path == "node":
        _node_path(seg, msg)
    else:
        seg.segment(pts)
    seconds = time.perf_counter() - t0
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    hwm_kb = _status_kb("VmHWM") if reset else None
    if hwm_kb is None:
        hwm_kb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, maxrss_before_kb)
    out = {
        "model": model,
        "path": path,
        "points": n,
        "kept": int(seg.extractor.last_num_kept[0]) if seg.extractor.last_num_kept else 0,
        "rss_before_mb": rss_before_kb / 1024,
        "peak_mb": hwm_kb / 1024,
        "peak_delta_mb": (hwm_kb - rss_before_kb) / 1024,
        "bytes_per_point": (hwm_kb - rss_before_kb) * 1024 / n,
        "numpy_peak_bytes_per_point": traced_peak / n,
        "peak_mark_reset": reset,
        "seconds": seconds,
    }
    try:
        import psutil

        out["psutil_rss_after_mb"] = psutil.Process().memory_info().rss / 2**20
    except ImportError:
        pass
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["tiny", "wide4"], choices=["tiny", "wide4"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[50_000, 100_000, 200_000])
    ap.add_argument("--path", choices=["node", "segment"], default="node")
    ap.add_argument("--threads", type=int, default=2, help="torch threads in each child")
    ap.add_argument("--json", help="write the rows to this file")
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.path, args.threads)))
        return 0

    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, path {args.path}"
    )
    print(f"{'model':6} {'points':>8} {'kept':>8} {'peak MB':>9} {'B/point':>9} {'numpy B/pt':>10}")
    rows = []
    for model in args.models:
        for n in args.sizes:
            cmd = [sys.executable, __file__, "--child", model, str(n), "--path", args.path]
            cmd += ["--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{model} {n}: child failed\n{proc.stderr[-2000:]}")
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(
                f"{model:6} {n:8d} {row['kept']:8d} {row['peak_delta_mb']:9.1f} "
                f"{row['bytes_per_point']:9.0f} {row['numpy_peak_bytes_per_point']:10.0f}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
