#!/usr/bin/env python3
"""Sensor-rate benchmark: the official IGLOSS inference path vs this project's, per stage.

Paths (each measured in its own child process, so that its peak memory is its own):
- official: numpy/cKDTree preprocessing (`preprocess.preprocess`, equal to the official code),
  a host-to-device copy of the inputs, the fp32 forward (`--amp` also runs the official `--fp16`
  autocast mode), the [M, D] features back to the host, nearest-point upsampling of the features
  to all N points on the CPU (numpy gather, as IGLOSS's `extract_scalrplus_features.py`), then
  the classifier on the [N, D] upsampled features on the CPU;
- numpy: `LidarSegmenter.segment` with `preprocess_backend="numpy"` (the CPU default);
- torch: `preprocess_backend="torch"`: one host-to-device copy of the points (pinned on CUDA),
  voxels, crop, kNN, cells, backbone, classifier and label upsampling on the device, one copy of
  labels and scores back (the CUDA default).

Scans: the bundled nuScenes (34,688 points) and KITTI (17,238) scans, and "260k": a 128-beam-like
scan of 260,000 points made by stacking 8 copies of the nuScenes scan, copy i rotated by
i * 45 degrees about z and jittered by N(0, 2 cm) per coordinate (seed 0), truncated to 260,000.

Configs: tiny (`WaffleIronConfig.tiny()`), depth4 (ScaLR+ width: 768 channels, 1024-d head, 4
layers) and full (ScaLR+, 48 layers); random weights (weights change no timing) and a random
16-class x 4-prototype logreg classifier.

Prints per path and stage the median and p95 over `--frames` frames after `--warmup`, the
points/s (input points / median total), the peak memory (process peak RSS on CPU, peak
`torch.cuda.max_memory_allocated` on CUDA) and the ratio official / project of the median totals.

    python scripts/bench_pipeline.py --configs tiny --scans nuscenes kitti --frames 50
    python scripts/bench_pipeline.py --configs depth4 --scans nuscenes --frames 5   # CPU: slow
    python scripts/bench_pipeline.py --device cuda --configs full --scans nuscenes 260k --amp fp16
    python scripts/bench_pipeline.py --knn                     # kNN methods on both scan sizes
    python scripts/bench_pipeline.py --agreement --amp bf16    # bf16/fp16 vs fp32 on real scans
    python scripts/bench_pipeline.py --camera --frames 50      # POP-3D tiny, six cameras
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

from lidar_ovseg_ros.frames import load_kitti_frame, load_nuscenes_frame
from lidar_ovseg_ros.models.waffleiron import WaffleIron, WaffleIronConfig
from lidar_ovseg_ros.segmentation.classifier import ClassifierConfig
from lidar_ovseg_ros.segmentation.features import PointFeatureExtractor
from lidar_ovseg_ros.segmentation.preprocess import PreprocessConfig, preprocess
from lidar_ovseg_ros.segmentation.segmenter import AMP_MODES, LidarSegmenter
from lidar_ovseg_ros.segmentation.torch_preprocess import knn_brute, knn_grid
from lidar_ovseg_ros.vocabulary import load_preset

PATHS = ("official", "numpy", "torch")
BIG_POINTS = 260_000
PROTOTYPES_PER_CLASS = 4


def scan_points(name: str) -> tuple[np.ndarray, PreprocessConfig]:
    """The scan `name` ("nuscenes", "kitti", "260k") and its preprocessing preset."""
    if name == "kitti":
        return load_kitti_frame().points[:, :4].copy(), PreprocessConfig.semantickitti()
    pts = load_nuscenes_frame().points[:, :4].astype(np.float32)
    if name == "nuscenes":
        return pts.copy(), PreprocessConfig.nuscenes()
    rng = np.random.default_rng(0)
    copies = []
    for i in range(8):
        a = i * np.pi / 4
        rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        c = pts.copy()
        c[:, :3] = (pts[:, :3] @ rot.T + rng.normal(0, 0.02, size=(len(pts), 3))).astype(np.float32)
        copies.append(c)
    return np.concatenate(copies)[:BIG_POINTS], PreprocessConfig.nuscenes()


def wi_config(name: str) -> WaffleIronConfig:
    if name == "tiny":
        return WaffleIronConfig.tiny()
    if name == "depth4":
        return WaffleIronConfig.scalr_plus(depth=4, name="depth4")
    return WaffleIronConfig.scalr_plus()


def build(config: str, pre: PreprocessConfig, device: str, amp: str, backend: str):
    wi = wi_config(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = WaffleIron(wi)
    ext = PointFeatureExtractor(
        model,
        pre.for_backbone(wi),
        device=device,
        amp_dtype=AMP_MODES[amp],
        preprocess_backend=backend,
    )
    seg = LidarSegmenter(ext, None, ClassifierConfig(kind="logreg"), profile=config)
    vocab = load_preset("nuscenes")
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(len(vocab) * PROTOTYPES_PER_CLASS, wi.out_channels))
    labels = np.repeat(np.arange(len(vocab)), PROTOTYPES_PER_CLASS)
    seg.activate(seg.prepare_from_prototypes(vocab, feats.astype(np.float32), labels))
    return seg


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def official_frame(seg: LidarSegmenter, points: np.ndarray, cpu_classifier) -> dict[str, float]:
    """One frame as the official IGLOSS inference runs it (see the module docstring)."""
    ext = seg.extractor
    dev = ext.device
    t = {}
    t0 = time.perf_counter()
    scan = preprocess(points, ext.preprocess_cfg)
    t["preprocess"], t["knn"] = scan.timings["preprocess"], scan.timings["knn"]
    t1 = time.perf_counter()
    feats = torch.from_numpy(scan.feats[None]).to(dev)
    cells = torch.from_numpy(scan.cell_ind[None]).to(dev)
    neigh = torch.from_numpy(scan.neighbors[None]).to(dev)
    sync(dev)
    t2 = time.perf_counter()
    with torch.no_grad(), ext._autocast():
        out = ext.model(feats, cells, neigh, None)
    sync(dev)
    t3 = time.perf_counter()
    kept = out.float()[0].T.cpu().numpy()
    t4 = time.perf_counter()
    upsampled = kept[np.maximum(scan.upsample_index, 0)]
    t5 = time.perf_counter()
    cpu_classifier.predict(torch.from_numpy(upsampled))
    t6 = time.perf_counter()
    t.update(h2d=t2 - t1, backbone=t3 - t2, d2h=t4 - t3, upsample=t5 - t4, classifier=t6 - t5)
    t["total"] = t6 - t0
    return t


def child(args: argparse.Namespace) -> None:
    """Measure one (path, config, scan) and print one JSON line."""
    torch.manual_seed(0)
    points, pre = scan_points(args.scan)
    backend = "numpy" if args.path == "official" else args.path
    seg = build(args.config, pre, args.device, args.amp, backend)
    dev = seg.device
    cpu_classifier = seg.active.classifier.to("cpu")
    runs: dict[str, list[float]] = {}

    def one() -> dict[str, float]:
        if args.path == "official":
            return official_frame(seg, points, cpu_classifier)
        t0 = time.perf_counter()
        result = seg.segment(points)
        timings = dict(result.timings)
        timings["total"] = time.perf_counter() - t0
        return timings

    with torch.inference_mode():
        for _ in range(args.warmup):
            one()
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        for _ in range(args.frames):
            for k, v in one().items():
                runs.setdefault(k, []).append(v)
    peak = (
        torch.cuda.max_memory_allocated(dev)
        if dev.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    kept = preprocess(points, seg.extractor.preprocess_cfg).num_points
    print(json.dumps({"runs": runs, "peak": peak, "n": len(points), "m": kept}))


def pstats(values: list[float]) -> str:
    return f"{np.median(values) * 1e3:,.1f} / {np.percentile(values, 95) * 1e3:,.1f}"


def run_child(path: str, config: str, scan: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", path, "--config", config, "--scan", scan]
    cmd += ["--device", args.device, "--amp", args.amp]
    cmd += ["--frames", str(args.frames), "--warmup", str(args.warmup)]
    cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def pipelines(args: argparse.Namespace) -> None:
    stages = ["preprocess", "knn", "h2d", "backbone", "d2h", "classifier", "upsample", "total"]
    for config in args.configs:
        for scan in args.scans:
            res = {p: run_child(p, config, scan, args) for p in args.paths}
            first = next(iter(res.values()))
            print(
                f"\n### {config}, {scan} scan: N = {first['n']:,} points, M = {first['m']:,} "
                f"kept; device {args.device}, amp {args.amp}; {args.frames} frames after "
                f"{args.warmup} warm-up; median / p95 ms\n"
            )
            print("| path | " + " | ".join(stages) + " | points/s | peak memory |")
            print("|---" * (len(stages) + 3) + "|")
            for p, r in res.items():
                cells = [pstats(r["runs"][s]) if s in r["runs"] else "-" for s in stages]
                rate = r["n"] / np.median(r["runs"]["total"])
                mem = f"{r['peak'] / 2**20:,.0f} MiB"
                print(f"| {p} | " + " | ".join(cells) + f" | {rate:,.0f} | {mem} |")
            if "official" in res:
                base = np.median(res["official"]["runs"]["total"])
                for p in res:
                    if p != "official":
                        ratio = base / np.median(res[p]["runs"]["total"])
                        print(f"\nofficial / {p} (median totals): {ratio:.2f}x")
                non_model = {
                    p: np.median(np.array(r["runs"]["total"]) - np.array(r["runs"]["backbone"]))
                    for p, r in res.items()
                }
                print(
                    "non-model work (total - backbone, median ms): "
                    + ", ".join(f"{p} {v * 1e3:,.1f}" for p, v in non_model.items())
                )


def knn_compare(args: argparse.Namespace) -> None:
    """cKDTree vs the torch grid vs torch brute force on the kept points of each scan."""
    dev = torch.device(args.device)
    print(f"\n### exact kNN (k = 17 and nearest kept point), device {dev}; median ms\n")
    print("| scan | M kept | N | method | neighbours | nearest kept of N | repeats |")
    print("|---|---|---|---|---|---|---|")
    for scan in args.scans:
        points, pre = scan_points(scan)
        kept = preprocess(points, pre).kept_index
        xyz = points[kept, :3]
        all_xyz = points[:, :3]
        m, n = len(xyz), len(all_xyz)

        def ckd(xyz=xyz, all_xyz=all_xyz) -> tuple[float, float]:
            t0 = time.perf_counter()
            tree = cKDTree(xyz)
            tree.query(xyz, k=17, workers=-1)
            t1 = time.perf_counter()
            tree.query(all_xyz, k=1, workers=-1)
            return t1 - t0, time.perf_counter() - t1

        def torch_method(fn, xyz=xyz, all_xyz=all_xyz) -> tuple[float, float]:
            x = torch.from_numpy(xyz).to(dev)
            q = torch.from_numpy(all_xyz).to(dev)
            t0 = time.perf_counter()
            fn(x, x, 17)
            sync(dev)
            t1 = time.perf_counter()
            fn(x, q, 1)
            sync(dev)
            return t1 - t0, time.perf_counter() - t1

        methods = [("cKDTree (workers=-1)", ckd, args.knn_repeats)]
        methods.append(("torch grid", lambda: torch_method(knn_grid), args.knn_repeats))
        if dev.type == "cuda" or m * m <= 4e8:
            methods.append(("torch brute", lambda: torch_method(knn_brute), 1))
        for name, fn, reps in methods:
            times = np.array([fn() for _ in range(reps)])
            med = np.median(times, axis=0) * 1e3
            print(f"| {scan} | {m:,} | {n:,} | {name} | {med[0]:,.0f} | {med[1]:,.0f} | {reps} |")


def agreement(args: argparse.Namespace) -> None:
    """Features and labels of `--amp` autocast vs fp32 on the real scans (same weights)."""
    if args.amp == "none":
        raise SystemExit("--agreement needs --amp bf16 or fp16")
    print(f"\n### {args.amp} autocast vs fp32, device {args.device}\n")
    print(
        "| config | scan | points (N) | max abs diff | median rel. diff | min cosine "
        "| labels changed / N |"
    )
    print("|---|---|---|---|---|---|---|")
    for config in args.configs:
        for scan in [s for s in args.scans if s != "260k"]:
            points, pre = scan_points(scan)
            if args.box is not None:
                points = points[(np.abs(points[:, :2]) < args.box).all(1)]
            ref = build(config, pre, args.device, "none", "numpy")
            low = build(config, pre, args.device, args.amp, "numpy")
            with torch.inference_mode():
                a = ref.segment(points, return_features=True)
                b = low.segment(points, return_features=True)
            fa, fb = a.features[a.valid], b.features[b.valid]
            diff = np.abs(fa - fb)
            rel = np.linalg.norm(fa - fb, axis=1) / np.maximum(np.linalg.norm(fa, axis=1), 1e-12)
            cos = (fa * fb).sum(1) / np.maximum(
                np.linalg.norm(fa, axis=1) * np.linalg.norm(fb, axis=1), 1e-12
            )
            changed = int((a.labels != b.labels).sum())
            print(
                f"| {config} | {scan}{'' if args.box is None else f' (x, y in +-{args.box} m)'} "
                f"| {len(points):,} | {diff.max():.3g} | {np.median(rel):.3g} | {cos.min():.5f} "
                f"| {changed:,} / {len(points):,} |"
            )


def camera(args: argparse.Namespace) -> None:
    """POP-3D tiny (six cameras) per stage, through `scripts/bench_occupancy.py`'s builders."""
    spec = importlib.util.spec_from_file_location(
        "bench_occupancy", Path(__file__).with_name("bench_occupancy.py")
    )
    occ = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(occ)
    from lidar_ovseg_ros.models.pop3d import Pop3DConfig, Pop3DNetwork
    from lidar_ovseg_ros.occupancy.pipeline import STAGES, OccupancyPredictor
    from lidar_ovseg_ros.occupancy.text_queries import nuscenes16_vocabulary

    frame = load_nuscenes_frame()
    images = {n: c.load_image() for n, c in frame.cameras.items()}
    cfg = Pop3DConfig.tiny()
    torch.manual_seed(0)
    net = Pop3DNetwork(cfg)
    pred = OccupancyPredictor(net, occ.text_encoder(cfg, args.device), device=args.device)
    pred.set_vocabulary(nuscenes16_vocabulary())
    dev = torch.device(args.device)
    runs: dict[str, list[float]] = {s: [] for s in STAGES if s != "text"}
    with torch.inference_mode():
        for _ in range(args.warmup):
            pred.predict(images, frame.cameras)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        for _ in range(args.frames):
            pred.predict(images, frame.cameras)
            for s in runs:
                runs[s].append(pred.timings[s])
    peak = (
        torch.cuda.max_memory_allocated(dev)
        if dev.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    h, w = cfg.image_size
    print(
        f"\n### POP-3D tiny, {h}x{w} x 6 cameras, device {dev}, {args.frames} frames after "
        f"{args.warmup} warm-up; peak memory {peak / 2**20:,.0f} MiB\n"
    )
    print("| stage | median / p95 (ms) |")
    print("|---|---|")
    for s, v in runs.items():
        print(f"| {s} | {pstats(v)} |")
    print(f"\nrate: {1 / np.median(runs['total']):.2f} Hz (median total)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs", nargs="+", default=["tiny"], choices=["tiny", "depth4", "full"]
    )
    parser.add_argument("--scans", nargs="+", default=["nuscenes", "kitti"])
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", default="none", choices=list(AMP_MODES))
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (cKDTree: all cores)"
    )
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--knn", action="store_true", help="compare the exact kNN methods")
    parser.add_argument("--knn-repeats", type=int, default=5)
    parser.add_argument("--agreement", action="store_true", help="--amp vs fp32 features/labels")
    parser.add_argument("--box", type=float, default=None, help="--agreement: |x|,|y| < box")
    parser.add_argument("--camera", action="store_true", help="POP-3D tiny, six cameras")
    parser.add_argument("--child", choices=PATHS, dest="path", help=argparse.SUPPRESS)
    parser.add_argument("--config", default="tiny", help=argparse.SUPPRESS)
    parser.add_argument("--scan", default="nuscenes", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.path:
        child(args)
        return
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(
        f"# bench_pipeline: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{gpu}, torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}"
    )
    if args.knn:
        knn_compare(args)
    elif args.agreement:
        agreement(args)
    elif args.camera:
        camera(args)
    else:
        pipelines(args)
    print(f"\nload average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
