#!/usr/bin/env python3
"""Time the OpenScene LiDAR method per stage on the bundled nuScenes and KITTI frames, and the
cost of a vocabulary change by text.

Stages (from `OpenSceneSegmenter.segment`): preprocess (the official voxelizer: floor, minimum
shift, FNV hash, unique), backbone (MinkUNet forward on spconv), classifier (cosine of the voxel
features with the class texts, argmax, mapped back to every point), total (the whole call).

Configs (random weights: the timings are those of the real networks):
- tiny: the tiny profile (small MinkUNet, 32-d, tiny CLIP text tower);
- full: MinkUNet18A with 768-d output (OpenScene's nuScenes model) and a CLIP text tower with
  the architecture of openai/clip-vit-large-patch14-336 (12 layers, 768 wide, projection 768),
  built from its config with a byte-level tokenizer (no download).

Vocabulary swap: `prepare_vocabulary` + `activate` for 20 classes, cold (20 new names), after a
partial change (5 new names) and fully cached, with the text cache's hit ratio.

    python scripts/bench_openscene.py                       # CPU: tiny and full
    python scripts/bench_openscene.py --device cuda --amp fp16 --repeats 20
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from lidar_ovseg_ros.frames import load_kitti_frame, load_nuscenes_frame
from lidar_ovseg_ros.models.minkunet import MinkUNet, MinkUNetConfig
from lidar_ovseg_ros.segmentation.openscene import (
    TINY_FEATURE_DIM,
    OpenSceneConfig,
    OpenSceneSegmenter,
)
from lidar_ovseg_ros.segmentation.segmenter import STAGES
from lidar_ovseg_ros.segmentation.text_encoder import ClipTextEncoder
from lidar_ovseg_ros.segmentation.voxelizer import voxelize
from lidar_ovseg_ros.vocabulary import Vocabulary, load_preset

NAMES = [
    "car", "truck", "bus", "bicycle", "motorcycle", "pedestrian", "traffic cone", "barrier",
    "road", "sidewalk", "grass", "tree", "building", "pole", "traffic sign", "fence", "trailer",
    "construction vehicle", "bench", "trash can", "parking meter", "fire hydrant", "stroller",
    "dog", "street lamp",
]  # fmt: skip


def clip_l14_text_tower(device: str) -> ClipTextEncoder:
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from lidar_ovseg_ros.occupancy.text_queries import byte_level_clip_tokenizer

    tok = byte_level_clip_tokenizer()
    cfg = CLIPTextConfig(
        vocab_size=49408,  # the real vocabulary size (the byte-level ids are a subset)
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=77,
        projection_dim=768,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = CLIPTextModelWithProjection(cfg).eval()
    return ClipTextEncoder(model, tok, model_id="clip-l14-336-architecture", device=device)


def build(config: str, device: str, amp: str) -> OpenSceneSegmenter:
    cfg = OpenSceneConfig(profile="tiny" if config == "tiny" else "full", device=device, amp=amp)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if config == "tiny":
            model = MinkUNet(MinkUNetConfig.tiny(TINY_FEATURE_DIM))
            text = ClipTextEncoder.tiny(TINY_FEATURE_DIM, device=device)
        else:
            model = MinkUNet(MinkUNetConfig.from_arch("MinkUNet18A", 768))
            text = clip_l14_text_tower(device)
    return OpenSceneSegmenter(model.to(device), text, cfg)


def stats(values: list[float]) -> str:
    v = np.asarray(values) * 1e3
    return f"{np.median(v):8.1f} {np.percentile(v, 95):8.1f}"


def bench_frames(seg: OpenSceneSegmenter, frames: dict, repeats: int, warmup: int) -> None:
    seg.set_vocabulary(load_preset("nuscenes"))
    for name, pts in frames.items():
        for _ in range(warmup):
            seg.segment(pts)
        runs = [seg.segment(pts).timings for _ in range(repeats)]
        voxels = len(voxelize(pts, seg.config.voxel_size))
        print(f"  {name}: {len(pts)} points, {voxels} voxels, median/p95 ms over {repeats} runs")
        for stage in STAGES:
            if stage in ("knn", "upsample"):
                continue
            print(f"    {stage:<11}{stats([t[stage] for t in runs])}")
        total = np.median([t["total"] for t in runs])
        print(f"    points/s   {len(pts) / total:10.0f}")


def bench_vocabulary(seg: OpenSceneSegmenter, repeats: int) -> None:
    enc = seg.text_encoder
    rows = []
    for _ in range(repeats):
        enc.clear_cache()
        enc.stats.update(encoded=0, cache_hits=0, disk_hits=0, lookups=0)
        first = Vocabulary.from_names(NAMES[:20], name="a")
        second = Vocabulary.from_names(NAMES[5:25], name="b")  # 15 cached + 5 new names
        times = []
        for vocab in (first, second, first):
            t0 = time.perf_counter()
            seg.activate(seg.prepare_vocabulary(vocab))
            times.append(time.perf_counter() - t0)
        rows.append((*times, enc.cache_hit_ratio()))
    rows = np.asarray(rows)
    print("  vocabulary swap, 20 classes (prepare + activate), median/p95 ms:")
    print(f"    cold (20 new names)   {stats(list(rows[:, 0]))}")
    print(f"    5 new + 15 cached     {stats(list(rows[:, 1]))}")
    print(f"    all cached            {stats(list(rows[:, 2]))}")
    print(f"    cache hit ratio over the three swaps: {rows[-1, 3]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", default="none", choices=["none", "fp16", "bf16"])
    ap.add_argument("--configs", default="tiny,full")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: default)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads (spconv runs single-threaded on CPU), "
        f"device {args.device}, amp {args.amp}"
    )
    if args.device.startswith("cuda"):
        print(f"GPU: {torch.cuda.get_device_name(torch.device(args.device))}")
    frames = {
        "nuscenes": load_nuscenes_frame().points,
        "kitti": load_kitti_frame().points,
    }
    for config in args.configs.split(","):
        seg = build(config, args.device, args.amp)
        print(f"config {config}: {seg.model.config.name}, {seg.feature_dim}-d")
        bench_frames(seg, frames, args.repeats if config == "tiny" else max(1, args.repeats // 2),
                     args.warmup)  # fmt: skip
        bench_vocabulary(seg, args.repeats)


if __name__ == "__main__":
    main()
