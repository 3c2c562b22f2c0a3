"""`lidar-ovseg segment`: label one scan; write labels, scores, a bird's-eye view, an overlay."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lidar_ovseg_ros.commands._common import (
    add_model_arguments,
    build_segmenter,
)

DEFAULT_VOCABULARY = {"nuscenes": "nuscenes", "semantickitti": "semantickitti"}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "segment",
        help="label the points of one scan with an open vocabulary",
        description="Label every point of a scan (.bin, .npy, .pcd) or of a bundled calibrated "
        "frame (--frame) and write labels (uint16, 65535 = no class), a bird's-eye view and a "
        "camera overlay.",
    )
    p.add_argument("scan", nargs="?", help="scan file: .bin (see --fields/--dims), .npy, .pcd")
    src = p.add_argument_group("input")
    src.add_argument(
        "--frame",
        help="a bundled calibrated frame ('nuscenes', 'kitti') or a frame "
        "folder with calib.json; its points are used unless SCAN is given",
    )
    src.add_argument("--calib", help="calibration for --overlay: a frame folder or its calib.json")
    src.add_argument(
        "--fields", help="comma-separated fields of a .bin row, e.g. x,y,z,intensity,ring"
    )
    src.add_argument(
        "--dims", type=int, help="floats per .bin row (first four: x, y, z, intensity)"
    )
    add_model_arguments(p)
    p.add_argument("--vocabulary", help="preset name or YAML file (default: the sensor's preset)")
    out = p.add_argument_group("outputs")
    out.add_argument("--out-labels", help="labels .npy (uint16 [N])")
    out.add_argument("--out-scores", help="scores .npy (float32 [N])")
    out.add_argument("--bev", help="bird's-eye view PNG")
    out.add_argument("--bev-range", type=float, default=50.0, help="BEV half-width in metres")
    out.add_argument("--overlay", help="camera overlay PNG (needs --frame or --calib)")
    out.add_argument("--camera", help="camera of the overlay (default CAM_FRONT / the first one)")
    out.add_argument("--json", help="summary (counts per class, timings) as JSON")
    out.add_argument(
        "--query", help="free-text query (--method openscene): heat map over the points"
    )
    out.add_argument("--out-grounding", help="the --query heat map .npy (float32 [N] cosine)")
    p.set_defaults(handler=run)


def _load_frame(spec: str):
    """A bundled frame by name, or a frame folder / calib.json in either bundled format."""
    from lidar_ovseg_ros.frames import (
        FRAME_NAMES,
        load_frame,
        load_kitti_frame,
        load_nuscenes_frame,
    )

    if spec in FRAME_NAMES:
        return load_frame(spec)
    path = Path(spec).expanduser()
    root = path.parent if path.name == "calib.json" else path
    calib = root / "calib.json"
    if not calib.is_file():
        raise FileNotFoundError(f"calibration not found: {calib}")
    cams = json.loads(calib.read_text()).get("cameras", {})
    is_kitti = any("P" in c for c in cams.values())
    return load_kitti_frame(root) if is_kitti else load_nuscenes_frame(root)


def run(args: argparse.Namespace) -> int:
    from lidar_ovseg_ros.scan_files import read_scan
    from lidar_ovseg_ros.segmentation.base import supports_grounding
    from lidar_ovseg_ros.vocabulary import load_vocabulary

    if args.scan is None and args.frame is None:
        raise ValueError("give a SCAN file or --frame nuscenes|kitti|FOLDER")
    frame = _load_frame(args.frame) if args.frame else None
    calib_frame = _load_frame(args.calib) if args.calib else frame
    if args.overlay and calib_frame is None:
        raise ValueError("--overlay needs the camera calibration: give --frame or --calib")
    sensor = (
        args.sensor
        or (frame.sensor if frame else None)
        or (calib_frame.sensor if calib_frame else None)
    )
    if args.scan is not None:
        fields = [f.strip() for f in args.fields.split(",")] if args.fields else None
        scan = read_scan(args.scan, fields=fields, dims=args.dims, sensor=sensor or "nuscenes")
        points, source = scan.points, str(scan.path)
    else:
        points, source = frame.points, f"bundled frame '{frame.name}'"
    sensor = sensor or "nuscenes"
    vocabulary = load_vocabulary(args.vocabulary or DEFAULT_VOCABULARY[sensor])
    if args.query and args.method != "openscene":  # checked before any model loads
        raise ValueError(f"--query needs text-aligned features; method {args.method} has none")
    segmenter, cfg = build_segmenter(args, sensor)
    if args.query and not supports_grounding(segmenter):
        raise ValueError(f"--query needs text-aligned features; method {args.method} has none")
    active = segmenter.set_vocabulary(vocabulary)
    result = segmenter.segment(points)

    labels = result.labels
    counts = np.bincount(labels[labels < len(vocabulary)], minlength=len(vocabulary))
    unlabeled = int((labels >= len(vocabulary)).sum())
    print(
        f"{source}: {len(points)} points, sensor {sensor}, profile {cfg.profile}, "
        f"device {segmenter.device}"
    )
    print(
        f"vocabulary '{active.name}' ({len(vocabulary)} classes, "
        f"{getattr(cfg, 'classifier', 'text cosine')}, method {args.method}); "
        f"{len(points) - unlabeled} points labelled, "
        f"{unlabeled} without class"
    )
    for i in np.argsort(-counts):
        if counts[i]:
            print(f"  {vocabulary.names[i]:<24} {int(counts[i]):>8}")
    t = result.timings
    print("timings (ms): " + ", ".join(f"{k} {1e3 * v:.1f}" for k, v in t.items()))

    if args.query:
        heat = segmenter.grounding(args.query, result)
        top = np.sort(heat)[::-1][: max(1, len(heat) // 100)]
        print(f"query '{args.query}': cosine max {heat.max():.3f}, top-1% mean {top.mean():.3f}")
        if args.out_grounding:
            np.save(args.out_grounding, heat.astype(np.float32))
    if args.out_labels:
        np.save(args.out_labels, labels)
    if args.out_scores:
        np.save(args.out_scores, result.scores)
    if args.bev:
        from lidar_ovseg_ros.viz import render_bev

        title = f"{vocabulary.name} ({cfg.profile})"
        render_bev(points[:, :3], labels, vocabulary, args.bev, extent=args.bev_range, title=title)
    if args.overlay:
        from lidar_ovseg_ros.viz import render_camera_overlay

        cams = calib_frame.cameras
        name = args.camera or ("CAM_FRONT" if "CAM_FRONT" in cams else next(iter(cams)))
        if name not in cams:
            raise ValueError(f"no camera '{name}' in the calibration; cameras: {sorted(cams)}")
        render_camera_overlay(cams[name], points[:, :3], labels, vocabulary, args.overlay)
    if args.json:
        summary = {
            "source": source,
            "points": len(points),
            "sensor": sensor,
            "profile": cfg.profile,
            "untrained": segmenter.untrained,
            "vocabulary": vocabulary.name,
            "counts": {n: int(c) for n, c in zip(vocabulary.names, counts)},
            "no_class": unlabeled,
            "timings_s": t,
        }
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0
