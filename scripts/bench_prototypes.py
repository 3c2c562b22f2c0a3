#!/usr/bin/env python3
"""Benchmark the prototype path: image generation, IGLOSS feature extraction, and cache hits.

Tiny profile (the node's offline models: tiny text-to-image pipeline at 64x64, tiny DINOv2 at
56x56): seconds per generated image (batch 1 and batch 4), seconds per feature, then the whole
`nuscenes` preset vocabulary built into an empty cache (cold) and rebuilt from it (cache hit).
`--large` also times feature extraction with a randomly initialised DINOv2 ViT-L/14 at 448x448
(the real compute of IGLOSS's step 2, including the 1024 x 448 x 448 upsampling).

    .venv/bin/python scripts/bench_prototypes.py --threads 1
    .venv/bin/python scripts/bench_prototypes.py --device cuda --large
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np
import torch
from PIL import Image

from lidar_ovseg_ros.frames import FRAMES_DIR
from lidar_ovseg_ros.prototypes.bank import PrototypeBank
from lidar_ovseg_ros.prototypes.generation import (
    GenerationConfig,
    TextToImageGenerator,
    plan_images,
)
from lidar_ovseg_ros.prototypes.image_features import DinoV2FeatureExtractor, ImageFeatureConfig
from lidar_ovseg_ros.prototypes.tiny_models import (
    TINY_IMAGE_SIDE,
    build_tiny_feature_extractor,
    build_tiny_text_to_image_pipeline,
)
from lidar_ovseg_ros.vocabulary import load_preset


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, repeats: int, warmup: int, device: str) -> np.ndarray:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return np.asarray(out)


def row(name: str, seconds: np.ndarray, per: int) -> None:
    med, p90 = np.median(seconds) / per, np.percentile(seconds, 90) / per
    print(f"| {name} | {len(seconds)} | {med:.4f} | {p90:.4f} | {1.0 / med:.3g} |")


def camera_images(n: int) -> list[Image.Image]:
    cam = Image.open(FRAMES_DIR / "nuscenes_frame" / "CAM_FRONT.jpg").convert("RGB")
    return [cam.crop((100 * i, 300, 100 * i + 512, 812)) for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: default)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--images-per-class", type=int, default=4)
    ap.add_argument("--large", action="store_true", help="also time a ViT-L/14 at 448x448")
    ap.add_argument("--large-repeats", type=int, default=3)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = args.device
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, device {dev}"
        + (f" ({torch.cuda.get_device_name()})" if dev.startswith("cuda") else "")
        + f", load average {os.getloadavg()[0]:.1f}"
    )

    t0 = time.perf_counter()
    pipe = build_tiny_text_to_image_pipeline(seed=0)
    extractor = build_tiny_feature_extractor(seed=0, device=dev)
    print(f"tiny models built in {time.perf_counter() - t0:.2f} s (imports included)\n")

    vocab = load_preset("nuscenes")
    gen_cfg = GenerationConfig(
        model_id="tiny",
        images_per_class=args.images_per_class,
        height=TINY_IMAGE_SIDE,
        width=TINY_IMAGE_SIDE,
        device=dev,
    )
    print("| step | runs | s / image (median) | s / image (p90) | images / s |")
    print("|---|---|---|---|---|")
    for batch in (1, 4):
        cfg = GenerationConfig(**{**gen_cfg.__dict__, "batch_size": batch})
        gen = TextToImageGenerator.from_pipeline(pipe, cfg)
        reqs = plan_images(vocab.classes[3], GenerationConfig(**{**cfg.__dict__}))[:batch]
        row(
            f"generate tiny {TINY_IMAGE_SIDE}x{TINY_IMAGE_SIDE}, batch {batch}",
            timed(lambda g=gen, r=reqs: g.generate(r), args.repeats, 1, dev),
            batch,
        )
    images = camera_images(8)
    for batch in (1, 8):
        ims = images[:batch]
        row(
            f"features tiny DINOv2 (h32, 56x56), batch {batch}",
            timed(lambda x=ims: extractor.extract(x), args.repeats, 1, dev),
            batch,
        )

    with tempfile.TemporaryDirectory() as cache:
        gen = TextToImageGenerator.from_pipeline(pipe, GenerationConfig(**gen_cfg.__dict__))
        bank = PrototypeBank(cache, extractor, gen, show_progress=False)
        t0 = time.perf_counter()
        protos = bank.build(vocab)
        cold = time.perf_counter() - t0
        n = len(protos)
        hits = timed(lambda: bank.build(vocab), args.repeats, 1, dev)
        assert bank.last_stats.cached == n
        print(
            f"\nvocabulary 'nuscenes' ({len(vocab)} classes, {n} prototype images, tiny profile):"
            f" cold build {cold:.2f} s ({cold / n:.4f} s / image), cache hit median "
            f"{np.median(hits) * 1e3:.1f} ms, p90 {np.percentile(hits, 90) * 1e3:.1f} ms "
            f"({np.median(hits) / n * 1e3:.2f} ms / image)"
        )

    if args.large:
        from transformers import Dinov2Config

        cfg = Dinov2Config(
            hidden_size=1024,
            num_hidden_layers=24,
            num_attention_heads=16,
            mlp_ratio=4,
            image_size=518,
            patch_size=14,
        )  # facebook/dinov2-large's architecture, random weights
        big = DinoV2FeatureExtractor.from_config(
            cfg, ImageFeatureConfig(model_id="random-vit-l", device=dev, batch_size=4)
        )
        print("\n| step | runs | s / image (median) | s / image (p90) | images / s |")
        print("|---|---|---|---|---|")
        for batch in (1, 4) if dev.startswith("cuda") else (1,):
            ims = images[:batch]
            row(
                f"features ViT-L/14 448x448 (random weights), batch {batch}",
                timed(lambda x=ims: big.extract(x), args.large_repeats, 1, dev),
                batch,
            )
            px = big.preprocess(ims)
            vit = timed(lambda p=px: big.patch_grid(p), args.large_repeats, 1, dev)
            grid = big.patch_grid(px)
            pool = timed(lambda g=grid: big.pool(g), args.large_repeats, 1, dev)
            print(
                f"|   of which ViT forward | {len(vit)} | {np.median(vit) / batch:.4f} | | |\n"
                f"|   of which upsample+normalise+mean | {len(pool)} | "
                f"{np.median(pool) / batch:.4f} | | |"
            )


if __name__ == "__main__":
    main()
