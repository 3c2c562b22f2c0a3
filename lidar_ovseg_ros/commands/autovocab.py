"""`lidar-ovseg autovocab`: name what a scan (and its cameras) shows, then segment with it (3D-AVS).

Captions from the point captioner (SMAP + ClipCap, 12 LiDAR sectors) and, when camera images are
given, the image captioner (BLIP); Caption2Tag; the proposed vocabulary (optionally on top of a
base vocabulary); OpenScene segmentation with it; TPSS; a labeled bird's-eye view.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lidar_ovseg_ros.autovocab.image_captioner import DEFAULT_IMAGE_CAPTIONER


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "autovocab",
        help="propose a vocabulary from captions of a scan (+ images) and segment with it",
        description="3D-AVS auto-vocabulary: caption the LiDAR scan (12 azimuth sectors, SMAP + "
        "ClipCap) and optional camera images (BLIP), turn the captions into tags, build the "
        "vocabulary, label the points with OpenScene and write a bird's-eye view.",
    )
    p.add_argument("scan", nargs="?", help="scan file: .bin (see --fields/--dims), .npy, .pcd")
    src = p.add_argument_group("input")
    src.add_argument(
        "--frame",
        help="a bundled frame ('nuscenes', 'kitti') or a frame folder with calib.json: its "
        "points (unless SCAN is given) and its camera images",
    )
    src.add_argument("--fields", help="comma-separated fields of a .bin row")
    src.add_argument("--dims", type=int, help="floats per .bin row")
    src.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a camera image to caption (repeatable), e.g. CAM_FRONT=front.jpg",
    )
    src.add_argument("--no-images", action="store_true", help="LiDAR captions only")
    m = p.add_argument_group("models")
    m.add_argument(
        "--profile",
        choices=["tiny", "full"],
        default="tiny",
        help="'full': the official files below; 'tiny' (default): small UNTRAINED models that "
        "run anywhere (captions and labels are not meaningful)",
    )
    m.add_argument("--smap-checkpoint", default="", help="3D-AVS smap_model_epoch_20.pth.tar")
    m.add_argument("--clipcap-weights", default="", help="ClipCap COCO coco_weights.pt")
    m.add_argument("--gpt2-tokenizer", default="gpt2", help="GPT-2 tokenizer id or folder")
    m.add_argument(
        "--image-captioner",
        default=DEFAULT_IMAGE_CAPTIONER,
        help="BLIP captioning id or folder (default %(default)s)",
    )
    m.add_argument("--openscene-checkpoint", help="OpenScene nuscenes_openseg.pth.tar (full)")
    m.add_argument("--text-model", help="CLIP text tower id or folder (default ViT-L/14@336px)")
    m.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    v = p.add_argument_group("vocabulary")
    v.add_argument("--base-vocabulary", help="preset or YAML whose classes are always present")
    v.add_argument("--merge-threshold", type=float, default=0.9, help="CLIP cosine to merge tags")
    v.add_argument("--max-classes", type=int, default=24, help="cap on caption classes")
    v.add_argument(
        "--tagger",
        choices=["rules", "llm"],
        default="rules",
        help="Caption2Tag: rules (default, deterministic) or llm (a small instruction model)",
    )
    v.add_argument("--tagger-model", default="", help="llm tagger id or folder (Qwen2.5-0.5B)")
    out = p.add_argument_group("outputs")
    out.add_argument("--bev", help="labeled bird's-eye view PNG")
    out.add_argument("--bev-range", type=float, default=50.0, help="BEV half-width in metres")
    out.add_argument("--json", help="captions, tags, vocabulary with provenance, TPSS as JSON")
    out.add_argument("--out-vocabulary", help="the proposed vocabulary as YAML")
    p.set_defaults(handler=run)


def _images(args: argparse.Namespace, frame) -> dict[str, np.ndarray]:
    from PIL import Image

    images: dict[str, np.ndarray] = {}
    if args.no_images:
        return images
    if frame is not None and not args.image:
        images = {n: c.load_image() for n, c in sorted(frame.cameras.items())}
    for spec in args.image:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--image takes NAME=PATH, got {spec!r}")
        file = Path(path).expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"image not found: {file}")
        with Image.open(file) as img:
            images[name] = np.asarray(img.convert("RGB"))
    return images


def run(args: argparse.Namespace) -> int:
    from lidar_ovseg_ros.autovocab.pipeline import AutoVocabConfig, AutoVocabulary, clip_embedder
    from lidar_ovseg_ros.autovocab.tpss import tpss
    from lidar_ovseg_ros.commands.segment import _load_frame
    from lidar_ovseg_ros.scan_files import read_scan
    from lidar_ovseg_ros.segmentation.openscene import OpenSceneConfig, OpenSceneSegmenter
    from lidar_ovseg_ros.vocabulary import load_vocabulary

    if args.scan is None and args.frame is None:
        raise ValueError("give a SCAN file or --frame nuscenes|kitti|FOLDER")
    frame = _load_frame(args.frame) if args.frame else None
    if args.scan is not None:
        fields = [f.strip() for f in args.fields.split(",")] if args.fields else None
        scan = read_scan(args.scan, fields=fields, dims=args.dims)
        points, source = scan.points, str(scan.path)
    else:
        points, source = frame.points, f"bundled frame '{frame.name}'"
    images = _images(args, frame)
    base = load_vocabulary(args.base_vocabulary) if args.base_vocabulary else None
    config = AutoVocabConfig(
        profile=args.profile,
        smap_checkpoint=args.smap_checkpoint,
        clipcap_weights=args.clipcap_weights,
        gpt2_tokenizer=args.gpt2_tokenizer,
        image_captioner=args.image_captioner if images else "",
        merge_threshold=args.merge_threshold,
        max_auto_classes=args.max_classes,
        tagger=args.tagger,
        tagger_model=args.tagger_model,
        device=args.device,
    )
    seg_cfg = OpenSceneConfig(
        profile=args.profile,
        checkpoint=args.openscene_checkpoint,
        text_model=args.text_model,
        device=args.device,
    )
    segmenter = OpenSceneSegmenter.from_config(seg_cfg)
    auto = AutoVocabulary.from_config(
        config,
        base=base,
        embedder=clip_embedder(segmenter.text_encoder),
        shared_trunk=segmenter.model if args.profile == "full" else None,
    )
    result_round = auto.run_round(points, images or None)
    print(f"{source}: {len(points)} points, {len(images)} camera images, profile {args.profile}")
    print("captions:")
    for src_name, caption in result_round.captions.items():
        print(f"  {src_name:<22} {caption}")
    print("tags: " + ", ".join(t.name for t in result_round.tags))
    proposal = result_round.proposal
    vocabulary = proposal.vocabulary
    if vocabulary is None:
        raise ValueError("the captions gave no tag and no base vocabulary was given")
    print(f"vocabulary ({len(vocabulary)} classes): " + ", ".join(vocabulary.names))

    active = segmenter.set_vocabulary(vocabulary)
    result = segmenter.segment(points, return_features=True)
    labels = result.labels
    score = tpss(result.features[result.valid], labels[result.valid], active.text_embeddings)
    counts = np.bincount(labels[labels < len(vocabulary)], minlength=len(vocabulary))
    for i in np.argsort(-counts):
        if counts[i]:
            print(f"  {vocabulary.names[i]:<24} {int(counts[i]):>8}")
    print(f"TPSS {score:.4f}")
    timings = {**result_round.timings, "segment": result.timings.get("total", 0.0)}
    print("timings (ms): " + ", ".join(f"{k} {1e3 * v:.1f}" for k, v in timings.items()))
    if args.bev:
        from lidar_ovseg_ros.viz import render_bev

        title = f"auto vocabulary ({args.profile})"
        render_bev(points[:, :3], labels, vocabulary, args.bev, extent=args.bev_range, title=title)
    if args.out_vocabulary:
        import yaml

        Path(args.out_vocabulary).write_text(yaml.safe_dump(vocabulary.to_dict(), sort_keys=False))
    if args.json:
        doc = {
            "source": source,
            "profile": args.profile,
            "untrained": args.profile == "tiny",
            **result_round.captions_dict(),
            "proposal": proposal.to_dict(),
            "counts": {n: int(c) for n, c in zip(vocabulary.names, counts, strict=True)},
            "tpss": score,
        }
        Path(args.json).write_text(json.dumps(doc, indent=2))
    return 0
