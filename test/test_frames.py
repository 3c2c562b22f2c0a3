"""The bundled real frames and their calibration."""

import numpy as np

from lidar_ovseg_ros.frames import FRAMES_DIR, load_frame


def test_nuscenes_frame_projects_into_cameras(nuscenes_frame):
    f = nuscenes_frame
    assert f.points.shape == (34688, 5) and f.points.dtype == np.float32
    assert f.fields == ("x", "y", "z", "intensity", "ring")
    assert set(f.cameras) == {
        "CAM_FRONT",
        "CAM_FRONT_LEFT",
        "CAM_FRONT_RIGHT",
        "CAM_BACK",
        "CAM_BACK_LEFT",
        "CAM_BACK_RIGHT",
    }
    front = f.cameras["CAM_FRONT"]
    assert (front.width, front.height) == (1600, 900)
    _, inside = front.project(f.xyz)
    assert 2700 <= inside.sum() <= 3300  # "about 3,000 points land in CAM_FRONT"
    # Every camera sees part of the sweep; together they cover most of it.
    seen = np.zeros(len(f.points), bool)
    for cam in f.cameras.values():
        seen |= cam.project(f.xyz)[1]
    assert seen.mean() > 0.5
    assert f.cameras["CAM_FRONT"].load_image().shape == (900, 1600, 3)


def test_kitti_points_land_inside_the_image(kitti_frame):
    f = kitti_frame
    assert f.points.shape == (17238, 4)
    cam = f.cameras["CAM2"]
    _, inside = cam.project(f.xyz)
    assert (cam.width, cam.height) == (1242, 375)
    assert inside.mean() > 0.99
    viewpad = np.eye(4)
    viewpad[:3, :3] = cam.K
    np.testing.assert_allclose(viewpad @ cam.lidar2cam, cam.lidar2img, atol=1e-6)
    assert cam.load_image().shape == (375, 1242, 3)


def test_boxes_hold_points(nuscenes_frame):
    f = nuscenes_frame
    assert len(f.boxes) > 10 and {"car", "pedestrian", "barrier"} <= {b.label for b in f.boxes}
    counted = np.array([b.contains(f.xyz).sum() for b in f.boxes])
    annotated = np.array([b.num_lidar_pts for b in f.boxes])
    # The annotation counts the same sweep: box geometry (centre, size, yaw) must reproduce it.
    assert np.all(np.abs(counted - annotated) <= np.maximum(5, 0.1 * annotated))
    assert counted.sum() > 900


def test_attribution_is_shipped_and_unknown_frame_is_refused():
    text = (FRAMES_DIR / "README.md").read_text()
    assert "CC BY-NC-SA" in text
    try:
        load_frame("waymo")
    except ValueError as exc:
        assert "waymo" in str(exc)
    else:
        raise AssertionError("unknown frame accepted")
