"""`lidar-ovseg` commands on the bundled frames with the tiny profile, and their error handling."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from lidar_ovseg_ros.cli import build_parser, main
from lidar_ovseg_ros.frames import FRAMES_DIR
from lidar_ovseg_ros.viz import bev_size
from lidar_ovseg_ros.vocabulary import NO_CLASS_ID

TINY = ["--profile", "tiny", "--images-per-class", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def vocab_file(workdir):
    path = workdir / "street.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "street",
                "classes": [
                    {"name": "car", "prompts": ["a car"], "color": [255, 0, 0]},
                    {"name": "road", "prompts": ["a road"], "color": [0, 0, 255]},
                    {"name": "tree", "prompts": ["a tree"], "color": [0, 200, 0]},
                ],
            }
        )
    )
    return path


def _run(*args):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "lidar_ovseg_ros.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_build_prototypes_fills_the_cache(workdir, vocab_file):
    """The real entry point in a child process; the cache it fills serves `segment` later."""
    cache = workdir / "cache"
    proc = _run("build-prototypes", "--vocabulary", vocab_file, "--cache-dir", cache, *TINY)
    assert proc.returncode == 0, proc.stderr
    assert "UNTRAINED" in proc.stderr
    assert "prototypes 'street'" in proc.stderr  # the progress bar
    assert "3 classes" in proc.stdout and str(cache) in proc.stdout
    assert len(list((cache / "features").glob("*.npy"))) >= 3


def test_segment_bundled_nuscenes_frame(workdir, vocab_file, capsys, caplog):
    out = workdir / "nus"
    out.mkdir()
    code = main(
        [
            "segment",
            "--frame",
            "nuscenes",
            "--vocabulary",
            str(vocab_file),
            "--cache-dir",
            str(workdir / "cache"),
            *TINY,
            "--out-labels",
            str(out / "labels.npy"),
            "--out-scores",
            str(out / "scores.npy"),
            "--bev",
            str(out / "bev.png"),
            "--overlay",
            str(out / "overlay.png"),
            "--json",
            str(out / "summary.json"),
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert any("UNTRAINED" in r.getMessage() for r in caplog.records)
    assert "34688 points" in captured.out and "vocabulary 'street'" in captured.out
    labels = np.load(out / "labels.npy")
    scores = np.load(out / "scores.npy")
    assert labels.dtype == np.uint16 and labels.shape == (34688,)
    assert scores.dtype == np.float32 and scores.shape == (34688,)
    assert ((labels < 3) | (labels == NO_CLASS_ID)).all() and (labels < 3).mean() > 0.95
    summary = json.loads((out / "summary.json").read_text())
    assert sum(summary["counts"].values()) + summary["no_class"] == 34688
    assert summary["untrained"] is True
    with Image.open(out / "bev.png") as bev:
        assert bev.size == bev_size()
        colors = {
            tuple(c) for c in np.unique(np.asarray(bev.convert("RGB")).reshape(-1, 3), axis=0)
        }
    palette = [(255, 0, 0), (0, 0, 255), (0, 200, 0)]  # the colours of street.yaml
    present = {palette[i] for i in np.unique(labels[labels < 3])}
    assert present and present <= colors
    with Image.open(out / "overlay.png") as overlay:
        assert overlay.size == (1600, 900)


def test_segment_kitti_scan_file_with_calibration(workdir, vocab_file, kitti_frame, capsys):
    scan = workdir / "000008.bin"
    kitti_frame.points.tofile(scan)
    out = workdir / "kitti_labels.npy"
    overlay = workdir / "kitti_overlay.png"
    code = main(
        [
            "segment",
            str(scan),
            "--sensor",
            "semantickitti",
            "--calib",
            str(FRAMES_DIR / "kitti_frame" / "calib.json"),
            "--vocabulary",
            str(vocab_file),
            "--cache-dir",
            str(workdir / "cache"),
            *TINY,
            "--classifier",
            "nearest",
            "--out-labels",
            str(out),
            "--overlay",
            str(overlay),
        ]
    )
    assert code == 0
    assert "17238 points, sensor semantickitti" in capsys.readouterr().out
    assert np.load(out).shape == (17238,)
    with Image.open(overlay) as img:
        assert img.size == (1242, 375)


def _fake_kitti(root, frame):
    """Two scans of sequence 08 with hand-made raw labels (road below 0 m, car above)."""
    seq = root / "sequences" / "08"
    (seq / "velodyne").mkdir(parents=True)
    (seq / "labels").mkdir()
    for i in range(2):
        pts = frame.points[i * 3000 : i * 3000 + 4000]
        raw = np.where(pts[:, 2] < -1.0, 40, 10).astype(np.uint32)
        raw[::17] = 0  # unlabeled
        pts.tofile(seq / "velodyne" / f"{i:06d}.bin")
        raw.tofile(seq / "labels" / f"{i:06d}.label")
    return 2 * 4000 - 2 * len(range(0, 4000, 17))


def test_eval_on_a_small_semantickitti_folder(workdir, kitti_frame, capsys):
    labelled = _fake_kitti(workdir / "skitti", kitti_frame)
    report = workdir / "eval.json"
    code = main(
        [
            "eval",
            "--dataset",
            "semantickitti",
            str(workdir / "skitti"),
            "--sequences",
            "08",
            "--cache-dir",
            str(workdir / "cache"),
            *TINY,
            "--json",
            str(report),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "traffic-sign" in printed and "confusion matrix" in printed
    data = json.loads(report.read_text())
    assert data["scans"] == 2 and data["untrained"] is True
    matrix = np.array(data["confusion_matrix"])
    assert matrix.shape == (19, 20) and matrix.sum() == labelled == data["num_points"]
    assert set(np.flatnonzero(matrix.sum(axis=1))) == {0, 8}  # car and road rows only
    assert len(data["iou"]) == 19


def test_missing_files_are_one_line_errors(workdir):
    missing = workdir / "missing_scan.bin"
    proc = _run("segment", missing, *TINY)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"lidar-ovseg: error: scan file not found: {missing}"]


@pytest.mark.parametrize(
    "args, needle",
    [
        (
            ["segment", "--frame", "nuscenes", "--profile", "full", "--checkpoint", "{d}/ckpt.pth"],
            "{d}/ckpt.pth",
        ),
        (["segment", "--frame", "{d}/no_frame"], "{d}/no_frame/calib.json"),
        (["segment", "--frame", "nuscenes", "--vocabulary", "{d}/none.yaml"], "{d}/none.yaml"),
        (["eval", "--dataset", "nuscenes", "{d}/no_dataset"], "{d}/no_dataset"),
        (["build-prototypes", "--vocabulary", "{d}/v.yaml"], "{d}/v.yaml"),
    ],
)
def test_errors_name_the_path_and_exit_2(workdir, capsys, args, needle):
    d = str(workdir / "absent")
    code = main([a.format(d=d) for a in args] + ["--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("lidar-ovseg: error:")
    assert needle.format(d=d) in err[0]


def test_usage_errors(capsys):
    assert main([]) == 2
    assert main(["segment", "--device", "cpu"]) == 2
    assert "SCAN" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["segment", "--profile", "huge"])
    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"segment", "build-prototypes", "eval"} <= set(commands)


def test_light_commands_start_without_torch():
    """`lidar-ovseg replay` (replay.launch.py player:=lidar_ovseg) imports only its own command:
    no torch (seconds and hundreds of MB) for a bag player."""
    code = (
        "import sys\n"
        "from lidar_ovseg_ros.cli import build_parser\n"
        "for name in ('replay', 'record', 'demo-bag'):\n"
        "    parser = build_parser(name)\n"
        "    assert parser.parse_args([name, 'x', '--topics', 'a'] if name == 'record' "
        "else [name, 'x']).command == name\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "full = build_parser('eval')  # a command whose module has another name: all commands\n"
        "assert {'segment', 'eval', 'replay'} <= set(full._subparsers._group_actions[0].choices)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
