"""nuScenes keyframes for POP-3D's evaluation: the labelled LiDAR sweep plus its six cameras.

Read from the official nuScenes layout (no devkit needed): `NuScenesLidarsegDataset` gives the
labelled sweeps (labels 0..15 in the 16 evaluation classes, 255 ignored); the camera images of the
same sample come from `sample_data.json` (key frames), their channels from
`calibrated_sensor.json` / `sensor.json`. The LiDAR -> camera transform chains the poses as the
official info files do (mmdet3d `obtain_sensor2top`, from which POP-3D's `lidar2img` is built):
LiDAR -> ego at the LiDAR time -> global -> ego at the camera time -> camera, i.e.
`lidar2cam = inv(cam2ego) @ inv(ego2global_cam) @ ego2global_lidar @ lidar2ego`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lidar_ovseg_ros.models.pop3d import NUSCENES_CAMERAS
from lidar_ovseg_ros.occupancy.pipeline import CameraCalibration
from lidar_ovseg_ros.segmentation.datasets import DatasetError, NuScenesLidarsegDataset


def pose_matrix(translation: Sequence[float], rotation: Sequence[float]) -> np.ndarray:
    """4x4 from a nuScenes record: translation [x, y, z], rotation quaternion [w, x, y, z]."""
    q = np.asarray(rotation, np.float64)
    if q.shape != (4,) or not np.isfinite(q).all() or np.linalg.norm(q) == 0:
        raise DatasetError(f"bad rotation quaternion {list(rotation)}")
    w, x, y, z = q / np.linalg.norm(q)
    m = np.eye(4)
    m[:3, :3] = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    m[:3, 3] = np.asarray(translation, np.float64)
    return m


@dataclass(frozen=True)
class CameraSample:
    """One keyframe: points [N, 4] (x, y, z, intensity; LiDAR frame), labels [N] uint8 (0..15,
    255 ignored), and per camera the image file and its calibration."""

    name: str
    points: np.ndarray
    labels: np.ndarray
    images: dict[str, Path]
    calibrations: dict[str, CameraCalibration]

    def load_images(self) -> dict[str, np.ndarray]:
        from PIL import Image

        out = {}
        for cam, path in self.images.items():
            with Image.open(path) as img:
                out[cam] = np.asarray(img.convert("RGB"))
        return out


class NuScenesCameraDataset:
    """Labelled nuScenes keyframes with the six surround cameras (see the module docstring)."""

    def __init__(
        self,
        root: str | Path,
        version: str | None = None,
        scenes: Sequence[str] | None = None,
        camera_names: Sequence[str] = NUSCENES_CAMERAS,
    ) -> None:
        self.lidar = NuScenesLidarsegDataset(root, version=version, scenes=scenes)
        self.root = self.lidar.root
        self.camera_names = tuple(camera_names)
        meta = self.root / self.lidar.version
        load = NuScenesLidarsegDataset._load
        sensors = {s["token"]: s["channel"] for s in load(meta / "sensor.json")}
        calibrated = {c["token"]: c for c in load(meta / "calibrated_sensor.json")}
        self._ego = {e["token"]: e for e in load(meta / "ego_pose.json")}
        self._calibrated = calibrated
        self._sample_data = {}
        by_sample: dict[str, dict[str, dict]] = {}
        for sd in load(meta / "sample_data.json"):
            self._sample_data[sd["token"]] = sd
            if not sd.get("is_key_frame", True):
                continue
            cal = calibrated.get(sd["calibrated_sensor_token"])
            if cal is None:
                raise DatasetError(f"sample_data {sd['token']}: unknown calibrated_sensor")
            channel = sensors.get(cal["sensor_token"])
            if channel in self.camera_names:
                by_sample.setdefault(sd["sample_token"], {})[channel] = sd
        self._cameras = by_sample

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.lidar.class_names)

    def __len__(self) -> int:
        return len(self.lidar)

    def _pose(self, sd: dict) -> tuple[np.ndarray, np.ndarray]:
        """(sensor2ego, ego2global) of one sample_data record."""
        cal = self._calibrated[sd["calibrated_sensor_token"]]
        ego = self._ego.get(sd["ego_pose_token"])
        if ego is None:
            raise DatasetError(f"sample_data {sd['token']}: unknown ego_pose")
        return (
            pose_matrix(cal["translation"], cal["rotation"]),
            pose_matrix(ego["translation"], ego["rotation"]),
        )

    def __getitem__(self, index: int) -> CameraSample:
        scan = self.lidar[index]
        lidar_sd = self._sample_data[scan.name]
        cams = self._cameras.get(lidar_sd["sample_token"], {})
        missing = [c for c in self.camera_names if c not in cams]
        if missing:
            raise DatasetError(f"sample {lidar_sd['sample_token']}: no key frame of {missing}")
        lidar2ego, ego2global_l = self._pose(lidar_sd)
        images, calibrations = {}, {}
        for name in self.camera_names:
            sd = cams[name]
            cam2ego, ego2global_c = self._pose(sd)
            K = np.asarray(self._calibrated[sd["calibrated_sensor_token"]]["camera_intrinsic"])
            lidar2cam = (
                np.linalg.inv(cam2ego) @ np.linalg.inv(ego2global_c) @ ego2global_l @ lidar2ego
            )
            images[name] = self.root / sd["filename"]
            calibrations[name] = CameraCalibration(np.asarray(K, np.float64), lidar2cam)
        return CameraSample(scan.name, scan.points, scan.labels, images, calibrations)

    def __iter__(self) -> Iterator[CameraSample]:
        for i in range(len(self)):
            yield self[i]
