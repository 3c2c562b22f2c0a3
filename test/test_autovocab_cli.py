"""`lidar-ovseg autovocab` on the bundled nuScenes frame (tiny models): captions, tags,
vocabulary printed; BEV picture, vocabulary YAML and JSON written; clean one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from lidar_ovseg_ros.cli import main
from lidar_ovseg_ros.vocabulary import Vocabulary

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_autovocab_on_the_bundled_frame_with_cameras(tmp_path, capsys):
    bev = tmp_path / "bev.png"
    out_json = tmp_path / "auto.json"
    out_vocab = tmp_path / "vocab.yaml"
    code = main(
        [
            "autovocab",
            "--frame",
            "nuscenes",
            "--base-vocabulary",
            "nuscenes",
            "--bev",
            str(bev),
            "--bev-range",
            "20",
            "--json",
            str(out_json),
            "--out-vocabulary",
            str(out_vocab),
        ]
    )
    text = capsys.readouterr().out
    assert code == 0, text
    assert "6 camera images" in text and "camera/CAM_FRONT" in text and "lidar/sector_0" in text
    assert "tags: " in text and "TPSS " in text
    doc = json.loads(out_json.read_text())
    assert doc["untrained"] is True
    assert len(doc["lidar_sectors"]) == 12
    names = doc["proposal"]["vocabulary"]
    base = Vocabulary.from_yaml(out_vocab)
    assert base.names == names
    from lidar_ovseg_ros.vocabulary import load_preset

    preset = load_preset("nuscenes").names
    assert names[: len(preset)] == preset and len(names) > len(preset)
    assert -1.0 <= doc["tpss"] <= 1.0
    assert sum(doc["counts"].values()) > 0
    with Image.open(bev) as img:
        assert img.size[1] == 400 and np.asarray(img).std() > 0


def test_autovocab_lidar_only_scan_file(tmp_path, nuscenes_frame, capsys):
    scan = tmp_path / "scan.npy"
    np.save(scan, nuscenes_frame.points[:, :4])
    args = ["autovocab", str(scan), "--no-images", "--tagger", "llm"]
    assert main([*args, "--base-vocabulary", "nuscenes"]) == 0
    text = capsys.readouterr().out
    assert "0 camera images" in text and "camera/" not in text


def test_autovocab_errors_are_one_line(tmp_path, capsys):
    assert main(["autovocab"]) == 2
    assert "give a SCAN file" in capsys.readouterr().err
    assert main(["autovocab", "--frame", "nuscenes", "--profile", "full"]) == 2
    assert "smap_checkpoint is required" in capsys.readouterr().err
    assert main(["autovocab", "--frame", "nuscenes", "--image", "CAM_FRONT"]) == 2
    assert "NAME=PATH" in capsys.readouterr().err
    missing = tmp_path / "nope.jpg"
    assert main(["autovocab", "--frame", "nuscenes", "--image", f"A={missing}"]) == 2
    assert "image not found" in capsys.readouterr().err
