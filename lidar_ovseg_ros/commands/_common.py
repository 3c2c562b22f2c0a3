"""Options shared by the commands that build a `LidarSegmenter` (segment, eval, ...)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lidar_ovseg_ros.commands._openscene import add_openscene_arguments, openscene_config
from lidar_ovseg_ros.segmentation.base import METHODS
from lidar_ovseg_ros.segmentation.segmenter import (
    AMP_MODES,
    BACKBONE_PRESETS,
    PROFILES,
    SENSORS,
    SegmenterConfig,
)


def add_model_arguments(parser: argparse.ArgumentParser, sensor: bool = True) -> None:
    """--profile, --checkpoint, --backbone, [--sensor], --device, --amp, classifier and prototype
    options (defaults: those of `SegmenterConfig`, except the profile)."""
    d = SegmenterConfig()
    g = parser.add_argument_group("model")
    g.add_argument(
        "--method",
        choices=METHODS,
        default="igloss",
        help="igloss (default): ScaLR+ features + image prototypes; openscene: OpenScene's "
        "CLIP-aligned MinkUNet, classes by text (see the OpenScene options)",
    )
    g.add_argument(
        "--profile",
        choices=PROFILES,
        default="tiny",
        help="'full': ScaLR+ checkpoint + DINOv2-large + sd-turbo (the IGLOSS method); 'tiny' "
        "(default): small UNTRAINED built-in models that run anywhere, labels not meaningful",
    )
    g.add_argument(
        "--checkpoint",
        help="backbone weights: ScaLR+ ckpt_last.pth or a `lidar-ovseg weights` name (profile "
        "full; default: the cached igloss-scalr-plus)",
    )
    g.add_argument(
        "--backbone",
        choices=BACKBONE_PRESETS,
        default=d.backbone,
        help="WaffleIron preset of profile full (default %(default)s)",
    )
    if sensor:
        g.add_argument(
            "--sensor",
            choices=SENSORS,
            default=None,
            help="intensity convention: nuscenes (0-255) or semantickitti (0-1)",
        )
    g.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N (default auto)")
    g.add_argument("--amp", choices=list(AMP_MODES), default=d.amp, help="backbone autocast")
    g.add_argument(
        "--classifier",
        choices=["logreg", "nearest"],
        default=d.classifier,
        help="logreg: IGLOSS logistic regression (default); nearest: nearest prototype",
    )
    g.add_argument(
        "--min-score", type=float, default=None, help="points scoring below it get no class (65535)"
    )
    add_openscene_arguments(parser)
    p = parser.add_argument_group("prototypes")
    p.add_argument(
        "--cache-dir", default=None, help=f"prototype cache (default {d.resolved_cache_dir})"
    )
    p.add_argument("--images-per-class", type=int, default=d.images_per_class)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--feature-model", default=d.feature_model, help="DINOv2 id or folder (full)")
    p.add_argument(
        "--generator-model", default=d.generator_model, help="text-to-image id or folder (full)"
    )


def segmenter_config(args: argparse.Namespace, sensor: str) -> SegmenterConfig:
    return SegmenterConfig(
        profile=args.profile,
        backbone=args.backbone,
        checkpoint=args.checkpoint,
        sensor=sensor,
        feature_model=args.feature_model,
        generator_model=args.generator_model,
        images_per_class=args.images_per_class,
        seed=args.seed,
        cache_dir=args.cache_dir,
        classifier=args.classifier,
        min_score=args.min_score,
        device=args.device,
        amp=args.amp,
    )


def build_segmenter(args: argparse.Namespace, sensor: str) -> tuple[Any, Any]:
    """(segmenter, its config) of `--method`: IGLOSS `LidarSegmenter` or `OpenSceneSegmenter`."""
    if getattr(args, "method", "igloss") == "openscene":
        from lidar_ovseg_ros.segmentation.openscene import OpenSceneSegmenter

        cfg = openscene_config(args)
        return OpenSceneSegmenter.from_config(cfg), cfg
    from lidar_ovseg_ros.segmentation.segmenter import LidarSegmenter

    cfg = segmenter_config(args, sensor)
    return LidarSegmenter.from_config(cfg), cfg


class ProgressBar:
    """`progress(done, total, message)` callback drawing a tqdm bar on stderr."""

    def __init__(self, description: str) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=0, desc=description, unit="step", file=sys.stderr, leave=True)

    def __call__(self, done: int, total: int, message: str = "") -> None:
        if self._bar.total != total:
            self._bar.total = total
        self._bar.n = done
        if message:
            self._bar.set_postfix_str(message[:60], refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
