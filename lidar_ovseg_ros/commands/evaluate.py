"""`lidar-ovseg eval`: per-class IoU and mIoU of the segmenter on a labelled dataset, or with
`--pop3d` of POP-3D (six cameras) under its official protocol: voxel mIoU against the LiDAR
ray-cast ground truth and point mIoU of the LiDAR points labelled from the cameras."""

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
    g = p.add_argument_group(
        "POP-3D (--pop3d)",
        "official protocol of vobecant/POP3D eval.py; --profile full: the cached pop3d model "
        "or --pop3d-weights",
    )
    g.add_argument(
        "--pop3d",
        action="store_true",
        help="evaluate POP-3D from the six nuScenes cameras instead of the LiDAR segmenter",
    )
    g.add_argument(
        "--pop3d-weights",
        help="pop3d_weights.pth (profile full; default: the cached 'pop3d' model)",
    )
    g.add_argument(
        "--text-embeddings",
        help="the official zeroshot_weights.pth (OpenAI CLIP ViT-B/16 ensembles), a path or the "
        "cached 'pop3d-zeroshot': no text model is needed; compared with the project's "
        "ensemble when a text model is present",
    )
    g.add_argument(
        "--clip-model",
        help="CLIP text model for the project's ensemble (profile full; default "
        "openai/clip-vit-base-patch16 when no --text-embeddings)",
    )
    g.add_argument(
        "--score",
        choices=["dot", "cosine"],
        default="dot",
        help="dot (official: raw dot product of the unnormalised features) or cosine",
    )
    g.add_argument(
        "--absent",
        choices=["official", "strict"],
        default="official",
        help="a class absent from the ground truth scores IoU 1 (official) or 0 when predicted "
        "and is left out when not (strict)",
    )
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
    if args.pop3d:
        return run_pop3d(args, kwargs)
    dataset = open_dataset(args.dataset, args.root, **kwargs)
    if args.method == "openscene":
        from lidar_ovseg_ros.commands._openscene import run_openscene_eval

        return run_openscene_eval(args, dataset)
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


def _pop3d_predictor(args: argparse.Namespace):
    import torch

    from lidar_ovseg_ros.models.pop3d import Pop3DConfig
    from lidar_ovseg_ros.occupancy.pipeline import OccupancyPredictor
    from lidar_ovseg_ros.occupancy.runtime import build_predictor
    from lidar_ovseg_ros.occupancy.text_queries import CLIP_MODEL_ID

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.profile == "tiny":
        return build_predictor("tiny", device=device, seed=args.seed, score=args.score)
    if args.text_embeddings and not args.clip_model:  # the official figures: no text model
        from lidar_ovseg_ros.weights import resolve_model_file

        weights = resolve_model_file(args.pop3d_weights, "pop3d")
        return OccupancyPredictor.from_config(
            Pop3DConfig.full(), None, weights=weights, device=device, score=args.score
        )
    return build_predictor(
        "full",
        weights=args.pop3d_weights,
        clip_model=args.clip_model or CLIP_MODEL_ID,
        device=device,
        score=args.score,
    )


def run_pop3d(args: argparse.Namespace, kwargs: dict) -> int:
    """POP-3D's zero-shot evaluation (official `eval.py`) on nuScenes keyframes."""
    from lidar_ovseg_ros.occupancy.evaluation import (
        FREE_LABEL,
        PointIoU,
        VoxelIoU,
        lidar_ground_truth,
    )
    from lidar_ovseg_ros.occupancy.nuscenes_cameras import NuScenesCameraDataset
    from lidar_ovseg_ros.occupancy.text_queries import (
        compare_embeddings,
        load_official_text_embeddings,
        nuscenes16_vocabulary,
    )
    from lidar_ovseg_ros.segmentation.metrics import IGNORE_INDEX

    if args.dataset != "nuscenes":
        raise ValueError("--pop3d evaluates on nuScenes (its six cameras): use --dataset nuscenes")
    dataset = NuScenesCameraDataset(args.root, **kwargs)
    predictor = _pop3d_predictor(args)
    cfg = predictor.config
    comparison = None
    if args.text_embeddings:
        from lidar_ovseg_ros.weights import resolve_model_file

        path = resolve_model_file(args.text_embeddings, "pop3d-zeroshot")
        official = load_official_text_embeddings(path, cfg.feature_dim)
        predictor.set_vocabulary(official)
        if predictor.text_encoder is not None:
            ours = predictor.text_encoder.encode_vocabulary(nuscenes16_vocabulary())
            comparison = compare_embeddings(official, ours)
            print(comparison.line())
        else:
            print("text embeddings: the official file only (no --clip-model): not compared")
    else:
        predictor.set_vocabulary(nuscenes16_vocabulary())
    names = tuple(dataset.class_names)
    if predictor.vocabulary.class_names != names:
        raise ValueError("the text embeddings do not list the 16 nuScenes classes in order")
    voxels = VoxelIoU(len(names), names, absent=args.absent)
    points = PointIoU(len(names), names, absent=args.absent, ignore_index=IGNORE_INDEX)
    total = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    start = time.perf_counter()
    for i in range(total):
        sample = dataset[i]
        xyz = sample.points[:, :3]
        result = predictor.predict(sample.load_images(), sample.calibrations, points=xyz)
        target = lidar_ground_truth(
            xyz, sample.labels, cfg.pc_range, cfg.grid_size, ignore_labels=(IGNORE_INDEX,)
        )
        voxels.update(result.label_grid(FREE_LABEL), target)
        points.update(result.point_labels, sample.labels)
        print(
            f"[{i + 1}/{total}] {sample.name}: {result.num_occupied} occupied voxels, "
            f"{len(xyz)} points, running voxel mIoU {100 * voxels.compute().miou_with_free:.2f}",
            file=sys.stderr,
        )
    elapsed = time.perf_counter() - start
    vr, pr = voxels.compute(), points.compute()
    print(
        f"POP-3D on nuscenes ({total} samples, profile {args.profile}, score {args.score}, "
        f"absent classes {args.absent}, text "
        f"{'official file' if args.text_embeddings else 'project ensemble'})"
    )
    print(f"{'class':<22}{'voxel IoU':>10}{'point IoU':>11}")
    for n, v, q in zip(names, vr.iou, pr.iou, strict=True):
        print(f"{n:<22}{100 * v:>10.2f}{100 * q:>11.2f}")
    print(f"{'empty':<22}{100 * vr.free_iou:>10.2f}")
    print(f"voxel mIoU (16 classes + empty, official val_miou_vox_clip_all): "
          f"{100 * vr.miou_with_free:.2f}")  # fmt: skip
    print(f"voxel mIoU (16 classes): {100 * vr.miou:.2f}")
    print(f"point mIoU (LiDAR points labelled from the cameras): {100 * pr.miou:.2f}")
    print(f"occupancy IoU: {100 * vr.occupancy_iou:.2f}")
    if args.json:
        out = {
            "method": "pop3d",
            "dataset": args.dataset,
            "root": str(args.root),
            "samples": total,
            "profile": args.profile,
            "score": args.score,
            "absent": args.absent,
            "text_embeddings": args.text_embeddings,
            "seconds": elapsed,
            "voxel": vr.as_dict(),
            "point": pr.as_dict(),
        }
        if comparison is not None:
            out["text_embedding_comparison"] = {
                "matched": comparison.matched,
                "mean_cosine": comparison.mean_cosine,
                "min_cosine": comparison.min_cosine,
                "max_abs_diff": comparison.max_abs_diff,
                "worst": comparison.worst,
            }
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0
