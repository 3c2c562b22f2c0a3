#!/usr/bin/env python3
"""Time one auto-vocabulary (3D-AVS) round per stage on the bundled nuScenes frame.

Stages: point trunk (MinkUNet on the 5 cm voxels, as OpenScene), SMAP head (in_proj, 3x3x3 CPE,
12-sector attention pooling), ClipCap decoding of the 12 sectors (one batch), image captioning of
the 6 cameras (one batch), Caption2Tag on 18 captions.

Configs (random weights: the timings are those of the real networks):
- tiny: the tiny profile (small MinkUNet/SMAP/GPT-2/BLIP);
- full: MinkUNet18A (768-d), SMAP 768->512 with 8 heads, ClipCap MLP 512->3840->7680 + GPT-2
  small, BLIP with `BlipConfig()` (the size of Salesforce/blip-image-captioning-base, 384 px).
  Decoding is timed at its worst case: GPT-2 runs the full 67 tokens (no stop token), BLIP the
  full 30 new tokens.

    python scripts/bench_autovocab.py                  # CPU: tiny and full
    python scripts/bench_autovocab.py --device cuda --repeats 10
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import numpy as np
import torch

from lidar_ovseg_ros.autovocab.clipcap import ClipCapConfig, build_clipcap
from lidar_ovseg_ros.autovocab.image_captioner import build_tiny_image_captioner
from lidar_ovseg_ros.autovocab.smap import SmapConfig, build_smap_head
from lidar_ovseg_ros.autovocab.tagging import CaptionTagger
from lidar_ovseg_ros.autovocab.tiny_models import tiny_gpt2_config
from lidar_ovseg_ros.frames import load_nuscenes_frame
from lidar_ovseg_ros.models.minkunet import MinkUNet, MinkUNetConfig
from lidar_ovseg_ros.segmentation.voxelizer import voxelize

CAPTIONS = [
    "a car parked on the side of a street.",
    "a man riding a bike down a city street next to a bus.",
    "there is a white truck driving down the road with trees in the background.",
    "a traffic light and a stop sign at an intersection.",
    "people walking on a sidewalk in front of a tall building.",
    "a construction site with orange barriers and traffic cones on the road.",
    "a parking lot filled with lots of parked cars.",
    "a view of a busy street with buses and taxis.",
    "an image of a bus stop with a bench.",
    "arafed view of a city street with a lot of cars",
    "a group of motorcycles parked next to each other",
    "cars are parked along the curb near palm trees.",
    "two police officers standing next to a fire hydrant.",
    "a street with a red and white sign and a moving car.",
    "a city street filled with lots of traffic.",
    "a white van parked in front of a building.",
    "a row of parked cars on a street.",
    "a bus driving down a street next to tall buildings.",
]


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), float(np.percentile(times, 95))


def report(name: str, stats: tuple[float, float]) -> None:
    print(f"  {name:<34} median {1e3 * stats[0]:9.1f} ms   p95 {1e3 * stats[1]:9.1f} ms")


def full_blip(device: torch.device):
    from transformers import BlipConfig, BlipForConditionalGeneration

    torch.manual_seed(0)
    return BlipForConditionalGeneration(BlipConfig()).eval().to(device)


@torch.no_grad()
def run(config: str, device: torch.device, repeats: int) -> None:
    frame = load_nuscenes_frame()
    xyz = frame.xyz
    vox = voxelize(xyz)
    coords = torch.from_numpy(vox.coords).to(device)
    reps = xyz[vox.kept]
    ones = torch.ones((len(vox), 3), device=device)
    torch.manual_seed(0)
    if config == "tiny":
        trunk = MinkUNet(MinkUNetConfig.tiny(out_channels=32)).eval().to(device)
        smap_cfg = SmapConfig(input_dim=32, embed_dim=32, output_dim=64, num_heads=4)
        decoder = build_clipcap(
            gpt_config=tiny_gpt2_config(49), config=ClipCapConfig(prefix_size=64)
        )
    else:
        trunk = MinkUNet(MinkUNetConfig.from_arch("MinkUNet18A", out_channels=768)).eval()
        trunk = trunk.to(device)
        smap_cfg = SmapConfig()
        decoder = build_clipcap(config=ClipCapConfig())
    head = build_smap_head(config=smap_cfg).to(device)
    decoder = decoder.to(device)
    print(f"[{config}] {len(xyz)} points, {len(vox)} voxels, device {device}")
    report("point trunk (MinkUNet)", timed(lambda: trunk(ones, coords), repeats))
    feats = trunk(ones, coords).float()
    report("SMAP head (12 sectors)", timed(lambda: head(feats, coords, reps), repeats))
    emb = head(feats, coords, reps).embeddings
    report(
        "ClipCap decode 12 x 67 tokens",
        timed(lambda: decoder.generate_tokens(emb, stop_id=-1), repeats),
    )
    images = [c.load_image() for _, c in sorted(frame.cameras.items())]
    if config == "tiny":
        captioner = build_tiny_image_captioner()
        report("image captions (6 cameras)", timed(lambda: captioner.caption(images), repeats))
    else:
        from transformers import BlipImageProcessor

        blip = full_blip(device)
        proc = BlipImageProcessor(size={"height": 384, "width": 384})

        def caption_full() -> object:
            pix = proc(images=images, return_tensors="pt")["pixel_values"].to(device)
            return blip.generate(
                pixel_values=pix, max_new_tokens=30, min_new_tokens=30, do_sample=False
            )

        report("image captions (6 cameras, 30 tok)", timed(caption_full, repeats))
    tagger = CaptionTagger()
    report("Caption2Tag (18 captions)", timed(lambda: tagger.tags(dict(enumerate(CAPTIONS))), 20))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=0, help="default: 5 tiny, 2 full")
    ap.add_argument("--configs", default="tiny,full")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: all)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
        f"threads, torch {torch.__version__}"
        + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "")
    )
    for config in args.configs.split(","):
        repeats = args.repeats or (5 if config == "tiny" else 2)
        run(config.strip(), device, repeats)


if __name__ == "__main__":
    main()
