"""`lidar-ovseg build-prototypes`: generate and cache the prototype features of a vocabulary."""

from __future__ import annotations

import argparse

from lidar_ovseg_ros.commands._common import (
    ProgressBar,
    add_model_arguments,
    segmenter_config,
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "build-prototypes",
        help="generate prototype images and cache their features for a vocabulary",
        description="Fill the prototype cache for a vocabulary (text-to-image generation + "
        "DINOv2 features), so a node or `segment` can switch to it without waiting.",
    )
    p.add_argument("--vocabulary", required=True, help="preset name or YAML file")
    add_model_arguments(p, sensor=False)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from lidar_ovseg_ros.segmentation.segmenter import build_prototype_bank
    from lidar_ovseg_ros.vocabulary import load_vocabulary

    vocabulary = load_vocabulary(args.vocabulary)
    cfg = segmenter_config(args, sensor="nuscenes")  # the sensor does not change prototypes
    bank = build_prototype_bank(cfg)
    with ProgressBar(f"prototypes '{vocabulary.name}'") as bar:
        prototypes = bank.build(vocabulary, progress=bar)
    labels = np.asarray(prototypes.labels)
    counts = np.bincount(labels, minlength=len(vocabulary))
    print(
        f"vocabulary '{vocabulary.name}': {len(labels)} prototypes of dimension "
        f"{prototypes.features.shape[1]} for {len(vocabulary)} classes, cached in "
        f"{cfg.resolved_cache_dir}"
    )
    for name, n in zip(vocabulary.names, counts):
        print(f"  {name:<24} {int(n):>4}")
    return 0
