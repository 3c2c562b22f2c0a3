"""OpenScene options of the commands (`--method openscene`) and its nuScenes evaluation protocol.

The official nuScenes evaluation (`run/evaluate.py` with `map_nuscenes_details`) embeds 43
detailed names ("a {} in a scene"), takes the argmax per point and maps it to the 16
nuScenes-lidarseg classes; `eval --method openscene` does the same on nuScenes. On
SemanticKITTI (no official OpenScene protocol) the dataset's own class prompts are the texts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from lidar_ovseg_ros.models.minkunet import ARCHITECTURES, FEATURE_DIMS
from lidar_ovseg_ros.segmentation.text_encoder import OPENSCENE_TEMPLATE

__all__ = ["add_openscene_arguments", "openscene_config", "run_openscene_eval"]


def add_openscene_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("OpenScene (--method openscene)")
    g.add_argument(
        "--openscene-checkpoint", help="the official nuscenes_openseg.pth.tar (profile full)"
    )
    g.add_argument(
        "--arch",
        choices=list(ARCHITECTURES),
        default="MinkUNet18A",
        help="MinkUNet variant of the checkpoint (default %(default)s)",
    )
    g.add_argument(
        "--features",
        choices=list(FEATURE_DIMS),
        default="openseg",
        help="openseg (768-d, CLIP ViT-L/14@336px text; default) or lseg (512-d, ViT-B/32)",
    )
    g.add_argument("--text-model", help="CLIP text tower id or folder (default: the features')")
    g.add_argument(
        "--template", default=OPENSCENE_TEMPLATE, help="prompt template (default '%(default)s')"
    )
    g.add_argument(
        "--tta-repeats",
        type=int,
        default=0,
        help="0 (default): one deterministic pass; N: the official random rotation/scale, N "
        "passes with scores summed (the official evaluation uses 5)",
    )


def openscene_config(args: argparse.Namespace) -> Any:
    from lidar_ovseg_ros.segmentation.openscene import OpenSceneConfig

    return OpenSceneConfig(
        profile=args.profile,
        arch=args.arch,
        checkpoint=args.openscene_checkpoint,
        feature_type=args.features,
        text_model=args.text_model,
        template=args.template,
        tta_repeats=args.tta_repeats,
        seed=args.seed,
        min_score=args.min_score,
        device=args.device,
        amp=args.amp,
        text_cache_dir=str(Path(args.cache_dir) / "openscene_text") if args.cache_dir else None,
    )


def run_openscene_eval(args: argparse.Namespace, dataset: Any) -> int:
    """Per-class IoU / mIoU of OpenScene on `dataset` (nuScenes: the official 43->16 protocol)."""
    from lidar_ovseg_ros.segmentation.metrics import ConfusionMatrix
    from lidar_ovseg_ros.segmentation.openscene import (
        OpenSceneSegmenter,
        map_nuscenes_details,
        nuscenes_details_vocabulary,
    )
    from lidar_ovseg_ros.vocabulary import load_preset

    classes = load_preset(dataset.sensor)
    if tuple(classes.names) != tuple(dataset.class_names):
        raise ValueError(f"preset '{dataset.sensor}' does not list the evaluation classes in order")
    cfg = openscene_config(args)
    segmenter = OpenSceneSegmenter.from_config(cfg)
    details = dataset.sensor == "nuscenes"
    segmenter.set_vocabulary(nuscenes_details_vocabulary() if details else classes)
    protocol = "43 detailed names -> 16 classes (official)" if details else "dataset prompts"

    cm = ConfusionMatrix(len(classes), class_names=classes.names)
    total = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    start = time.perf_counter()
    for i in range(total):
        scan = dataset[i]
        result = segmenter.segment(scan.points)
        labels = map_nuscenes_details(result.labels) if details else result.labels
        cm.update(scan.labels, labels)
        print(
            f"[{i + 1}/{total}] {scan.name}: {len(scan.points)} points, "
            f"running mIoU {100 * cm.miou():.2f}",
            file=sys.stderr,
        )
    elapsed = time.perf_counter() - start
    print(
        f"{args.dataset} ({total} scans, OpenScene {cfg.arch if cfg.profile == 'full' else 'tiny'}"
        f", profile {cfg.profile}, {protocol}, TTA repeats {cfg.tta_repeats})"
    )
    print(cm.format_table())
    if args.json:
        out = {
            "method": "openscene",
            "dataset": args.dataset,
            "root": str(args.root),
            "scans": total,
            "profile": cfg.profile,
            "untrained": segmenter.untrained,
            "protocol": protocol,
            "template": cfg.template,
            "tta_repeats": cfg.tta_repeats,
            "seconds": elapsed,
            **cm.scores().as_dict(),
            "confusion_matrix": cm.matrix.tolist(),
            "confusion_columns": [*classes.names, "no class"],
        }
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0
