"""`lidar-ovseg demo`: bag of real frames -> lidar_ovseg_node -> recorded outputs, PNGs, latency.

It runs what a user runs on a vehicle: the node as its own process (the console script's code),
fed by a bag player over DDS, with the vocabulary changed mid-run through the node's parameter
service, and the outputs recorded to MCAP. Then it draws what came back.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_SWITCH = ["car", "pedestrian", "road", "building", "vegetation", "traffic cone"]


@dataclass
class DemoOptions:
    out: Path
    params_file: Path
    profile: str = "auto"  # auto | tiny | full
    checkpoint: str = ""
    device: str = "auto"
    sweeps: int = 10
    rate_hz: float = 1.0
    switch_to: list[str] | None = None
    domain_id: int | None = None
    startup_timeout: float = 900.0
    cameras: bool = True  # also run camera_occupancy_node on the bag's six cameras
    pop3d_weights: str = ""
    query: str = "a parked car"
    openscene: bool = True  # also run lidar_ovseg_node with method openscene and a text query
    lidar_query: str = "a car"


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
    p.add_argument(
        "--no-openscene",
        action="store_true",
        help="skip the OpenScene stage (lidar_ovseg_node method openscene + a text query)",
    )
    p.add_argument(
        "--lidar-query", default="a car", help="grounding query of the OpenScene LiDAR stage"
    )
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
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
            openscene=not args.no_openscene,
            lidar_query=args.lidar_query,
        )
    )
    return 0


REAL_DEMO_COMMAND = (
    "lidar-ovseg weights fetch --all-for igloss --all-for pop3d && bash scripts/demo.sh"
)
"""What turns the tiny demo into the real one (printed at the end of a tiny run)."""


def real_demo_command() -> str:
    """REAL_DEMO_COMMAND with the `lidar-ovseg` of this environment when it is not on PATH
    (scripts/demo.sh runs it from .venv)."""
    import shutil

    exe = Path(sys.prefix) / "bin" / "lidar-ovseg"
    if shutil.which("lidar-ovseg") or not exe.is_file():
        return REAL_DEMO_COMMAND
    try:
        shown = exe.relative_to(Path.cwd())
    except ValueError:
        shown = exe
    return REAL_DEMO_COMMAND.replace("lidar-ovseg", str(shown), 1)


def _cached(name: str) -> bool:
    from lidar_ovseg_ros.weights import status

    return status(name).cached


def resolve_profile(opts: DemoOptions) -> tuple[str, str]:
    """'full' when weights are at hand (given, or in the model cache), else the tiny built-in
    profile; with the reason."""
    if opts.profile in ("tiny", "full"):
        return opts.profile, f"profile '{opts.profile}' requested"
    if opts.checkpoint and not Path(opts.checkpoint).expanduser().is_file():
        return "tiny", f"checkpoint not found: {opts.checkpoint}"
    if not opts.checkpoint and not _cached("igloss-scalr-plus"):
        return "tiny", "no ScaLR+ checkpoint (--checkpoint, or the cached igloss-scalr-plus)"
    feature_model, generator_model = _model_ids(opts.params_file)
    needed = [feature_model]
    if not _generator_optional(generator_model):
        needed.append(generator_model)
    missing = [m for m in needed if not _model_available(m)]
    if missing:
        return "tiny", f"models neither local nor cached: {missing}"
    return "full", "checkpoint and models available"


def _generator_optional(generator_model: str) -> bool:
    """The paper's prototype images make the generator unnecessary for the presets (the second
    pass then switches to the semantickitti preset instead of free class names)."""
    return _cached("igloss-prototype-images") and not _model_available(generator_model)


def _model_ids(params_file: Path) -> list[str]:
    import yaml

    data = yaml.safe_load(params_file.read_text()) or {}
    params: dict[str, Any] = {}
    for section in data.values():
        params.update((section or {}).get("ros__parameters", {}))
    return [
        str(params.get("feature_model", "facebook/dinov2-large")),
        str(params.get("generator_model", "stabilityai/sd-turbo")),
    ]


def _model_available(model_id: str) -> bool:
    if Path(model_id).expanduser().is_dir():
        return True
    from lidar_ovseg_ros.weights import require_hub_model
    from lidar_ovseg_ros.weights.catalog import HF_IDS

    if model_id in HF_IDS:  # the catalog knows which files make it complete
        try:
            require_hub_model(model_id)
            return True
        except FileNotFoundError:
            return False
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(model_id, local_files_only=True)
        return True
    except Exception:
        return False


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    a = np.asarray(values)
    return {
        "n": len(a),
        "median": float(np.median(a)),
        "p90": float(np.percentile(a, 90)),
        "max": float(a.max()),
    }


class _Probe:
    """Watches the node: input arrivals, labeled outputs, vocabulary state, processing times."""

    def __init__(self, node: Any) -> None:
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import PointCloud2
        from std_msgs.msg import Float32, String

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self.lock = threading.Lock()
        # Arrival time of each input stamp in the current pass (every pass replays the same
        # stamps, so `start_pass` forgets the previous pass's arrivals).
        self.input_times: dict[tuple[int, int], float] = {}
        self.inputs_seen = 0
        self.outputs: list[tuple[float, Any]] = []
        self.vocabulary: dict = {}
        self.processing_ms: list[float] = []
        node.create_subscription(PointCloud2, "/lidar/points", self._on_input, reliable)
        node.create_subscription(
            PointCloud2, "/lidar_ovseg_node/output/points", self._on_output, reliable
        )
        node.create_subscription(
            String, "/lidar_ovseg_node/output/vocabulary", self._on_vocabulary, latched
        )
        node.create_subscription(
            Float32, "/lidar_ovseg_node/debug/processing_time_ms", self._on_proc, 10
        )

    @staticmethod
    def _key(msg: Any) -> tuple[int, int]:
        return (msg.header.stamp.sec, msg.header.stamp.nanosec)

    def _on_input(self, msg: Any) -> None:
        with self.lock:
            self.input_times[self._key(msg)] = time.monotonic()
            self.inputs_seen += 1

    def start_pass(self) -> int:
        """Forget earlier arrivals; returns the index of the pass's first output."""
        with self.lock:
            self.input_times.clear()
            return len(self.outputs)

    def _on_output(self, msg: Any) -> None:
        with self.lock:
            self.outputs.append((time.monotonic(), msg))

    def _on_vocabulary(self, msg: Any) -> None:
        with self.lock:
            self.vocabulary = json.loads(msg.data)

    def _on_proc(self, msg: Any) -> None:
        with self.lock:
            self.processing_ms.append(float(msg.data))

    def latencies_ms(self, outputs: list[tuple[float, Any]]) -> list[float]:
        with self.lock:
            return [
                (t - self.input_times[self._key(m)]) * 1e3
                for t, m in outputs
                if self._key(m) in self.input_times
            ]


def _wait(predicate: Any, timeout: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"lidar_ovseg_node exited ({proc.returncode}) while {what}")
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:.0f} s while {what}")


def run_demo(opts: DemoOptions) -> dict[str, Any]:
    """Run the whole demo; returns the summary also written to `out/summary.json`."""
    from lidar_ovseg_ros.bags import write_demo_bag

    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    profile, why = resolve_profile(opts)
    if profile == "tiny":
        print(
            "\n*** NOTE: running the small BUILT-IN model profile ('tiny'): untrained tiny "
            f"networks, so the labels are NOT meaningful ({why}). For real labels: "
            f"{real_demo_command()} ***\n",
            flush=True,
        )
    else:
        print(f"[demo] profile full: {why}", flush=True)

    domain = opts.domain_id if opts.domain_id is not None else random.randint(1, 100)
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_LOG_DIR", str(out / "ros_log"))
    print(f"[demo] DDS domain {domain}, localhost only; output in {out}", flush=True)

    bag_path = out / "demo_bag"
    if bag_path.exists():
        import shutil

        shutil.rmtree(bag_path)
    info = write_demo_bag(bag_path, repeats=opts.sweeps, rate_hz=opts.rate_hz)
    print(f"[demo] wrote {bag_path} ({sum(t.count for t in info.topics.values())} messages)")

    node_log = (out / "node.log").open("w")
    node_cmd = [
        sys.executable,
        "-m",
        "lidar_ovseg_ros.nodes.lidar_ovseg_node",
        "--ros-args",
        "--params-file",
        str(opts.params_file),
        "-p",
        f"profile:={profile}",
        "-p",
        f"device:={opts.device}",
        "-p",
        "input_reliability:=reliable",
        "-r",
        "~/input/points:=/lidar/points",
    ]
    if opts.checkpoint:
        node_cmd += ["-p", f"checkpoint:={opts.checkpoint}"]
    proc = subprocess.Popen(node_cmd, stdout=node_log, stderr=subprocess.STDOUT)
    try:
        return _drive(opts, out, bag_path, proc, profile, why)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        node_log.close()


def _drive(
    opts: DemoOptions,
    out: Path,
    bag_path: Path,
    proc: subprocess.Popen,
    profile: str,
    why: str,
) -> dict[str, Any]:
    import rclpy
    from rcl_interfaces.srv import SetParameters
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from lidar_ovseg_ros.bags.rclpy_tools import BagPlayer, BagRecorder, PlayOptions
    from lidar_ovseg_ros.frames import load_nuscenes_frame

    context = rclpy.Context()
    rclpy.init(context=context)
    executor = MultiThreadedExecutor(num_threads=3, context=context)
    probe_node = Node("demo_probe", context=context)
    probe = _Probe(probe_node)
    recorder = BagRecorder(
        out / "outputs.mcap",
        [
            "/lidar_ovseg_node/output/points",
            "/lidar_ovseg_node/output/voxels",
            "/lidar_ovseg_node/output/vocabulary",
            "/diagnostics",
        ],
        context=context,
    )
    for n in (probe_node, recorder):
        executor.add_node(n)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    frame = load_nuscenes_frame()
    passes: list[dict[str, Any]] = []
    try:
        print("[demo] waiting for the node to load its models and first vocabulary ...", flush=True)
        _wait(
            lambda: probe.vocabulary.get("state") == "active",
            opts.startup_timeout,
            "building the first vocabulary",
            proc,
        )
        second: list[str] | str = opts.switch_to or DEFAULT_SWITCH
        if profile == "full" and not opts.switch_to:
            _, generator_model = _model_ids(opts.params_file)
            if _generator_optional(generator_model):
                second = "semantickitti"  # a preset with the paper's images: no generator
        vocabularies = [None, second]
        for index, names in enumerate(vocabularies):
            if names is not None:
                before = probe.vocabulary["active"]["fingerprint"]
                client = probe_node.create_client(SetParameters, "/lidar_ovseg_node/set_parameters")
                if not client.wait_for_service(timeout_sec=30):
                    raise TimeoutError("the node's parameter service did not appear")
                param = (
                    Parameter("vocabulary_file", value=names)
                    if isinstance(names, str)
                    else Parameter("vocabulary", value=list(names))
                )
                req = SetParameters.Request(parameters=[param.to_parameter_msg()])
                future = client.call_async(req)
                _wait(future.done, 30, "setting the vocabulary parameter", proc)
                result = future.result().results[0]
                if not result.successful:
                    raise RuntimeError(f"the node refused the vocabulary: {result.reason}")
                print(f"[demo] vocabulary set to {names} at runtime; building ...", flush=True)
                _wait(
                    lambda b=before: probe.vocabulary.get("active", {}).get("fingerprint") != b,
                    opts.startup_timeout,
                    "building the new vocabulary",
                    proc,
                )
            vocab_json = dict(probe.vocabulary)
            first_output = probe.start_pass()
            pass_start = time.monotonic()
            player = BagPlayer(
                bag_path,
                PlayOptions(topics=["/lidar/points"], wait_for_subscribers=2, wait_timeout=30),
                node_name=f"demo_player_{index}",
                context=context,
            )
            executor.add_node(player)
            print(f"[demo] pass {index + 1}: replaying {opts.sweeps} sweeps ...", flush=True)
            player.start()
            player.wait(timeout=opts.sweeps / opts.rate_hz + 60)
            time.sleep(0.5)
            _wait(
                lambda f=first_output: len(probe.outputs) > f,
                120,
                "waiting for labeled clouds",
                proc,
            )
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # let the last frame come back
                count = len(probe.outputs)
                time.sleep(1.5)
                if len(probe.outputs) == count:
                    break
            executor.remove_node(player)
            player.destroy_node()
            outputs = probe.outputs[first_output:]
            report = _report_pass(index + 1, outputs, probe, vocab_json, frame, out, profile)
            report["pass_seconds"] = round(time.monotonic() - pass_start, 3)
            passes.append(report)
        diag = _diagnostics_snapshot(probe)
        openscene = (
            _openscene_stage(opts, out, bag_path, context, executor) if opts.openscene else None
        )
        camera = _camera_stage(opts, out, bag_path, context, executor) if opts.cameras else None
    finally:
        recorder.close()
        executor.shutdown(timeout_sec=2)
        rclpy.shutdown(context=context)
    summary = {
        "profile": profile,
        "profile_reason": why,
        "labels_meaningful": profile == "full",
        "sweeps_per_pass": opts.sweeps,
        "bag_rate_hz": opts.rate_hz,
        "passes": passes,
        "processing_time_ms": _percentiles(probe.processing_ms),
        "recorded_bag": str(out / "outputs.mcap"),
        "diagnostics": diag,
        "openscene": openscene,
        "camera_occupancy": camera,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _print_summary(summary, out)
    return summary


def _diagnostics_snapshot(probe: _Probe) -> dict[str, Any]:
    return {"outputs_received": len(probe.outputs), "inputs_seen": probe.inputs_seen}


def _report_pass(
    index: int,
    outputs: list[tuple[float, Any]],
    probe: _Probe,
    vocab_json: dict,
    frame: Any,
    out: Path,
    profile: str,
) -> dict[str, Any]:
    from lidar_ovseg_ros.pointcloud import decode_fields
    from lidar_ovseg_ros.viz import render_bev, render_camera_overlay
    from lidar_ovseg_ros.vocabulary import NO_CLASS_ID, Vocabulary

    vocabulary = Vocabulary.from_dict(
        {
            "name": vocab_json["active"]["name"],
            "classes": [
                {"name": c["name"], "prompts": c["prompts"], "color": c["color"]}
                for c in vocab_json["active"]["classes"]
            ],
        }
    )
    _, last = outputs[-1]
    arrays = decode_fields(last)
    xyz = np.stack([arrays["x"], arrays["y"], arrays["z"]], axis=1)
    labels = np.asarray(arrays["label"])
    bev = out / f"pass{index}_bev.png"
    overlay = out / f"pass{index}_cam_front.png"
    note = " (tiny: UNTRAINED)" if profile == "tiny" else ""
    render_bev(xyz, labels, vocabulary, bev, title=f"pass {index}{note}")
    render_camera_overlay(frame.cameras["CAM_FRONT"], xyz, labels, vocabulary, overlay)
    counts = {
        vocabulary.names[i]: int((labels == i).sum())
        for i in range(len(vocabulary))
        if (labels == i).any()
    }
    return {
        "vocabulary": vocabulary.names,
        "labeled_clouds": len(outputs),
        "points_per_cloud": len(labels),
        "no_class_points": int((labels == NO_CLASS_ID).sum()),
        "class_counts": counts,
        "end_to_end_latency_ms": _percentiles(probe.latencies_ms(outputs)),
        "images": [str(bev), str(overlay)],
    }


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    print("\n=== lidar_ovseg_ros demo ===")
    print(f"profile: {summary['profile']} ({summary['profile_reason']})")
    if not summary["labels_meaningful"]:
        print("labels: NOT meaningful (untrained built-in tiny models)")
    for p in summary["passes"]:
        lat = p["end_to_end_latency_ms"]
        print(
            f"pass: vocabulary {p['vocabulary'][:6]}{'...' if len(p['vocabulary']) > 6 else ''}: "
            f"{p['labeled_clouds']} labeled clouds of {p['points_per_cloud']} points; "
            f"latency median {lat.get('median', float('nan')):.0f} ms, "
            f"p90 {lat.get('p90', float('nan')):.0f} ms"
        )
        for image in p["images"]:
            print(f"  image: {image}")
    proc = summary["processing_time_ms"]
    if proc:
        print(f"node processing time: median {proc['median']:.0f} ms, p90 {proc['p90']:.0f} ms")
    osc = summary.get("openscene")
    if osc:
        lat = osc["end_to_end_latency_ms"]
        print(
            f"OpenScene ({osc['profile']}): {osc['labeled_clouds']} labeled clouds, latency median "
            f"{lat.get('median', float('nan')):.0f} ms; grounding '{osc['query']}' on the points"
        )
        for image in osc["images"]:
            print(f"  image: {image}")
    cam = summary.get("camera_occupancy")
    if cam:
        lat = cam["end_to_end_latency_ms"]
        print(
            f"camera occupancy ({cam['profile']}): {cam['voxel_maps']} voxel maps, "
            f"{cam['occupied_voxels']} occupied voxels, latency median "
            f"{lat.get('median', float('nan')):.0f} ms; grounding '{cam['query']}'"
        )
        for image in cam["images"]:
            print(f"  image: {image}")
    print(f"recorded outputs: {summary['recorded_bag']}")
    print(f"summary: {out / 'summary.json'}")
    if summary["profile"] == "tiny" or (cam and cam["profile"] == "tiny"):
        print(
            "\nThis was the tiny built-in profile (untrained). For the real demo (IGLOSS + "
            "POP-3D weights, the paper's prototype images), run:\n"
            f"  {real_demo_command()}"
        )


def _openscene_stage(
    opts: DemoOptions, out: Path, bag_path: Path, context: Any, executor: Any
) -> dict[str, Any]:
    """lidar_ovseg_node with `method openscene` (renamed, on its own input topic) and a runtime
    `query`: labeled points and the free-text heat map over the LiDAR points, as PNGs."""
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2

    from lidar_ovseg_ros.bags.rclpy_tools import BagPlayer, PlayOptions
    from lidar_ovseg_ros.pointcloud import decode_fields
    from lidar_ovseg_ros.viz import render_bev, render_heat_bev
    from lidar_ovseg_ros.vocabulary import load_vocabulary

    cached = _cached("openscene-nuscenes-openseg") and _model_available(
        "openai/clip-vit-large-patch14-336"
    )
    profile = "full" if cached else "tiny"
    if profile == "tiny":
        print(
            "[demo] OpenScene stage: tiny built-in profile (untrained MinkUNet, tiny CLIP text "
            "model): labels and heat map are NOT meaningful; `lidar-ovseg weights fetch --all-for "
            "openscene` makes them real",
            flush=True,
        )
    name, topic = "lidar_openscene_node", "/lidar/points_openscene"
    cmd = [
        sys.executable,
        "-m",
        "lidar_ovseg_ros.nodes.lidar_ovseg_node",
        "--ros-args",
        "-r",
        f"__node:={name}",
        "-r",
        f"~/input/points:={topic}",
        "-p",
        "method:=openscene",
        "-p",
        f"profile:={profile}",
        "-p",
        "vocabulary_file:=nuscenes",
        "-p",
        "input_reliability:=reliable",
        "-p",
        f"query:={opts.lidar_query}",
        "-p",
        f"device:={opts.device}",
    ]
    log = (out / "openscene_node.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    probe = Node("demo_openscene_probe", context=context)
    rel = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    labeled: list[tuple[float, Any]] = []
    grounding: list[Any] = []
    sent: dict[tuple[int, int], float] = {}
    probe.create_subscription(
        PointCloud2,
        topic,
        lambda m: sent.setdefault((m.header.stamp.sec, m.header.stamp.nanosec), time.monotonic()),
        rel,
    )
    probe.create_subscription(
        PointCloud2, f"/{name}/output/points", lambda m: labeled.append((time.monotonic(), m)), rel
    )
    probe.create_subscription(PointCloud2, f"/{name}/output/grounding", grounding.append, rel)
    executor.add_node(probe)
    try:
        player = BagPlayer(
            bag_path,
            PlayOptions(
                topics=["/lidar/points"],
                remap={"/lidar/points": topic},
                wait_for_subscribers=2,
                wait_timeout=opts.startup_timeout,
            ),
            node_name="demo_openscene_player",
            context=context,
        )
        executor.add_node(player)
        print(f"[demo] OpenScene stage: replaying {opts.sweeps} sweeps ...", flush=True)
        player.start()
        player.wait(timeout=opts.startup_timeout + opts.sweeps / opts.rate_hz)
        _wait(lambda: bool(labeled) and bool(grounding), 300, "waiting for OpenScene output", proc)
        time.sleep(2.0)  # let the last frame come back
        executor.remove_node(player)
        player.destroy_node()
        latencies = [
            (t - sent[(m.header.stamp.sec, m.header.stamp.nanosec)]) * 1e3
            for t, m in labeled
            if (m.header.stamp.sec, m.header.stamp.nanosec) in sent
        ]
        cloud = decode_fields(labeled[-1][1])
        xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=1)
        heat = decode_fields(grounding[-1])
        heat_xyz = np.stack([heat["x"], heat["y"], heat["z"]], axis=1)
        note = " (tiny: UNTRAINED)" if profile == "tiny" else ""
        labels_png, heat_png = out / "openscene_bev.png", out / "lidar_grounding_bev.png"
        render_bev(
            xyz,
            np.asarray(cloud["label"]),
            load_vocabulary("nuscenes"),
            labels_png,
            title=f"OpenScene{note}",
        )
        render_heat_bev(heat_xyz, heat["score"], heat_png, title=f"'{opts.lidar_query}'{note}")
        return {
            "profile": profile,
            "labeled_clouds": len(labeled),
            "query": opts.lidar_query,
            "end_to_end_latency_ms": _percentiles(latencies),
            "images": [str(labels_png), str(heat_png)],
        }
    finally:
        executor.remove_node(probe)
        probe.destroy_node()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


def _camera_stage(
    opts: DemoOptions, out: Path, bag_path: Path, context: Any, executor: Any
) -> dict[str, Any]:
    """camera_occupancy_node on the bag's cameras: voxel map and grounding PNGs, latency."""
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, PointCloud2

    from lidar_ovseg_ros.bags import read_bag_info
    from lidar_ovseg_ros.bags.rclpy_tools import BagPlayer, PlayOptions
    from lidar_ovseg_ros.pointcloud import decode_fields
    from lidar_ovseg_ros.viz import render_bev, render_heat_bev
    from lidar_ovseg_ros.vocabulary import load_vocabulary

    cached = _cached("pop3d") and _model_available("openai/clip-vit-base-patch16")
    profile = "full" if opts.pop3d_weights or cached else "tiny"
    if profile == "tiny":
        print(
            "[demo] camera stage: POP-3D tiny built-in profile (untrained): the voxel map is NOT "
            "meaningful; give --pop3d-weights pop3d_weights.pth for real occupancy",
            flush=True,
        )
    cmd = [
        sys.executable,
        "-m",
        "lidar_ovseg_ros.nodes.camera_occupancy_node",
        "--ros-args",
        "-p",
        f"profile:={profile}",
        "-p",
        "calibration_file:=nuscenes",
        "-p",
        "input_reliability:=reliable",
        "-p",
        f"query:={opts.query}",
        "-p",
        "wait:=2.0",
    ]
    if opts.pop3d_weights:
        cmd += ["-p", f"weights:={opts.pop3d_weights}"]
    if profile == "full":  # without --pop3d-weights: the cached pop3d weights
        cmd += ["-p", f"device:={opts.device}"]
    log = (out / "camera_node.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    probe = Node("demo_camera_probe", context=context)
    rel = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    lock = threading.Lock()
    arrivals: dict[tuple[int, int], float] = {}
    maps: list[tuple[float, Any]] = []
    grounding: list[Any] = []

    def on_image(msg: Any) -> None:
        with lock:
            arrivals[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = time.monotonic()

    cameras = sorted(t for t in read_bag_info(bag_path).topics if t.endswith("/compressed"))
    for topic in cameras:
        probe.create_subscription(CompressedImage, topic, on_image, rel)
    probe.create_subscription(
        PointCloud2,
        "/camera_occupancy_node/output/voxel_points",
        lambda m: maps.append((time.monotonic(), m)),
        rel,
    )
    probe.create_subscription(
        PointCloud2, "/camera_occupancy_node/output/grounding", grounding.append, rel
    )
    executor.add_node(probe)
    vocabulary = load_vocabulary("nuscenes")
    try:
        topics = [t for t in read_bag_info(bag_path).topics if t.startswith("/cameras/")]
        player = BagPlayer(
            bag_path,
            PlayOptions(topics=topics, wait_for_subscribers=2 * len(cameras), wait_timeout=300),
            node_name="demo_camera_player",
            context=context,
        )
        executor.add_node(player)
        print(f"[demo] camera stage: replaying {len(cameras)} cameras ...", flush=True)
        player.start()
        player.wait(timeout=opts.sweeps / opts.rate_hz + 300)
        _wait(lambda: bool(maps) and bool(grounding), 300, "waiting for voxel maps", proc)
        time.sleep(3.0)  # let the last set come back
        executor.remove_node(player)
        player.destroy_node()
        with lock:
            latencies = [
                (t - arrivals[(m.header.stamp.sec, m.header.stamp.nanosec)]) * 1e3
                for t, m in maps
                if (m.header.stamp.sec, m.header.stamp.nanosec) in arrivals
            ]
        arrays = decode_fields(maps[-1][1])
        centers = np.stack([arrays["x"], arrays["y"], arrays["z"]], axis=1)
        labels = np.asarray(arrays["label"])
        heat = decode_fields(grounding[-1])
        heat_xyz = np.stack([heat["x"], heat["y"], heat["z"]], axis=1)
        voxel = float(np.min(np.diff(np.unique(centers[:, 0])))) if len(centers) > 1 else 1.0
        size = max(1, round(voxel / 0.2))
        note = " (tiny: UNTRAINED)" if profile == "tiny" else ""
        occ_png, heat_png = out / "occupancy_bev.png", out / "grounding_bev.png"
        render_bev(centers, labels, vocabulary, occ_png, 52.0, 0.2, size, title=f"POP-3D{note}")
        render_heat_bev(
            heat_xyz, heat["score"], heat_png, 52.0, 0.2, size, title=f"'{opts.query}'{note}"
        )
        return {
            "profile": profile,
            "voxel_maps": len(maps),
            "occupied_voxels": len(labels),
            "query": opts.query,
            "end_to_end_latency_ms": _percentiles(latencies),
            "images": [str(occ_png), str(heat_png)],
        }
    finally:
        executor.remove_node(probe)
        probe.destroy_node()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
