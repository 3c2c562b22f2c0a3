"""The ROS-free VLScene pipeline: stereo inputs as the official test loader prepares them,
VLScene's closed set matched to the active vocabulary by CLIP text similarity, and the tiny
predictor on the bundled KITTI frame.

The bundled KITTI frame has only the left colour image: the stereo input here is the SAME image
as both views (zero disparity everywhere: the stereo branch sees every pixel at infinity). It
runs the whole pipeline on a real image and calibration; it is not a stereo measurement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lidar_ovseg_ros.models.vlscene import SEMANTIC_KITTI_CLASSES, VLSceneConfig
from lidar_ovseg_ros.ssc.class_matching import VLSCENE_PROMPTS, ClassMatch
from lidar_ovseg_ros.ssc.runtime import SwitchableVLScene, build_vlscene_predictor
from lidar_ovseg_ros.ssc.stereo_inputs import (
    KITTI_BASELINE,
    OPTICAL_FROM_BODY,
    StereoCalibration,
    StereoInputError,
    prepare_stereo_inputs,
    reference_lidar2cam,
    same_image_pair,
)
from lidar_ovseg_ros.vocabulary import NO_CLASS_ID, Vocabulary

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def predictor():
    return build_vlscene_predictor("tiny", seed=0)


def test_official_resize_crop_and_calibration(kitti_frame) -> None:
    left, right, calib = same_image_pair(kitti_frame.cameras["CAM2"])
    cfg = VLSceneConfig.official()
    inp = prepare_stereo_inputs(left, right, calib, cfg)
    assert inp.images.shape == (1, 2, 3, 384, 1280)
    # 1242x375 -> x1280/1242 -> 1280x386, the bottom 384 rows kept (crop top 2)
    resize = 1280 / 1242
    assert inp.post_rots[0, 0, 0, 0].item() == pytest.approx(resize)
    assert inp.post_trans[0, 0].tolist() == [0.0, -2.0, 0.0]
    fx = kitti_frame.cameras["CAM2"].K[0, 0]
    assert inp.calib.item() == pytest.approx(fx * KITTI_BASELINE, rel=1e-6)
    # normalisation: ImageNet mean/std in RGB
    img = (left[2 + 100, 0].astype(np.float32) - cfg.img_mean) / cfg.img_std
    assert np.allclose(inp.images[0, 0, :, 100, 0].numpy(), img, atol=0.05)
    # cam -> LiDAR of the left view is the inverse of lidar2cam
    cam2lidar = np.linalg.inv(kitti_frame.cameras["CAM2"].lidar2cam)
    assert np.allclose(inp.rots[0, 0].numpy(), cam2lidar[:3, :3], atol=1e-6)


def test_bad_pairs_are_refused_with_reasons() -> None:
    cfg = VLSceneConfig.tiny()
    img = np.zeros((64, 256, 3), np.uint8)
    P = np.array([[100.0, 0, 128, 0], [0, 100.0, 32, 0], [0, 0, 1, 0]])
    Pr = P.copy()
    Pr[0, 3] = -100.0 * 0.5
    ok = StereoCalibration(P, Pr, OPTICAL_FROM_BODY)
    assert ok.baseline == pytest.approx(0.5)
    with pytest.raises(StereoInputError, match="one size"):
        prepare_stereo_inputs(img, np.zeros((64, 128, 3), np.uint8), ok, cfg)
    with pytest.raises(StereoInputError, match="baseline"):
        prepare_stereo_inputs(img, img, StereoCalibration(Pr, P, OPTICAL_FROM_BODY), cfg)
    with pytest.raises(StereoInputError, match="rectified P"):
        prepare_stereo_inputs(img, img, StereoCalibration(np.zeros((3, 4)), Pr, np.eye(4)), cfg)
    with pytest.raises(StereoInputError, match="not a rotation"):
        StereoCalibration(P, Pr, np.diag([2.0, 1.0, 1.0, 1.0]))


def test_reference_frame_of_an_offset_projection() -> None:
    K = np.array([[700.0, 0, 600], [0, 700.0, 180], [0, 0, 1]])
    t = np.array([0.06, -0.001, 0.003])
    P = np.hstack([K, (K @ t)[:, None]])
    X_ref = np.array([1.0, 2.0, 10.0, 1.0])
    lidar2optical = np.eye(4)
    lidar2optical[:3, 3] = [0.1, 0.2, 0.3]
    # a LiDAR point whose optical-frame coords are X_opt = X_ref + t
    X_lidar = np.linalg.inv(lidar2optical) @ np.r_[X_ref[:3] + t, 1.0]
    ref = reference_lidar2cam(P, lidar2optical)
    assert np.allclose(ref @ X_lidar, X_ref)


def test_class_matching_by_text_similarity(predictor) -> None:
    names = ["road", "car", "kangaroo"]
    vocab = Vocabulary.from_names(names)
    match = predictor.match(vocab)
    assert isinstance(match, ClassMatch)
    assert match.similarity.shape == (20, 3)
    assert np.isneginf(match.similarity[0]).all()  # empty space is never a class
    # identical prompts have cosine 1 whatever the text model: "road" and "car" map exactly
    road = SEMANTIC_KITTI_CLASSES.index("road")
    car = SEMANTIC_KITTI_CLASSES.index("car")
    assert match.similarity[road, 0] == pytest.approx(1.0, abs=1e-5)
    lut = match.lookup(0.999)
    assert lut[road] == 0 and lut[car] == 1 and lut[0] == NO_CLASS_ID
    # everything else is below a cosine of 0.999 with the tiny random text model: no class
    others = [i for i in range(1, 20) if i not in (road, car)]
    assert (lut[others] == NO_CLASS_ID).all()
    # a threshold of -1 maps every VLScene class to its nearest active class
    assert (match.lookup(-1.0)[1:] != NO_CLASS_ID).all()
    table = match.table(0.999)
    assert table["road"] == "road" and table["fence"] is None
    assert set(table) == set(VLSCENE_PROMPTS)


def test_tiny_predictor_on_the_kitti_frame(kitti_frame, predictor) -> None:
    left, right, calib = same_image_pair(kitti_frame.cameras["CAM2"])
    model = SwitchableVLScene(predictor)
    result, active = model.predict(left, right, calib, 0.9)
    assert active is None and (result.labels == NO_CLASS_ID).all()  # no vocabulary yet
    model.activate(model.prepare_vocabulary(Vocabulary.from_names(["car", "road", "building"])))
    result, active = model.predict(left, right, calib, 0.999)
    cfg = predictor.cfg
    assert active is not None and result.num_occupied > 0
    assert result.centers.dtype == np.float32 and result.centers.shape == (result.num_occupied, 3)
    lo, hi = np.asarray(cfg.point_cloud_range[:3]), np.asarray(cfg.point_cloud_range[3:])
    assert (result.centers > lo).all() and (result.centers < hi).all()
    assert ((result.scores > 0) & (result.scores <= 1)).all()
    assert (result.vlscene_labels > 0).all()
    lut = active.match.lookup(0.999)
    assert np.array_equal(result.labels, lut[result.vlscene_labels])
    # centres on the official voxel-centre lattice
    vs = np.asarray(result.voxel_size)
    frac = (result.centers - lo) / vs - 0.5
    assert np.allclose(frac, np.round(frac), atol=1e-3)
    # deterministic: the same pair gives the same scene
    again, _ = model.predict(left, right, calib, 0.999)
    assert np.array_equal(again.labels, result.labels)
    assert torch.get_num_threads() == 1


def test_full_profile_names_the_missing_checkpoint_and_finds_a_fetched_one(tmp_path, monkeypatch):
    from lidar_ovseg_ros.cli import main as cli_main
    from lidar_ovseg_ros.models.checkpoints import CheckpointNotFoundError
    from lidar_ovseg_ros.weights import resolve_model_file

    monkeypatch.setenv("LIDAR_OVSEG_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CheckpointNotFoundError, match="vlscene"):
        build_vlscene_predictor("full")
    # the manual entry: a file downloaded by hand is installed and then resolved by name
    downloaded = tmp_path / "epoch_30.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}}, downloaded)
    assert cli_main(["weights", "fetch", "vlscene", "--file", str(downloaded)]) == 0
    path = resolve_model_file(None, "vlscene")
    assert path.is_file() and path.name == "vlscene.pth"
