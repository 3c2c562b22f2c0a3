#!/usr/bin/env python3
"""Per-stage timings of the VLScene network on the bundled KITTI frame.

Builds `VLSceneConfig.official()` (or `tiny`) with random weights (the official weights change
no timing; `--weights` loads the official checkpoint instead). The input is the KITTI frame's
left image as both views (the bundle has no right image; zero disparity changes no timing).
Stages: image preprocessing, RepViT + FPN (both views), the stereo volume (GwcNet + warp),
the depth net + volume interaction + lifting, GSSA (spconv, one thread on CPU), OccHead, and
argmax + voxel extraction. Prints median and p95 per stage over the repeats (after
`--warmup` runs), the peak resident memory, the occupied voxel count and the machine.

Run: ``.venv/bin/python scripts/bench_vlscene.py [--config official|tiny] [--device cuda]
[--repeats 1] [--warmup 0] [--threads N] [--weights vlscene.pth]``
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import time
from collections import defaultdict

import numpy as np
import torch

from lidar_ovseg_ros.frames import load_kitti_frame
from lidar_ovseg_ros.models.vlscene import VLSceneConfig, VLSceneNet, load_vlscene_checkpoint
from lidar_ovseg_ros.ssc.stereo_inputs import prepare_stereo_inputs, same_image_pair


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(net: VLSceneNet, device: torch.device, times: dict[str, list[float]]) -> list:
    """Forward pre/post hooks that add each top-level stage's wall time to `times`."""
    handles = []
    stages = {
        "backbone+fpn": [net.img_backbone, net.img_neck],
        "stereo volume": [net.img_view_transformer.stereo_volume_net],
        "depth net": [net.img_view_transformer.depth_net],
        "volume interaction": [net.img_view_transformer.volume_interaction],
        "gssa (spconv)": [net.sparse_unet],
        "occ head": [net.pts_bbox_head],
    }
    for name, modules in stages.items():
        for m in modules:
            start: dict[str, float] = {}

            def pre(_m, _i, start=start) -> None:
                _sync(device)
                start["t"] = time.perf_counter()

            def post(_m, _i, _o, start=start, name=name) -> None:
                _sync(device)
                times[name][-1] += time.perf_counter() - start["t"]

            handles.append(m.register_forward_pre_hook(pre))
            handles.append(m.register_forward_hook(post))
    return handles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", choices=("official", "tiny"), default="official")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--weights", default="", help="official checkpoint (default: random)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = VLSceneConfig.official() if args.config == "official" else VLSceneConfig.tiny()
    if args.weights:
        net, _ = load_vlscene_checkpoint(args.weights, cfg)
    else:
        torch.manual_seed(0)
        net = VLSceneNet(cfg)
    net = net.to(device).eval()
    params = sum(p.numel() for p in net.parameters())
    left, right, calib = same_image_pair(load_kitti_frame().cameras["CAM2"])
    times: dict[str, list[float]] = defaultdict(list)
    _timed(net, device, times)
    occupied = 0
    for run in range(args.warmup + args.repeats):
        for k in ("preprocess", "backbone+fpn", "stereo volume", "depth net"):
            times[k].append(0.0)
        for k in ("volume interaction", "gssa (spconv)", "occ head", "voxels", "total"):
            times[k].append(0.0)
        t0 = time.perf_counter()
        inp = prepare_stereo_inputs(left, right, calib, cfg).to(device)
        _sync(device)
        times["preprocess"][-1] = time.perf_counter() - t0
        with torch.no_grad():
            logits = net(inp)
            t1 = time.perf_counter()
            _prob, cls = torch.softmax(logits[0], 0).max(0)
            cls = cls.cpu().numpy()
            occupied = int(np.count_nonzero(cls))
        times["voxels"][-1] = time.perf_counter() - t1
        times["total"][-1] = time.perf_counter() - t0
        if run < args.warmup:
            for v in times.values():
                v.pop()
    print(
        f"VLScene {cfg.name} ({params / 1e6:.1f} M parameters), input {cfg.input_size}, "
        f"output {cfg.occ_size} x {cfg.num_classes} classes, device {device}, "
        f"torch threads {torch.get_num_threads()}, {args.repeats} run(s) after "
        f"{args.warmup} warm-up"
    )
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}"
        + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "")
    )
    print("| stage | median ms | p95 ms |")
    print("|---|---|---|")
    for k, v in times.items():
        if v:
            print(f"| {k} | {statistics.median(v) * 1e3:.0f} | {np.percentile(v, 95) * 1e3:.0f} |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory {peak:.0f} MiB; occupied voxels {occupied}")
    if device.type == "cuda":
        print(f"peak CUDA memory {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
