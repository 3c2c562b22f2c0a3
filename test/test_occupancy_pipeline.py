"""OccupancyPredictor on the real nuScenes frame with the tiny POP-3D network and a tiny CLIP
text tower (random weights): preprocessing as the official loader, outputs, grounding,
runtime vocabulary changes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lidar_ovseg_ros.models.pop3d import Pop3DConfig, Pop3DNetwork
from lidar_ovseg_ros.occupancy.evaluation import FREE_LABEL
from lidar_ovseg_ros.occupancy.pipeline import (
    STAGES,
    CameraCalibration,
    OccupancyInputError,
    OccupancyPredictor,
    as_calibration,
    preprocess,
)
from lidar_ovseg_ros.occupancy.text_queries import (
    TextQueryEncoder,
    build_tiny_text_model,
    byte_level_clip_tokenizer,
    nuscenes16_vocabulary,
)
from lidar_ovseg_ros.vocabulary import NO_CLASS_ID, load_preset

CFG = Pop3DConfig.tiny()


@pytest.fixture(scope="module")
def text_encoder():
    tok = byte_level_clip_tokenizer()
    model = build_tiny_text_model(tok, CFG.feature_dim, seed=0)
    return TextQueryEncoder(model, tok, model_id="tiny", templates=("a photo of a {}.", "{}"))


@pytest.fixture(scope="module")
def frame_inputs(nuscenes_frame):
    images = {n: c.load_image() for n, c in nuscenes_frame.cameras.items()}
    return images, dict(nuscenes_frame.cameras)


@pytest.fixture(scope="module")
def predictor(text_encoder):
    torch.manual_seed(1)
    net = Pop3DNetwork(CFG)
    # Random weights: make 'occupied' the sign of a random projection of the decoded voxel
    # feature (no bias), so both outcomes occur.
    with torch.no_grad():
        w = torch.randn(CFG.out_dims)
        net.tpv_aggregator.classifier.weight.copy_(torch.stack([w, -w]))
        net.tpv_aggregator.classifier.bias.zero_()
    return OccupancyPredictor(net, text_encoder, vocabulary=nuscenes16_vocabulary())


@pytest.fixture(scope="module")
def result(predictor, frame_inputs):
    return predictor.predict(*frame_inputs)


def test_preprocessing_matches_the_official_loader(frame_inputs):
    # at the official image size: no resize, BGR minus the caffe mean, zero padding to 928
    images, cams = frame_inputs
    imgs, l2i, hw = preprocess(images, cams, CFG.replace(image_size=(900, 1600)))
    assert hw == (928, 1600) and imgs.shape == (1, 6, 3, 928, 1600)
    for i, name in enumerate(CFG.camera_names):
        rgb = images[name].astype(np.float32)
        bgr = rgb[..., ::-1] - np.array([103.530, 116.280, 123.675], np.float32)
        np.testing.assert_allclose(imgs[0, i, :, :900].permute(1, 2, 0).numpy(), bgr, atol=1e-4)
        assert torch.count_nonzero(imgs[0, i, :, 900:]) == 0
        np.testing.assert_allclose(l2i[0, i].numpy(), cams[name].lidar2img, rtol=1e-6, atol=1e-4)


def test_resized_images_get_scaled_projections(predictor, nuscenes_frame, frame_inputs):
    imgs, l2i, hw = predictor.preprocess(*frame_inputs)
    h, w = CFG.image_size
    assert hw == CFG.padded_image_size == (64, 128)
    assert imgs.shape == (1, 6, 3, 64, 128)
    assert torch.count_nonzero(imgs[..., w:]) == 0  # right padding
    pts = nuscenes_frame.xyz
    for i, name in enumerate(CFG.camera_names):
        cam = nuscenes_frame.cameras[name]
        pix, inside = cam.project(pts)
        hom = np.c_[pts, np.ones(len(pts))] @ l2i[0, i].numpy().astype(np.float64).T
        uv = hom[inside, :2] / hom[inside, 2:3]
        np.testing.assert_allclose(uv, pix[inside] * [w / 1600, h / 900], rtol=1e-4, atol=1e-3)


def test_calibration_formats_agree(nuscenes_frame):
    import json

    calib = json.loads((nuscenes_frame.cameras["CAM_FRONT"].image_path.parent / "calib.json")
                       .read_text())  # fmt: skip
    cam = calib["cameras"]["CAM_BACK_LEFT"]
    a = as_calibration(nuscenes_frame.cameras["CAM_BACK_LEFT"], "CAM_BACK_LEFT")
    b = as_calibration({"K": cam["K"], "cam2ego": cam["cam2ego"]}, "x", calib["lidar"]["lidar2ego"])
    c = as_calibration({"K": cam["K"], "lidar2cam": cam["lidar2cam"]}, "x")
    l2e = np.array(calib["lidar"]["lidar2ego"])
    np.testing.assert_allclose(b.lidar2cam, np.linalg.inv(np.array(cam["cam2ego"])) @ l2e)
    # The bundled lidar2cam also compensates ego motion between the LiDAR and camera stamps
    # (as the official info files do); for this camera it is only millimetres.
    np.testing.assert_allclose(b.lidar2cam, a.lidar2cam, atol=0.01)
    np.testing.assert_allclose(c.lidar2img(), a.lidar2img())
    assert isinstance(a, CameraCalibration)
    with pytest.raises(OccupancyInputError, match="camera X: K must"):
        as_calibration({"K": np.eye(2), "lidar2cam": np.eye(4)}, "camera X")
    with pytest.raises(OccupancyInputError, match="no 'lidar2ego'"):
        as_calibration({"K": np.eye(3), "cam2ego": np.eye(4)}, "cam")


def test_prediction_outputs_on_the_real_frame(predictor, result):
    nx, ny, nz = CFG.grid_size
    assert result.occupied.shape == (nx, ny, nz) and result.occupied.dtype == bool
    m = int(result.occupied.sum())
    assert 0 < m < nx * ny * nz  # random weights: some voxels either way
    assert result.num_occupied == m
    assert result.indices.shape == (m, 3) and result.centers.shape == (m, 3)
    assert result.labels.shape == (m,) and result.labels.dtype == np.uint16
    assert result.scores.shape == (m,) and result.scores.dtype == np.float32
    assert result.occupied[tuple(result.indices.T)].all()
    # voxel centres: 6.4 m voxels over [-51.2, 51.2]^2 x [-5, 3]
    vs = np.array(CFG.voxel_size)
    np.testing.assert_allclose(vs, [6.4, 6.4, 2.0])
    expected = np.array(CFG.pc_range[:3]) + (result.indices + 0.5) * vs
    np.testing.assert_allclose(result.centers, expected, rtol=1e-6, atol=1e-5)
    # every occupied voxel labelled with one of the 16 classes (no min_score)
    assert result.labels.max() < 16 and result.class_names[10] == "driveable_surface"
    # labels/scores are the argmax/max of the class scores of the voxel features
    class_scores = predictor.vocabulary.scores(result.features)
    np.testing.assert_array_equal(result.labels, class_scores.argmax(1).numpy())
    np.testing.assert_allclose(result.scores, class_scores.max(1).values.numpy(), atol=1e-6)
    assert np.all(np.abs(result.scores) <= 1 + 1e-6)
    assert set(predictor.timings) >= set(STAGES)
    assert all(v >= 0 for v in predictor.timings.values())


def test_occupancy_and_features_equal_the_dense_network_output(predictor, frame_inputs, result):
    imgs, l2i, hw = predictor.preprocess(*frame_inputs)
    with torch.no_grad():
        occ, feats = predictor.network(imgs, l2i, hw)
    np.testing.assert_array_equal(result.occupied, (occ[0].argmax(-1) == 1).numpy())
    dense = F.normalize(feats[0][torch.from_numpy(result.occupied)], dim=-1)
    torch.testing.assert_close(result.features, dense, rtol=1e-4, atol=1e-5)
    grid = result.label_grid()
    assert (grid == FREE_LABEL).sum() == result.occupied.size - result.num_occupied
    np.testing.assert_array_equal(grid[result.occupied], result.labels)


def test_grounding_heat_map(predictor, result, text_encoder):
    heat = predictor.grounding("a parked white van")
    assert heat.shape == (result.num_occupied,) and heat.dtype == np.float32
    q = F.normalize(text_encoder.encode_query("a parked white van"), dim=-1)
    np.testing.assert_allclose(heat, (result.features @ q).numpy(), rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(heat) <= 1 + 1e-6)
    assert not np.allclose(heat, predictor.grounding("vegetation"))
    np.testing.assert_array_equal(result.grounding("a parked white van"), heat)


def test_vocabulary_changes_without_reloading_the_network(predictor, frame_inputs, result):
    net = predictor.network
    weight = net.tpv_aggregator.classifier_ft.weight
    ptr, before = weight.data_ptr(), weight.detach().clone()
    predictor.set_vocabulary([("car", ["car", "sedan"]), ("road", ["road"]), ("tree", ["tree"])])
    second = predictor.predict(*frame_inputs)
    assert predictor.network is net and weight.data_ptr() == ptr
    assert torch.equal(weight, before)
    np.testing.assert_array_equal(second.occupied, result.occupied)
    assert second.class_names == ("car", "road", "tree") and second.labels.max() < 3
    # a Vocabulary preset works too (prompts become the sub-names)
    preset = load_preset("nuscenes")
    predictor.set_vocabulary(preset)
    assert predictor.vocabulary.class_names == tuple(preset.names)
    # min_score above every score -> no class
    predictor.min_score = 2.0
    third = predictor.predict(*frame_inputs)
    assert np.all(third.labels == NO_CLASS_ID)
    predictor.min_score = None
    predictor.set_vocabulary(nuscenes16_vocabulary())
    assert predictor.text_encoder.stats["vocab_cache_hits"] >= 1


def test_bad_inputs_name_the_problem(predictor, frame_inputs):
    images, cams = frame_inputs
    partial = {k: v for k, v in images.items() if k != "CAM_BACK"}
    with pytest.raises(OccupancyInputError, match="CAM_BACK"):
        predictor.predict(partial, cams)
    with pytest.raises(OccupancyInputError, match="uint8"):
        predictor.predict([images[n].astype(np.float32) for n in CFG.camera_names],
                          [cams[n] for n in CFG.camera_names])  # fmt: skip
    with pytest.raises(OccupancyInputError, match="5 images"):
        predictor.predict(
            [images[n] for n in CFG.camera_names[:5]], [cams[n] for n in CFG.camera_names]
        )
