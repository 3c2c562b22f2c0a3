"""`lidar-ovseg segment|eval --method openscene` (tiny profile) on the bundled nuScenes frame, and
OpenScene's official nuScenes protocol: 43 detailed names mapped to the 16 classes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lidar_ovseg_ros.cli import main
from lidar_ovseg_ros.segmentation.openscene import (
    MAPPING_NUSCENES_DETAILS,
    NUSCENES_LABELS_16,
    NUSCENES_LABELS_DETAILS,
    OpenSceneConfig,
    OpenSceneSegmenter,
    map_nuscenes_details,
    nuscenes_details_vocabulary,
)
from lidar_ovseg_ros.vocabulary import NO_CLASS_ID, load_preset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["--method", "openscene", "--profile", "tiny", "--device", "cpu"]
VERSION = "v1.0-mini"


def test_label_constants_are_the_official_ones():
    assert len(NUSCENES_LABELS_DETAILS) == len(MAPPING_NUSCENES_DETAILS) == 43
    assert len(NUSCENES_LABELS_16) == 16 and sorted(set(MAPPING_NUSCENES_DETAILS)) == list(
        range(16)
    )
    pairs = dict(zip(NUSCENES_LABELS_DETAILS, MAPPING_NUSCENES_DETAILS, strict=True))
    assert pairs["pedestrian"] == pairs["person"] == 6
    assert pairs["excavator"] == 4 and pairs["curb"] == 11 and pairs["woods"] == 15
    assert pairs["road"] == 10 and pairs["sod"] == 13 and pairs["awning"] == 14
    # Same order as the nuScenes-lidarseg classes of this package.
    assert len(load_preset("nuscenes")) == 16
    assert map_nuscenes_details(np.array([1, 42, NO_CLASS_ID])).tolist() == [0, 15, NO_CLASS_ID]


def test_segment_with_openscene_and_a_query(tmp_path, capsys):
    labels, heat, summary = tmp_path / "l.npy", tmp_path / "h.npy", tmp_path / "s.json"
    code = main(
        ["segment", "--frame", "nuscenes", *TINY, "--vocabulary", "nuscenes",
         "--out-labels", str(labels), "--query", "a parked car", "--out-grounding", str(heat),
         "--json", str(summary)]
    )  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "method openscene" in text and "query 'a parked car'" in text
    got = np.load(labels)
    assert got.shape == (34688,) and got.max() < 16
    assert np.load(heat).shape == (34688,)
    assert json.loads(summary.read_text())["untrained"] is True


def test_full_profile_without_the_checkpoint_is_a_one_line_error(capsys):
    code = main(["segment", "--frame", "nuscenes", "--method", "openscene", "--profile", "full"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nuscenes_openseg.pth.tar" in err[0]
    assert "lidar-ovseg weights fetch openscene-nuscenes-openseg" in err[0]


def test_query_with_igloss_is_a_one_line_error(capsys):
    code = main(["segment", "--frame", "nuscenes", "--profile", "tiny", "--query", "a car"])
    assert code == 2
    assert "text-aligned" in capsys.readouterr().err


@pytest.fixture(scope="module")
def nuscenes_root(tmp_path_factory, nuscenes_frame):
    """A nuScenes-lidarseg tree with the bundled keyframe and hand-made labels."""
    root = tmp_path_factory.mktemp("nuscenes_lidarseg")
    (root / VERSION).mkdir()
    (root / "samples" / "LIDAR_TOP").mkdir(parents=True)
    lidar_file = "samples/LIDAR_TOP/frame.pcd.bin"
    nuscenes_frame.points.astype(np.float32).tofile(root / lidar_file)
    z = nuscenes_frame.points[:, 2]
    raw = np.where(z < -1.5, 24, np.where(z > 1.0, 28, 30)).astype(np.uint8)
    raw[::40] = 0  # noise: ignored
    (root / "lidarseg" / VERSION).mkdir(parents=True)
    raw.tofile(root / "lidarseg" / VERSION / "sd_lidarseg.bin")
    tables = {
        "sample_data.json": [
            {"token": "sd", "sample_token": "s0", "filename": lidar_file, "is_key_frame": True}
        ],
        "lidarseg.json": [
            {"token": "ls", "sample_data_token": "sd",
             "filename": f"lidarseg/{VERSION}/sd_lidarseg.bin"}
        ],
    }  # fmt: skip
    for name, rows in tables.items():
        (root / VERSION / name).write_text(json.dumps(rows))
    return root


def test_eval_nuscenes_uses_the_43_names_mapped_to_16(nuscenes_root, tmp_path, capsys):
    from lidar_ovseg_ros.segmentation.datasets import open_dataset
    from lidar_ovseg_ros.segmentation.metrics import ConfusionMatrix

    out = tmp_path / "eval.json"
    code = main(["eval", str(nuscenes_root), "--dataset", "nuscenes", *TINY, "--json", str(out)])
    assert code == 0
    assert "43 detailed names -> 16 classes" in capsys.readouterr().out
    got = json.loads(out.read_text())
    assert got["method"] == "openscene" and got["scans"] == 1 and got["tta_repeats"] == 0

    # The same figure from the core pieces.
    scan = open_dataset("nuscenes", nuscenes_root)[0]
    seg = OpenSceneSegmenter.from_config(OpenSceneConfig(profile="tiny", device="cpu"))
    seg.set_vocabulary(nuscenes_details_vocabulary())
    pred = map_nuscenes_details(seg.segment(scan.points).labels)
    cm = ConfusionMatrix(16, class_names=load_preset("nuscenes").names)
    cm.update(scan.labels, pred)
    assert got["miou"] == pytest.approx(cm.miou())
    assert np.array(got["confusion_matrix"]).sum() == (scan.labels != 255).sum()
