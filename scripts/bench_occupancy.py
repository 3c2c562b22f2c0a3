#!/usr/bin/env python3
"""Per-stage timings of the POP-3D occupancy pipeline on the bundled nuScenes frame.

Builds the network from `Pop3DConfig.tiny()` and/or `Pop3DConfig.full()` with random weights
(the official weights change no timing), and a CLIP text tower from its config: a toy one for
the tiny network, the ViT-B/16 text tower (12 layers, width 512) for the full one. The tokenizer
is CLIP's tokenizer class built offline with one BPE merge chain per word of the prompts, so
sentences have about as many tokens as with the real vocabulary. Reports median and p90 per
stage over the repeats (after one warm-up), the vocabulary encoding (74 nuScenes sub-names x 85
templates) and a grounding query (85 templates). Prints a markdown table. `--lidar` also labels
the bundled LiDAR scan (34,688 points) from the cameras each run (POP-3D's points branch: its
cost shows in the heads and labels stages); `--score` picks dot or cosine scoring.

Run: ``.venv/bin/python scripts/bench_occupancy.py [--configs tiny full] [--device cuda]
[--repeats 5] [--full-repeats 1] [--skip-vocab] [--lidar] [--score dot]``
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import time

import numpy as np
import torch
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

from lidar_ovseg_ros.frames import load_nuscenes_frame
from lidar_ovseg_ros.models.pop3d import Pop3DConfig, Pop3DNetwork
from lidar_ovseg_ros.occupancy.pipeline import STAGES, OccupancyPredictor
from lidar_ovseg_ros.occupancy.text_queries import (
    PROMPT_TEMPLATES,
    TextQueryEncoder,
    byte_level_clip_tokenizer,
    nuscenes16_vocabulary,
)

QUERY = "a white van parked on the side of the road"


def word_merges(texts: list[str]) -> list[tuple[str, str]]:
    """BPE merges that join every word of `texts` into one token (left to right)."""
    merges: dict[tuple[str, str], None] = {}
    for word in sorted({w for t in texts for w in re.findall(r"[a-z]+", t.lower())}):
        chars = [*word[:-1], word[-1] + "</w>"]
        left = chars[0]
        for ch in chars[1:]:
            merges.setdefault((left, ch), None)
            left += ch
    return list(merges)


def text_encoder(config: Pop3DConfig, device: str) -> TextQueryEncoder:
    texts = [*PROMPT_TEMPLATES, QUERY] + [s for _, subs in nuscenes16_vocabulary() for s in subs]
    tok = byte_level_clip_tokenizer(word_merges(texts))
    common = dict(
        vocab_size=len(tok),
        max_position_embeddings=77,
        projection_dim=config.feature_dim,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    if config.feature_dim == 512:  # the CLIP ViT-B/16 text tower
        cfg = CLIPTextConfig(
            hidden_size=512,
            intermediate_size=2048,
            num_hidden_layers=12,
            num_attention_heads=8,
            **common,
        )
    else:
        cfg = CLIPTextConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            **common,
        )
    return TextQueryEncoder(CLIPTextModelWithProjection(cfg), tok, model_id="bench", device=device)


def stats(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e3:,.0f} / {np.percentile(values, 90) * 1e3:,.0f}"


def bench(
    name: str,
    config: Pop3DConfig,
    device: str,
    repeats: int,
    skip_vocab: bool,
    lidar: bool = False,
    score: str = "cosine",
) -> None:
    frame = load_nuscenes_frame()
    images = {n: c.load_image() for n, c in frame.cameras.items()}
    cams = dict(frame.cameras)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    net = Pop3DNetwork(config)
    build = time.perf_counter() - t0
    enc = text_encoder(config, device)
    pred = OccupancyPredictor(net, enc, device=device, score=score)
    points = frame.points[:, :3] if lidar else None
    vocab = nuscenes16_vocabulary()
    if skip_vocab:
        pred.set_vocabulary(vocab[:1])
    else:
        pred.set_vocabulary(vocab)
    vocab_s = pred.timings["text"]
    runs: dict[str, list[float]] = {s: [] for s in STAGES}
    pred.predict(images, cams, points=points)  # warm-up
    for _ in range(repeats):
        result = pred.predict(images, cams, points=points)
        for s in STAGES:
            runs[s].append(pred.timings[s])
    t0 = time.perf_counter()
    pred.grounding(QUERY)
    query_s = time.perf_counter() - t0
    params = sum(p.numel() for p in net.parameters()) / 1e6
    print(
        f"\n### {name}: {config.image_size[0]}x{config.image_size[1]} x 6 cameras, "
        f"{'x'.join(map(str, config.grid_size))} voxels, {params:.1f} M parameters "
        f"(built in {build:.1f} s), device {device}, {repeats} run(s) after 1 warm-up"
    )
    labelled = f", {len(points)} LiDAR points labelled" if lidar else ""
    print(f"occupied voxels: {result.num_occupied} (random weights){labelled}, score {score}\n")
    print("| stage | median / p90 (ms) |")
    print("|---|---|")
    for s in STAGES:
        if s == "text":
            continue
        print(f"| {s} | {stats(runs[s])} |")
    n_sub = sum(len(s) for _, s in (vocab[:1] if skip_vocab else vocab))
    print(
        f"| text: vocabulary ({n_sub} sub-names x {len(enc.templates)} templates), once "
        f"per vocabulary | {vocab_s * 1e3:,.0f} |"
    )
    print(f"| text: grounding query ({len(enc.templates)} templates) | {query_s * 1e3:,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "full"], choices=["tiny", "full"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5, help="runs of the tiny config")
    parser.add_argument("--full-repeats", type=int, default=1, help="runs of the full config")
    parser.add_argument("--skip-vocab", action="store_true", help="encode a 1-class vocabulary")
    parser.add_argument("--lidar", action="store_true", help="also label the bundled LiDAR scan")
    parser.add_argument("--score", choices=["dot", "cosine"], default="cosine")
    args = parser.parse_args()
    print(
        f"# POP-3D occupancy pipeline: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    for name in args.configs:
        cfg = Pop3DConfig.tiny() if name == "tiny" else Pop3DConfig.full()
        reps = args.repeats if name == "tiny" else args.full_repeats
        with torch.inference_mode():
            bench(name, cfg, args.device, reps, args.skip_vocab, args.lidar, args.score)


if __name__ == "__main__":
    main()
