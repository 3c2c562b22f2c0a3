"""Bird's-eye view and camera overlay PNGs of labelled real frames."""

import numpy as np
import pytest
from PIL import Image

from lidar_ovseg_ros.viz import bev_size, legend_entries, render_bev, render_camera_overlay
from lidar_ovseg_ros.vocabulary import NO_CLASS_COLOR, NO_CLASS_ID, Vocabulary


@pytest.fixture(scope="module")
def vocab():
    return Vocabulary.from_dict(
        {
            "name": "viz-test",
            "classes": [
                {"name": "low", "color": [255, 0, 0]},
                {"name": "mid", "color": [0, 255, 0]},
                {"name": "high", "color": [0, 0, 255]},
                {"name": "unused", "color": [255, 255, 0]},
            ],
        }
    )


def _height_labels(xyz: np.ndarray) -> np.ndarray:
    """Labels by height band (a stand-in for a segmentation), every 10th point without a class."""
    z = xyz[:, 2]
    labels = np.digitize(z, np.quantile(z, [1 / 3, 2 / 3])).astype(np.uint16)
    labels[::10] = NO_CLASS_ID
    return labels


def _colors(img: Image.Image) -> set[tuple[int, int, int]]:
    arr = np.asarray(img.convert("RGB")).reshape(-1, 3)
    return {tuple(int(v) for v in c) for c in np.unique(arr, axis=0)}


def test_bev_png(tmp_path, nuscenes_frame, vocab):
    xyz = nuscenes_frame.xyz
    labels = _height_labels(xyz)
    out = tmp_path / "bev.png"
    img = render_bev(xyz, labels, vocab, out, extent=40.0, resolution=0.2)
    assert out.is_file()
    with Image.open(out) as png:
        assert png.format == "PNG"
        assert png.size == bev_size(40.0, 0.2) == (400 + 240, 400)
        colors = _colors(png)
    assert {(255, 0, 0), (0, 255, 0), (0, 0, 255), NO_CLASS_COLOR} <= colors
    assert (255, 255, 0) not in colors  # absent class: not drawn, not in the legend
    assert [e[0] for e in legend_entries(labels, vocab)] == ["low", "mid", "high", "no class"]
    # A pixel under a point has that point's colour (highest point drawn last).
    arr = np.asarray(img)
    pts = xyz.astype(np.float64)
    within = np.flatnonzero((np.abs(pts[:, :2]) < 39).all(axis=1))
    i = within[np.argmax(pts[within, 2])]
    r = int(np.floor((40.0 - pts[i, 0]) / 0.2))
    c = int(np.floor((40.0 - pts[i, 1]) / 0.2))
    assert tuple(arr[r, c]) == tuple(vocab.colors_for(labels[i : i + 1])[0])


def test_bev_without_legend_and_bad_input(nuscenes_frame, vocab):
    img = render_bev(nuscenes_frame.xyz, _height_labels(nuscenes_frame.xyz), vocab, legend=False)
    assert img.size == bev_size(legend=False) == (1000, 1000)
    with pytest.raises(ValueError, match="labels"):
        render_bev(nuscenes_frame.xyz, np.zeros(3, np.uint16), vocab)


def test_camera_overlay_png(tmp_path, kitti_frame, vocab):
    cam = kitti_frame.cameras["CAM2"]
    xyz = kitti_frame.xyz
    labels = _height_labels(xyz)
    out = tmp_path / "overlay.png"
    img = render_camera_overlay(cam, xyz, labels, vocab, out, point_size=1, legend=False)
    with Image.open(out) as png:
        assert png.size == (cam.width, cam.height) == (1242, 375)
    arr = np.asarray(img)
    original = cam.load_image()
    uv, inside = cam.project(xyz)
    assert inside.sum() > 10000
    # The nearest visible point is drawn last: its pixel has its label colour.
    idx = np.flatnonzero(inside)
    near = idx[np.argmin(np.linalg.norm(xyz[idx], axis=1))]
    u, v = (int(np.floor(t)) for t in uv[near])
    assert tuple(arr[v, u]) == tuple(vocab.colors_for(labels[near : near + 1])[0])
    # Pixels no point lands on keep the camera image.
    hit = np.zeros(arr.shape[:2], bool)
    hit[np.floor(uv[idx, 1]).astype(int), np.floor(uv[idx, 0]).astype(int)] = True
    np.testing.assert_array_equal(arr[~hit], original[~hit])
    assert {(255, 0, 0), (0, 255, 0), (0, 0, 255)} <= _colors(img)


def test_camera_overlay_with_legend(nuscenes_frame, vocab):
    cam = nuscenes_frame.cameras["CAM_FRONT"]
    labels = _height_labels(nuscenes_frame.xyz)
    img = render_camera_overlay(cam, nuscenes_frame.xyz, labels, vocab)
    assert img.size == (1600, 900)
    top_left = np.asarray(img)[5:60, 5:200]
    assert (top_left == 255).all(axis=2).any()  # the white legend box
    with pytest.raises(ValueError, match="1600x900"):
        render_camera_overlay(cam, nuscenes_frame.xyz, labels, vocab, image=np.zeros((10, 10, 3)))


def test_legend_image_has_a_row_and_swatch_per_class():
    from lidar_ovseg_ros.viz import render_legend
    from lidar_ovseg_ros.vocabulary import NO_CLASS_COLOR, load_preset

    vocab = load_preset("nuscenes")
    img = render_legend(vocab, title="nuscenes", counts={3: 120})
    assert img.dtype == np.uint8 and img.shape[2] == 3
    assert img.shape[0] >= 20 * (len(vocab) + 2)
    colours = {tuple(c) for c in img.reshape(-1, 3).tolist()}
    for cls in vocab.classes:
        assert cls.color in colours
    assert NO_CLASS_COLOR in colours


def test_heat_bev_colours_run_from_blue_to_red(tmp_path):
    from lidar_ovseg_ros.viz import heat_colors, render_heat_bev

    heat = np.array([-0.5, 0.0, 0.5])
    colours = heat_colors(heat)
    assert tuple(colours[0]) == (0, 40, 255) and tuple(colours[-1]) == (255, 40, 0)
    xyz = np.array([[10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [-10.0, 0.0, 0.0]])
    img = render_heat_bev(xyz, heat, tmp_path / "heat.png", extent=20, resolution=0.5)
    arr = np.asarray(img)
    # x forward is up: the hottest point (x = -10) is below the centre, the coldest above.
    assert tuple(arr[int((20 - 10) / 0.5), int(20 / 0.5)]) == (0, 40, 255)
    assert tuple(arr[int((20 + 10) / 0.5), int(20 / 0.5)]) == (255, 40, 0)
    assert (tmp_path / "heat.png").is_file()
