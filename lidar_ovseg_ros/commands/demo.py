"""`lidar-ovseg demo`: the end-to-end ROS demo on the bundled real frames."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="end-to-end ROS demo on the bundled real frames (bag -> node -> PNGs, latency)",
        description="Build a bag from the bundled nuScenes frame, start lidar_ovseg_node, replay "
        "the bag into it over DDS, change the vocabulary at runtime, record the outputs to MCAP, "
        "and write bird's-eye and camera-overlay PNGs with the latency figures.",
    )
    p.add_argument("--out", default="demo_output", help="output folder (default %(default)s)")
    p.add_argument("--params-file", help="node parameters (default: config/lidar_ovseg.yaml)")
    p.add_argument(
        "--profile",
        choices=["auto", "tiny", "full"],
        default="auto",
        help="auto (default): full when --checkpoint and the models are available, else tiny",
    )
    p.add_argument("--checkpoint", default="", help="ScaLR+ ckpt_last.pth for real labels")
    p.add_argument("--device", default="auto")
    p.add_argument("--sweeps", type=int, default=10, help="sweeps per pass (default 10)")
    p.add_argument("--rate", type=float, default=1.0, help="sweeps per second in the bag")
    p.add_argument(
        "--switch-to",
        help="comma-separated vocabulary set at runtime for the second pass "
        "(default: car, pedestrian, road, building, vegetation, traffic cone)",
    )
    p.add_argument("--domain-id", type=int, help="ROS_DOMAIN_ID (default: random 1-100)")
    p.add_argument(
        "--no-cameras", action="store_true", help="skip the camera occupancy (POP-3D) stage"
    )
    p.add_argument("--pop3d-weights", default="", help="pop3d_weights.pth for real occupancy")
    p.add_argument("--query", default="a parked car", help="grounding query of the camera stage")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from lidar_ovseg_ros.nodes.demo import DemoOptions, run_demo
    from lidar_ovseg_ros.resources import share_path

    if args.sweeps < 1 or args.rate <= 0:
        raise ValueError("--sweeps must be >= 1 and --rate > 0")
    params = Path(args.params_file) if args.params_file else share_path("config/lidar_ovseg.yaml")
    if not params.is_file():
        raise FileNotFoundError(2, "parameters file not found", str(params))
    switch = [n.strip() for n in args.switch_to.split(",")] if args.switch_to else None
    run_demo(
        DemoOptions(
            out=Path(args.out),
            params_file=params,
            profile=args.profile,
            checkpoint=args.checkpoint,
            device=args.device,
            sweeps=args.sweeps,
            rate_hz=args.rate,
            switch_to=switch,
            domain_id=args.domain_id,
            cameras=not args.no_cameras,
            pop3d_weights=args.pop3d_weights,
            query=args.query,
        )
    )
    return 0
