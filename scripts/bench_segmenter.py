#!/usr/bin/env python3
"""Time the IGLOSS segmentation pipeline per stage on the bundled nuScenes and KITTI frames.

Stages (from `LidarSegmenter.segment`): preprocess (features, voxels, crop, cells), knn (neighbour
lists and the nearest kept point of every input point), backbone (WaffleIron forward), upsample
(features back to every input point), classifier (normalise, x @ W.T + b, softmax, argmax),
total (wall time of the whole call, copies to numpy included).

Configs:
- tiny: the built-in tiny profile backbone (random weights) with a random 16-class prototype set of
  its feature size (prototype generation is not timed: it happens once per vocabulary);
- full: the ScaLR+ architecture (WI-768, 48 layers, 1024-d output) with random weights and a
  random 16 classes x 4 prototypes x 1024-d prototype set, so neither the checkpoint nor
  DINOv2-large is needed. The timings are those of the real network (weights do not change them).

    python scripts/bench_segmenter.py                      # CPU: tiny x3 frames, full x1 scan
    python scripts/bench_segmenter.py --device cuda --repeats 20 --amp fp16
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from lidar_ovseg_ros.frames import load_kitti_frame, load_nuscenes_frame
from lidar_ovseg_ros.models.waffleiron import WaffleIron, WaffleIronConfig
from lidar_ovseg_ros.segmentation.classifier import ClassifierConfig
from lidar_ovseg_ros.segmentation.features import PointFeatureExtractor
from lidar_ovseg_ros.segmentation.preprocess import PreprocessConfig
from lidar_ovseg_ros.segmentation.segmenter import AMP_MODES, STAGES, LidarSegmenter
from lidar_ovseg_ros.vocabulary import load_preset

PROTOTYPES_PER_CLASS = 4


def build(config: str, sensor: str, device: str, amp: str, kind: str) -> LidarSegmenter:
    wi_cfg = WaffleIronConfig.tiny() if config == "tiny" else WaffleIronConfig.scalr_plus()
    base = PreprocessConfig.nuscenes() if sensor == "nuscenes" else PreprocessConfig.semantickitti()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = WaffleIron(wi_cfg)
    extractor = PointFeatureExtractor(
        model, base.for_backbone(wi_cfg), device=device, amp_dtype=AMP_MODES[amp]
    )
    seg = LidarSegmenter(extractor, None, ClassifierConfig(kind=kind), profile=config)
    vocab = load_preset("nuscenes")
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(len(vocab) * PROTOTYPES_PER_CLASS, wi_cfg.out_channels))
    labels = np.repeat(np.arange(len(vocab)), PROTOTYPES_PER_CLASS)
    seg.activate(seg.prepare_from_prototypes(vocab, feats.astype(np.float32), labels))
    return seg


def bench(seg: LidarSegmenter, points: np.ndarray, repeats: int, warmup: int) -> dict:
    for _ in range(warmup):
        seg.segment(points)
    runs = [seg.segment(points).timings for _ in range(repeats)]
    out = {}
    for stage in STAGES:
        values = np.array([r[stage] for r in runs]) * 1e3
        out[stage] = (float(np.median(values)), float(np.percentile(values, 90)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", choices=list(AMP_MODES), default="none")
    parser.add_argument("--classifier", choices=["logreg", "nearest"], default="logreg")
    parser.add_argument("--configs", default="tiny,full")
    parser.add_argument("--frames", default="nuscenes,kitti")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed runs per frame (default: tiny 5; full 1 on CPU, 10 on CUDA)",
    )
    parser.add_argument(
        "--full-frames",
        default=None,
        help="frames for the full config (default: nuscenes only on CPU)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cuda = args.device.startswith("cuda")
    frames = {"nuscenes": load_nuscenes_frame, "kitti": load_kitti_frame}
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
        f"threads, device {args.device}"
        + (f" ({torch.cuda.get_device_name(args.device)})" if cuda else "")
        + f", torch {torch.__version__}, amp {args.amp}, classifier {args.classifier}"
    )
    header = (
        f"{'config':<6} {'frame':<9} {'points':>7} "
        + " ".join(f"{s:>11}" for s in STAGES)
        + f" {'total p90':>10} {'points/s':>10}"
    )
    print("stage times: median ms over the timed runs")
    print(header)
    for config in args.configs.split(","):
        names = args.frames.split(",")
        if config == "full" and not cuda:
            names = (args.full_frames or "nuscenes").split(",")
        repeats = args.repeats or (5 if config == "tiny" else (10 if cuda else 1))
        warmup = 1 if (config == "tiny" or cuda) else 0
        for name in names:
            frame = frames[name]()
            t0 = time.perf_counter()
            seg = build(config, frame.sensor, args.device, args.amp, args.classifier)
            build_s = time.perf_counter() - t0
            res = bench(seg, frame.points, repeats, warmup)
            total = res["total"][0]
            row = f"{config:<6} {name:<9} {len(frame.points):>7} " + " ".join(
                f"{res[s][0]:>11.1f}" for s in STAGES
            )
            row += f" {res['total'][1]:>10.1f} {len(frame.points) / (total / 1e3):>10.0f}"
            print(row + f"   (build {build_s:.1f} s, {repeats} runs, {warmup} warm-up)")
            del seg
            if cuda:
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
