"""`lidar-ovseg eval --pop3d` on a small nuScenes tree made of the bundled keyframe (official
folder layout and tables; cameras posed so the chained transforms give the frame's calibration),
with the tiny profile: voxel and point mIoU, official text embeddings and their comparison."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lidar_ovseg_ros.cli import main
from lidar_ovseg_ros.occupancy.evaluation import FREE_LABEL, PointIoU, VoxelIoU, lidar_ground_truth
from lidar_ovseg_ros.occupancy.nuscenes_cameras import NuScenesCameraDataset, pose_matrix
from lidar_ovseg_ros.occupancy.runtime import build_predictor
from lidar_ovseg_ros.occupancy.text_queries import (
    nuscenes16_vocabulary,
    official_sub_name_table,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VERSION = "v1.0-mini"


def _quaternion(m: np.ndarray) -> list[float]:
    """[w, x, y, z] of a rotation matrix (independent of the code under test)."""
    r = m[:3, :3]
    w = np.sqrt(max(0.0, 1 + np.trace(r))) / 2
    if w > 1e-6:
        x = (r[2, 1] - r[1, 2]) / (4 * w)
        y = (r[0, 2] - r[2, 0]) / (4 * w)
        z = (r[1, 0] - r[0, 1]) / (4 * w)
    else:  # 180-degree rotations: not in this frame's calibration
        raise AssertionError("unexpected rotation")
    return [float(w), float(x), float(y), float(z)]


def _record(token: str, m: np.ndarray, **extra) -> dict:
    return {"token": token, "translation": m[:3, 3].tolist(), "rotation": _quaternion(m), **extra}


@pytest.fixture(scope="module")
def nuscenes_root(tmp_path_factory, nuscenes_frame):
    root = tmp_path_factory.mktemp("nuscenes")
    meta = root / VERSION
    meta.mkdir()
    f = nuscenes_frame
    (root / "samples" / "LIDAR_TOP").mkdir(parents=True)
    lidar_file = "samples/LIDAR_TOP/frame.pcd.bin"
    f.points.astype(np.float32).tofile(root / lidar_file)
    # Raw lidarseg labels (official indices): ground -> 24 driveable_surface, high -> 28 manmade,
    # in front -> 17 car, the rest 30 vegetation; every 50th point 0 (noise, ignored).
    xyz = f.points[:, :3]
    raw = np.full(len(xyz), 30, np.uint8)
    raw[xyz[:, 2] < -1.5] = 24
    raw[xyz[:, 2] > 1.0] = 28
    raw[(np.abs(xyz[:, 1]) < 3) & (xyz[:, 0] > 0) & (xyz[:, 0] < 15) & (xyz[:, 2] >= -1.5)] = 17
    raw[::50] = 0
    (root / "lidarseg" / VERSION).mkdir(parents=True)
    raw.tofile(root / "lidarseg" / VERSION / "lidar_sd_lidarseg.bin")
    ego_l = np.asarray(json.loads((f.cameras["CAM_FRONT"].image_path.parent / "calib.json")
                                  .read_text())["ego2global"])  # fmt: skip
    sensors = [{"token": "s_lidar", "channel": "LIDAR_TOP", "modality": "lidar"}]
    calibrated = [_record("c_lidar", f.lidar2ego, sensor_token="s_lidar", camera_intrinsic=[])]
    egos = [_record("e_lidar", ego_l)]
    sample_data = [
        {"token": "lidar_sd", "sample_token": "sample0", "ego_pose_token": "e_lidar",
         "calibrated_sensor_token": "c_lidar", "filename": lidar_file, "is_key_frame": True},
    ]  # fmt: skip
    for name, cam in f.cameras.items():
        (root / "samples" / name).mkdir(parents=True)
        img = f"samples/{name}/frame.jpg"
        shutil.copy(cam.image_path, root / img)
        # the camera-time ego pose that makes the official chain give the frame's lidar2cam
        ego_c = ego_l @ f.lidar2ego @ np.linalg.inv(cam.lidar2cam) @ np.linalg.inv(cam.cam2ego)
        sensors.append({"token": f"s_{name}", "channel": name, "modality": "camera"})
        calibrated.append(
            _record(f"c_{name}", cam.cam2ego, sensor_token=f"s_{name}",
                    camera_intrinsic=cam.K.tolist())
        )  # fmt: skip
        egos.append(_record(f"e_{name}", ego_c))
        sample_data.append(
            {"token": f"sd_{name}", "sample_token": "sample0", "ego_pose_token": f"e_{name}",
             "calibrated_sensor_token": f"c_{name}", "filename": img, "is_key_frame": True}
        )  # fmt: skip
    tables = {
        "sensor.json": sensors,
        "calibrated_sensor.json": calibrated,
        "ego_pose.json": egos,
        "sample_data.json": sample_data,
        "lidarseg.json": [
            {"token": "ls0", "sample_data_token": "lidar_sd",
             "filename": f"lidarseg/{VERSION}/lidar_sd_lidarseg.bin"}
        ],
    }  # fmt: skip
    for name, rows in tables.items():
        (meta / name).write_text(json.dumps(rows))
    return root


def test_the_dataset_chains_the_poses_like_the_official_info_files(nuscenes_root, nuscenes_frame):
    ds = NuScenesCameraDataset(nuscenes_root, version=VERSION)
    assert len(ds) == 1
    s = ds[0]
    assert s.points.shape == (34_688, 4) and s.labels.shape == (34_688,)
    assert set(np.unique(s.labels)) == {3, 10, 14, 15, 255}  # car, driveable, manmade, veg
    for name, cam in nuscenes_frame.cameras.items():
        # (the frame's matrices are float32-rounded, so the quaternions are not exact)
        np.testing.assert_allclose(s.calibrations[name].lidar2cam, cam.lidar2cam, atol=2e-6)
        np.testing.assert_allclose(s.calibrations[name].K, cam.K)
    expected = np.eye(4)
    expected[:3, 3] = [1, 2, 3]
    expected[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]  # 90 degrees about z
    h = np.sqrt(0.5)
    np.testing.assert_allclose(pose_matrix([1, 2, 3], [h, 0, 0, h]), expected, atol=1e-12)


def test_eval_pop3d_reports_voxel_and_point_miou(nuscenes_root, nuscenes_frame, tmp_path, capsys):
    out = tmp_path / "pop3d.json"
    code = main(
        ["eval", str(nuscenes_root), "--dataset", "nuscenes", "--pop3d", "--profile", "tiny",
         "--device", "cpu", "--json", str(out)]
    )  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "voxel mIoU (16 classes + empty, official val_miou_vox_clip_all)" in text
    assert "point mIoU (LiDAR points labelled from the cameras)" in text
    got = json.loads(out.read_text())
    assert got["score"] == "dot" and got["absent"] == "official" and got["samples"] == 1

    # The same numbers from the core pieces, computed here.
    pred = build_predictor("tiny", seed=0, score="dot")
    pred.set_vocabulary(nuscenes16_vocabulary())
    s = NuScenesCameraDataset(nuscenes_root, version=VERSION)[0]
    res = pred.predict(s.load_images(), s.calibrations, points=s.points[:, :3])
    cfg = pred.config
    gt = lidar_ground_truth(s.points[:, :3], s.labels, cfg.pc_range, cfg.grid_size,
                            ignore_labels=(255,))  # fmt: skip
    vox, pts = VoxelIoU(16), PointIoU(16, ignore_index=255)
    vox.update(res.label_grid(FREE_LABEL), gt)
    pts.update(res.point_labels, s.labels)
    assert got["voxel"]["miou_with_free"] == pytest.approx(vox.compute().miou_with_free)
    assert got["point"]["miou"] == pytest.approx(pts.compute().miou)
    # classes absent from this ground truth (e.g. barrier) score 1 under the official rule
    assert got["voxel"]["iou/barrier"] == 1.0 and got["point"]["iou/barrier"] == 1.0


def test_eval_pop3d_with_official_text_embeddings_reports_the_comparison(
    nuscenes_root, tmp_path, capsys
):
    table = official_sub_name_table()
    g = torch.Generator().manual_seed(4)
    w = F.normalize(torch.randn(len(table), 64, generator=g), dim=-1)  # tiny profile: 64 dims
    torch.save((w.T.half(), [raw for _, raw in table]), tmp_path / "zeroshot_weights.pth")
    out = tmp_path / "pop3d.json"
    code = main(
        ["eval", str(nuscenes_root), "--dataset", "nuscenes", "--pop3d", "--profile", "tiny",
         "--device", "cpu", "--text-embeddings", str(tmp_path / "zeroshot_weights.pth"),
         "--absent", "strict", "--json", str(out)]
    )  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "text embeddings, official file vs project ensemble: 74 sub-names" in text
    got = json.loads(out.read_text())
    assert got["text_embedding_comparison"]["matched"] == 74
    assert got["absent"] == "strict"
    assert np.isnan(got["voxel"]["iou/barrier"]) or got["voxel"]["iou/barrier"] == 0.0
    # a file for another embedding size is refused with the reason
    torch.save((w.T.half()[:32], [raw for _, raw in table]), tmp_path / "bad.pth")
    code = main(
        ["eval", str(nuscenes_root), "--dataset", "nuscenes", "--pop3d", "--profile", "tiny",
         "--device", "cpu", "--text-embeddings", str(tmp_path / "bad.pth")]
    )  # fmt: skip
    assert code != 0
    assert "no 64-dim axis" in capsys.readouterr().err


def test_eval_pop3d_names_an_official_file_that_is_not_cached(nuscenes_root, capsys):
    # the catalog name resolves through the model cache (empty in the tests): one error line
    code = main(
        ["eval", str(nuscenes_root), "--dataset", "nuscenes", "--pop3d", "--profile", "tiny",
         "--device", "cpu", "--text-embeddings", "pop3d-zeroshot"]
    )  # fmt: skip
    assert code == 2
    assert "pop3d-zeroshot" in capsys.readouterr().err
