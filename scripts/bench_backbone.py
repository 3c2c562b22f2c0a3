#!/usr/bin/env python3
"""Benchmark the LiDAR feature path per stage: preprocess, kNN, backbone, upsampling.

Random weights (speed does not depend on them). Prints median / p90 seconds per stage and points/s
for the bundled nuScenes and KITTI frames, for the tiny config and the full ScaLR+ WI-768 config.

    .venv/bin/python scripts/bench_backbone.py                       # CPU: tiny x5, scalr_plus x1
    .venv/bin/python scripts/bench_backbone.py --device cuda --amp fp16 --full-repeats 10
"""

from __future__ import annotations

import argparse
import os
import platform

import numpy as np
import torch

from lidar_ovseg_ros.frames import load_frame
from lidar_ovseg_ros.models.waffleiron import WaffleIron, WaffleIronConfig
from lidar_ovseg_ros.segmentation.features import STAGES, PointFeatureExtractor
from lidar_ovseg_ros.segmentation.preprocess import PreprocessConfig

AMP = {"none": None, "fp16": torch.float16, "bf16": torch.bfloat16}
SENSOR_CFG = {"nuscenes": PreprocessConfig.nuscenes, "kitti": PreprocessConfig.semantickitti}


def bench(
    config: WaffleIronConfig,
    frame: str,
    device: str,
    amp: torch.dtype | None,
    repeats: int,
    warmup: int,
) -> dict:
    torch.manual_seed(0)
    model = WaffleIron(config)
    extractor = PointFeatureExtractor(model, SENSOR_CFG[frame](), device=device, amp_dtype=amp)
    points = load_frame(frame).points
    for _ in range(warmup):
        extractor.extract(points)
    runs = []
    for _ in range(repeats):
        _, valid = extractor.extract(points)
        runs.append(dict(extractor.timings))
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    stats = {
        k: (float(np.median([r[k] for r in runs])), float(np.percentile([r[k] for r in runs], 90)))
        for k in (*STAGES, "total")
    }
    return {
        "points": len(points),
        "valid": int(valid.sum()),
        "kept": extractor.last_num_kept[0],
        "stats": stats,
        "runs": repeats,
        "peak": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", choices=sorted(AMP), default="none")
    parser.add_argument("--configs", default="tiny,scalr_plus", help="WaffleIronConfig presets")
    parser.add_argument("--frames", default="nuscenes,kitti")
    parser.add_argument("--full-frames", default="nuscenes", help="frames for non-tiny configs")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs for the tiny config")
    parser.add_argument("--full-repeats", type=int, default=1, help="timed runs, other configs")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: keep)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(
        f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, device "
        f"{torch.cuda.get_device_name() if args.device.startswith('cuda') else 'cpu'}, "
        f"amp {args.amp}, load average {os.getloadavg()[0]:.1f}"
    )
    header = "| config | frame | points / valid / kept | runs | " + " | ".join(
        f"{s} med / p90 s" for s in (*STAGES, "total")
    )
    print(header + " | points/s | kept points/s (backbone) | peak GPU GiB |")
    print("|" + "---|" * (header.count("|") + 3))
    for name in args.configs.split(","):
        config = getattr(WaffleIronConfig, name)()
        tiny = name == "tiny"
        frames = args.frames if tiny else args.full_frames
        for frame in frames.split(","):
            r = bench(
                config,
                frame,
                args.device,
                AMP[args.amp],
                args.repeats if tiny else args.full_repeats,
                args.warmup if (tiny or args.device != "cpu") else 0,
            )
            s = r["stats"]
            cells = " | ".join(f"{s[k][0]:.3f} / {s[k][1]:.3f}" for k in (*STAGES, "total"))
            print(
                f"| {name} | {frame} | {r['points']} / {r['valid']} / {r['kept']} | {r['runs']} | "
                f"{cells} | {r['points'] / s['total'][0]:,.0f} | "
                f"{r['kept'] / s['backbone'][0]:,.0f} | {r['peak']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
