"""A rectified stereo pair + calibration -> VLScene's `StereoInputs`, as the official test
pipeline (`LoadMultiViewImageFromFiles_SemanticKitti`, is_train=False) prepares them.

Both images are resized by `W_in / W` (PIL, bicubic), the bottom `H_in` rows kept and the width
centre-cropped; the resize and crop become `post_rot`/`post_trans`. Pixels are normalised with
ImageNet mean/std in RGB. The projections are the rectified 3x4 `P` of both cameras (ROS
CameraInfo `P`, KITTI `P2`/`P3`): both project points of the left rectified frame, the right
one carries `Tx = -fx * baseline`. `calib = fx * baseline` uses the original-resolution fx, as
the official loader does. `lidar2cam` maps the output grid's frame (x forward, y left, z up,
the official Velodyne frame) to the left rectified camera frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from lidar_ovseg_ros.models.vlscene import StereoInputs, VLSceneConfig

__all__ = [
    "KITTI_BASELINE",
    "OPTICAL_FROM_BODY",
    "StereoCalibration",
    "StereoInputError",
    "prepare_stereo_inputs",
    "reference_lidar2cam",
    "same_image_pair",
    "stereo_baseline",
]

# Body axes (x forward, y left, z up) -> camera optical axes (x right, y down, z forward): the
# pose of a camera at the grid origin looking along +x, used when no pose is given.
OPTICAL_FROM_BODY = np.array(
    [[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)


class StereoInputError(ValueError):
    """A stereo pair or calibration that VLScene cannot use; the message says why."""


def _check_projection(P: np.ndarray, which: str) -> np.ndarray:
    P = np.asarray(P, np.float64)
    if P.size != 12:
        raise StereoInputError(f"{which} projection P has {P.size} numbers, not 12")
    P = P.reshape(3, 4)
    if not np.isfinite(P).all():
        raise StereoInputError(f"{which} projection P is not finite")
    if not (P[0, 0] > 0 and P[1, 1] > 0):
        raise StereoInputError(
            f"{which} projection P has fx={P[0, 0]:g}, fy={P[1, 1]:g}: need a rectified P "
            "(CameraInfo P all zeros means the camera is not calibrated for stereo)"
        )
    return P


def stereo_baseline(P_left: np.ndarray, P_right: np.ndarray) -> float:
    """Baseline in metres from the two projections (the official `dynamic_baseline`)."""
    pl = _check_projection(P_left, "left")
    pr = _check_projection(P_right, "right")
    b = pr[0, 3] / (-pr[0, 0]) - pl[0, 3] / (-pl[0, 0])
    if not (np.isfinite(b) and b > 0):
        raise StereoInputError(
            f"stereo baseline from P is {b:g} m (need > 0): the right camera's P[0,3] must be "
            "-fx * baseline (left-right order swapped, or P of an unrectified camera?)"
        )
    return float(b)


@dataclass(frozen=True)
class StereoCalibration:
    P_left: np.ndarray  # (3, 4) rectified projection of the left camera
    P_right: np.ndarray  # (3, 4) of the right camera (same rectified frame, Tx = -fx * B)
    lidar2cam: np.ndarray  # (4, 4) grid frame -> left rectified camera frame

    def __post_init__(self) -> None:
        T = np.asarray(self.lidar2cam, np.float64)
        if T.shape != (4, 4) or not np.isfinite(T).all():
            raise StereoInputError("lidar2cam must be a finite 4x4 matrix")
        if abs(np.linalg.det(T[:3, :3]) - 1.0) > 1e-3:
            raise StereoInputError("lidar2cam's rotation is not a rotation (det != 1)")

    @property
    def baseline(self) -> float:
        return stereo_baseline(self.P_left, self.P_right)

    @property
    def calib(self) -> float:
        """fx * baseline (original resolution), the official `calib`."""
        return float(np.asarray(self.P_left, np.float64).reshape(3, 4)[0, 0] * self.baseline)


def _augmentation(h: int, w: int, out_h: int, out_w: int) -> tuple[float, tuple, tuple]:
    resize = float(out_w) / float(w)
    new_w, new_h = int(w * resize), int(h * resize)
    crop_h = int(new_h) - out_h  # crop_h range (0, 0): keep the bottom rows
    crop_w = int(max(0, new_w - out_w) / 2)
    return resize, (new_w, new_h), (crop_w, crop_h, crop_w + out_w, crop_h + out_h)


def _image(rgb: np.ndarray, dims: tuple, crop: tuple, cfg: VLSceneConfig) -> torch.Tensor:
    img = Image.fromarray(np.ascontiguousarray(rgb)).resize(dims, Image.BICUBIC).crop(crop)
    x = np.asarray(img, np.float32)
    x = (x - np.asarray(cfg.img_mean, np.float32)) / np.asarray(cfg.img_std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def prepare_stereo_inputs(
    left: np.ndarray, right: np.ndarray, calibration: StereoCalibration, cfg: VLSceneConfig
) -> StereoInputs:
    """(H, W, 3) uint8 RGB left and right images of one size -> a batch of one pair."""
    for name, im in (("left", left), ("right", right)):
        if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
            raise StereoInputError(
                f"{name} image must be HxWx3 uint8 RGB, got {im.shape} {im.dtype}"
            )
    if left.shape != right.shape:
        raise StereoInputError(
            f"left image is {left.shape[1]}x{left.shape[0]}, right {right.shape[1]}x"
            f"{right.shape[0]}: a rectified pair has one size"
        )
    calib = calibration.calib  # checks both projections and the baseline
    h, w = left.shape[:2]
    out_h, out_w = cfg.input_size
    resize, dims, crop = _augmentation(h, w, out_h, out_w)
    images = torch.stack([_image(left, dims, crop, cfg), _image(right, dims, crop, cfg)])
    post_rot = torch.eye(3)
    post_rot[0, 0] = post_rot[1, 1] = resize
    post_tran = torch.tensor([-float(crop[0]), -float(crop[1]), 0.0])
    cam2lidar = torch.from_numpy(np.linalg.inv(np.asarray(calibration.lidar2cam, np.float64)))
    cam2lidar = cam2lidar.float()
    rot, tran = cam2lidar[:3, :3], cam2lidar[:3, 3]
    intrins = torch.stack(
        [
            torch.from_numpy(np.asarray(calibration.P_left, np.float64).reshape(3, 4)).float(),
            torch.from_numpy(np.asarray(calibration.P_right, np.float64).reshape(3, 4)).float(),
        ]
    )
    return StereoInputs(
        images=images[None],
        rots=torch.stack([rot, rot])[None],  # both views: the same (left) rectified frame
        trans=torch.stack([tran, tran])[None],
        intrins=intrins[None],
        post_rots=torch.stack([post_rot, post_rot])[None],
        post_trans=torch.stack([post_tran, post_tran])[None],
        bda=torch.eye(3)[None],
        calib=torch.tensor([calib], dtype=torch.float32),
    )


KITTI_BASELINE = 0.54  # metres between KITTI's colour cameras 2 and 3 (approximately)


def reference_lidar2cam(P: np.ndarray, lidar2cam_optical: np.ndarray) -> np.ndarray:
    """Pose of the frame that `P = K [I | t]` projects from, given the pose of the camera's own
    optical frame (where `P` would be `K [I | 0]`): KITTI's P2 carries camera 2's offset from
    the rectified camera 0, which is the frame the official code lifts in."""
    P = np.asarray(P, np.float64).reshape(-1, 4)[:3]
    t = np.linalg.solve(P[:, :3], P[:, 3])
    shift = np.eye(4)
    shift[:3, 3] = -t
    return shift @ np.asarray(lidar2cam_optical, np.float64)


def same_image_pair(
    frame_camera: Any, baseline: float = KITTI_BASELINE
) -> tuple[np.ndarray, np.ndarray, StereoCalibration]:
    """A stereo input from ONE camera of a bundled frame: the same image as both views, the
    right projection made from the left one with `Tx = -fx * baseline`.

    Caveat: identical views mean zero disparity everywhere, i.e. every pixel "at infinity" for
    the stereo branch; it exercises the whole pipeline on a real image and real calibration,
    but it is not a stereo measurement. Real stereo pairs are the user's."""
    K = np.asarray(frame_camera.K, np.float64)
    rgb = frame_camera.load_image()
    P_left = np.zeros((3, 4))
    P_left[:, :3] = K
    P_right = P_left.copy()
    P_right[0, 3] = -K[0, 0] * baseline
    calib = StereoCalibration(P_left, P_right, np.asarray(frame_camera.lidar2cam, np.float64))
    return rgb, rgb.copy(), calib
