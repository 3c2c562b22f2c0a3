"""SemanticKITTI and nuScenes-lidarseg readers on small folders in the official layouts."""

import json
import re

import numpy as np
import pytest

from lidar_ovseg_ros.segmentation.datasets import (
    NUSCENES_CATEGORIES,
    NUSCENES_CLASSES,
    SEMANTICKITTI_CLASSES,
    DatasetError,
    DatasetNotFoundError,
    NuScenesLidarsegDataset,
    SemanticKittiDataset,
    map_semantickitti_labels,
    nuscenes_label_lut,
    open_dataset,
)
from lidar_ovseg_ros.segmentation.metrics import IGNORE_INDEX
from lidar_ovseg_ros.vocabulary import load_preset


def test_presets_use_the_evaluation_class_order():
    assert tuple(load_preset("semantickitti").names) == SEMANTICKITTI_CLASSES
    assert tuple(load_preset("nuscenes").names) == NUSCENES_CLASSES


def test_semantickitti_learning_map():
    # raw id (lower 16 bits) -> class; upper 16 bits are the instance id and are dropped
    cases = {
        0: None,  # unlabeled
        1: None,  # outlier
        10: "car",
        252: "car",  # moving-car
        13: "other-vehicle",  # bus
        16: "other-vehicle",  # on-rails
        257: "other-vehicle",  # moving-bus
        258: "truck",  # moving-truck
        253: "bicyclist",
        254: "person",
        255: "motorcyclist",
        40: "road",
        60: "road",  # lane-marking
        52: None,  # other-structure
        99: None,  # other-object
        48: "sidewalk",
        72: "terrain",
        81: "traffic-sign",
    }
    raw = np.array(list(cases), dtype=np.uint32) | (np.arange(len(cases), dtype=np.uint32) << 16)
    mapped = map_semantickitti_labels(raw)
    for value, name in zip(mapped, cases.values()):
        expected = IGNORE_INDEX if name is None else SEMANTICKITTI_CLASSES.index(name)
        assert value == expected, name
    with pytest.raises(DatasetError, match=r"\[7\]"):
        map_semantickitti_labels(np.array([10, 7], dtype=np.uint32))


def test_nuscenes_fine_to_coarse():
    lut = nuscenes_label_lut()
    by_name = {name: lut[i] for i, name in enumerate(NUSCENES_CATEGORIES)}
    assert by_name["human.pedestrian.police_officer"] == NUSCENES_CLASSES.index("pedestrian")
    assert (
        by_name["vehicle.bus.bendy"]
        == by_name["vehicle.bus.rigid"]
        == NUSCENES_CLASSES.index("bus")
    )
    assert by_name["movable_object.trafficcone"] == NUSCENES_CLASSES.index("traffic_cone")
    assert by_name["flat.other"] == NUSCENES_CLASSES.index("other_flat")
    for ignored in ("noise", "animal", "vehicle.emergency.police", "static.other", "vehicle.ego"):
        assert by_name[ignored] == IGNORE_INDEX
    # Every evaluation class is reachable; 12 of the 32 fine classes are ignored.
    assert set(lut[:32]) - {IGNORE_INDEX} == set(range(16))
    assert (lut[:32] == IGNORE_INDEX).sum() == 12


def _write_kitti(root, frame):
    seq = root / "dataset" / "sequences"
    rng = np.random.default_rng(0)
    raw_ids = np.array([0, 10, 40, 48, 50, 70, 72, 80, 252, 254], dtype=np.uint32)
    written = {}
    for name, n in (("08", 2), ("00", 1)):
        (seq / name / "velodyne").mkdir(parents=True)
        (seq / name / "labels").mkdir()
        for i in range(n):
            pts = frame.points[i * 1000 : (i + 1) * 1000 + 37].astype(np.float32)
            raw = raw_ids[rng.integers(0, len(raw_ids), len(pts))]
            raw = raw | (rng.integers(0, 50, len(pts)).astype(np.uint32) << 16)
            pts.tofile(seq / name / "velodyne" / f"{i:06d}.bin")
            raw.tofile(seq / name / "labels" / f"{i:06d}.label")
            written[f"{name}/{i:06d}"] = (pts, raw)
    (seq / "11" / "velodyne").mkdir(parents=True)  # a test sequence: no labels folder
    frame.points[:10].tofile(seq / "11" / "velodyne" / "000000.bin")
    return written


def test_semantickitti_reader(tmp_path, kitti_frame):
    written = _write_kitti(tmp_path, kitti_frame)
    ds = SemanticKittiDataset(tmp_path)
    assert len(ds) == 3  # sequence 11 has no labels and is skipped
    names = [scan.name for scan in ds]
    assert names == ["00/000000", "08/000000", "08/000001"]
    for scan in ds:
        pts, raw = written[scan.name]
        np.testing.assert_array_equal(scan.points, pts)
        assert scan.labels.dtype == np.uint8 and scan.labels.shape == (len(pts),)
        sem = raw & 0xFFFF
        assert (scan.labels[sem == 0] == IGNORE_INDEX).all()
        assert (scan.labels[(sem == 10) | (sem == 252)] == SEMANTICKITTI_CLASSES.index("car")).all()
        assert (scan.labels[sem == 254] == SEMANTICKITTI_CLASSES.index("person")).all()
        assert (scan.labels[sem == 80] == SEMANTICKITTI_CLASSES.index("pole")).all()
    only_val = open_dataset("semantickitti", tmp_path / "dataset" / "sequences", sequences=[8])
    assert [s.name for s in only_val] == ["08/000000", "08/000001"]


def test_semantickitti_missing_files(tmp_path, kitti_frame):
    _write_kitti(tmp_path, kitti_frame)
    with pytest.raises(DatasetNotFoundError, match="nowhere"):
        SemanticKittiDataset(tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError, match="05"):
        SemanticKittiDataset(tmp_path, sequences=["05"])
    (tmp_path / "dataset/sequences/08/labels/000001.label").unlink()
    ds = SemanticKittiDataset(tmp_path, sequences=["08"])
    with pytest.raises(DatasetNotFoundError, match=re.escape("000001.label")):
        ds[1]
    (tmp_path / "dataset/sequences/08/labels/000000.label").write_bytes(b"\0" * 8)
    with pytest.raises(DatasetError, match="2 labels"):
        ds[0]


def _write_nuscenes(root, frame, index_of=None):
    """Two keyframes of two scenes with made-up tokens, in the devkit layout."""
    version = "v1.0-mini"
    meta = root / version
    meta.mkdir(parents=True)
    (root / "samples" / "LIDAR_TOP").mkdir(parents=True)
    (root / "lidarseg" / version).mkdir(parents=True)
    index_of = index_of or {n: i for i, n in enumerate(NUSCENES_CATEGORIES)}
    names = list(index_of)
    lidarseg, sample_data, samples, scenes, truth = [], [], [], [], {}
    for k in range(2):
        pts = frame.points[k * 500 : k * 500 + 2000].astype(np.float32)  # 5 columns
        fine_names = [names[(i * 7 + k) % len(names)] for i in range(len(pts))]
        raw = np.array([index_of[n] for n in fine_names], dtype=np.uint8)
        filename = f"samples/LIDAR_TOP/scan{k}.pcd.bin"
        pts.tofile(root / filename)
        seg_name = f"lidarseg/{version}/ls{k}_lidarseg.bin"
        raw.tofile(root / seg_name)
        sample_data.append(
            {"token": f"sd{k}", "sample_token": f"s{k}", "filename": filename, "is_key_frame": True}
        )
        sample_data.append({"token": f"cam{k}", "sample_token": f"s{k}", "filename": "x.jpg"})
        lidarseg.append({"token": f"ls{k}", "sample_data_token": f"sd{k}", "filename": seg_name})
        samples.append({"token": f"s{k}", "scene_token": f"scene{k}"})
        scenes.append({"token": f"scene{k}", "name": f"scene-000{k}"})
        truth[f"sd{k}"] = (pts, fine_names)
    categories = [{"token": f"c{i}", "name": n, "index": index_of[n]} for i, n in enumerate(names)]
    for table, rows in (
        ("lidarseg", lidarseg),
        ("sample_data", sample_data),
        ("sample", samples),
        ("scene", scenes),
        ("category", categories),
    ):
        (meta / f"{table}.json").write_text(json.dumps(rows))
    return truth


def _coarse(name):
    from lidar_ovseg_ros.segmentation.datasets import NUSCENES_FINE_TO_COARSE

    coarse = NUSCENES_FINE_TO_COARSE[name]
    return IGNORE_INDEX if coarse is None else NUSCENES_CLASSES.index(coarse)


def test_nuscenes_reader(tmp_path, nuscenes_frame):
    truth = _write_nuscenes(tmp_path, nuscenes_frame)
    ds = NuScenesLidarsegDataset(tmp_path)
    assert len(ds) == 2 and ds.version == "v1.0-mini"
    for scan in ds:
        pts, fine = truth[scan.name]
        np.testing.assert_array_equal(scan.points, pts[:, :4])
        np.testing.assert_array_equal(scan.labels, [_coarse(n) for n in fine])
    one_scene = open_dataset("nuscenes", tmp_path, scenes=["scene-0001"])
    assert [s.name for s in one_scene] == ["sd1"]


def test_nuscenes_maps_by_category_name_not_position(tmp_path, nuscenes_frame):
    rng = np.random.default_rng(3)
    shuffled = {n: int(i) for n, i in zip(NUSCENES_CATEGORIES, rng.permutation(32))}
    truth = _write_nuscenes(tmp_path, nuscenes_frame, index_of=shuffled)
    for scan in NuScenesLidarsegDataset(tmp_path, version="v1.0-mini"):
        _, fine = truth[scan.name]
        np.testing.assert_array_equal(scan.labels, [_coarse(n) for n in fine])


def test_nuscenes_errors(tmp_path, nuscenes_frame):
    with pytest.raises(DatasetError, match=re.escape("lidarseg.json")):
        NuScenesLidarsegDataset(tmp_path)
    _write_nuscenes(tmp_path, nuscenes_frame)
    with pytest.raises(DatasetNotFoundError, match=re.escape("v1.0-trainval")):
        NuScenesLidarsegDataset(tmp_path, version="v1.0-trainval")
    (tmp_path / "lidarseg/v1.0-mini/ls1_lidarseg.bin").unlink()
    ds = NuScenesLidarsegDataset(tmp_path)
    with pytest.raises(DatasetNotFoundError, match=re.escape("ls1_lidarseg.bin")):
        ds[1]
    with pytest.raises(DatasetError, match="unknown dataset"):
        open_dataset("waymo", tmp_path)
