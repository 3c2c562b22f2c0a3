"""`lidar-ovseg eval`: per-class IoU and mIoU of the segmenter on a labelled dataset."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from lidar_ovseg_ros.commands._common import (
    add_model_arguments,
    segmenter_config,
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="mIoU on SemanticKITTI or nuScenes-lidarseg",
        description="Segment every labelled scan of a dataset with the dataset's own vocabulary "
        "(19 SemanticKITTI / 16 nuScenes classes) and print per-class IoU, mIoU and the "
        "confusion matrix. As in the official protocol, points outside the backbone's crop take "
        "the label of their nearest kept point (--strict-crop counts them as misses instead).",
    )
    p.add_argument("root", help="dataset folder")
    p.add_argument("--dataset", required=True, choices=["semantickitti", "nuscenes"])
    p.add_argument("--sequences", help="SemanticKITTI sequences, comma-separated (e.g. 08)")
    p.add_argument("--version", help="nuScenes metadata folder (e.g. v1.0-mini)")
    p.add_argument("--scenes", help="nuScenes scene names, comma-separated")
    p.add_argument("--limit", type=int, help="evaluate only the first N scans")
    p.add_argument(
        "--strict-crop", action="store_true", help="points outside the crop count as misses"
    )
    p.add_argument("--json", help="write the scores and the confusion matrix as JSON")
    add_model_arguments(p, sensor=False)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from lidar_ovseg_ros.segmentation.datasets import open_dataset
    from lidar_ovseg_ros.segmentation.metrics import ConfusionMatrix
    from lidar_ovseg_ros.segmentation.segmenter import LidarSegmenter
    from lidar_ovseg_ros.vocabulary import load_preset

    kwargs = {}
    if args.dataset == "semantickitti" and args.sequences:
        kwargs["sequences"] = [s.strip() for s in args.sequences.split(",") if s.strip()]
    if args.dataset == "nuscenes":
        if args.version:
            kwargs["version"] = args.version
        if args.scenes:
            kwargs["scenes"] = [s.strip() for s in args.scenes.split(",") if s.strip()]
    if args.limit is not None and args.limit < 1:
        raise ValueError("--limit must be >= 1")
    dataset = open_dataset(args.dataset, args.root, **kwargs)
    vocabulary = load_preset(dataset.sensor)
    if tuple(vocabulary.names) != tuple(dataset.class_names):
        raise ValueError(f"preset '{dataset.sensor}' does not list the evaluation classes in order")
    cfg = segmenter_config(args, sensor=dataset.sensor)
    segmenter = LidarSegmenter.from_config(cfg)
    segmenter.set_vocabulary(vocabulary)

    cm = ConfusionMatrix(len(vocabulary), class_names=vocabulary.names)
    total = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    start = time.perf_counter()
    for i in range(total):
        scan = dataset[i]
        result = segmenter.segment(scan.points, label_outside_crop=not args.strict_crop)
        cm.update(scan.labels, result.labels)
        print(
            f"[{i + 1}/{total}] {scan.name}: {len(scan.points)} points, "
            f"running mIoU {100 * cm.miou():.2f}",
            file=sys.stderr,
        )
    elapsed = time.perf_counter() - start
    print(f"{args.dataset} ({total} scans, profile {cfg.profile}, classifier {cfg.classifier})")
    print(cm.format_table())
    if args.json:
        out = {
            "dataset": args.dataset,
            "root": str(args.root),
            "scans": total,
            "profile": cfg.profile,
            "untrained": segmenter.untrained,
            "classifier": cfg.classifier,
            "strict_crop": bool(args.strict_crop),
            "seconds": elapsed,
            **cm.scores().as_dict(),
            "confusion_matrix": cm.matrix.tolist(),
            "confusion_columns": [*vocabulary.names, "no class"],
        }
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0
