"""The bundled real sensor frames (nuScenes and KITTI) with their calibration, behind one loader.

Tests, benchmarks and the demo all read the frames through here, so the file formats described in
`data/frames/README.md` are parsed in exactly one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

FRAMES_DIR = Path(__file__).resolve().parent / "data" / "frames"
FRAME_NAMES = ("nuscenes", "kitti")


@dataclass(frozen=True)
class CameraView:
    """One calibrated camera: `lidar2img = [K 0; 0 1] @ lidar2cam` maps LiDAR points to pixels."""

    name: str
    image_path: Path
    K: np.ndarray  # [3, 3] intrinsics
    lidar2cam: np.ndarray  # [4, 4] LiDAR frame -> camera optical frame (z forward)
    lidar2img: np.ndarray  # [4, 4] LiDAR frame -> homogeneous pixels
    width: int
    height: int
    cam2ego: np.ndarray | None = None
    timestamp: float | None = None

    def load_image(self) -> np.ndarray:
        """[H, W, 3] uint8 RGB."""
        from PIL import Image

        with Image.open(self.image_path) as img:
            return np.asarray(img.convert("RGB"))

    def project(self, xyz: np.ndarray, min_depth: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates [N, 2] of LiDAR points and a mask of those in front and inside."""
        xyz = np.asarray(xyz, dtype=np.float64)[:, :3]
        hom = np.concatenate([xyz, np.ones((len(xyz), 1))], axis=1) @ self.lidar2img.T
        depth = hom[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = hom[:, :2] / depth[:, None]
        inside = (
            (depth > min_depth)
            & (uv[:, 0] >= 0)
            & (uv[:, 0] < self.width)
            & (uv[:, 1] >= 0)
            & (uv[:, 1] < self.height)
        )
        return uv.astype(np.float32), inside


@dataclass(frozen=True)
class Box3D:
    """An annotated box in the LiDAR frame: centre, size (l, w, h), yaw about z, and class."""

    label: str
    center: np.ndarray
    size: np.ndarray
    yaw: float
    num_lidar_pts: int | None = None  # as annotated (keyframe sweep)

    def contains(self, xyz: np.ndarray) -> np.ndarray:
        d = np.asarray(xyz, dtype=np.float64)[:, :3] - self.center
        c, s = np.cos(-self.yaw), np.sin(-self.yaw)
        local_x = c * d[:, 0] - s * d[:, 1]
        local_y = s * d[:, 0] + c * d[:, 1]
        half = self.size / 2
        return (
            (np.abs(local_x) <= half[0])
            & (np.abs(local_y) <= half[1])
            & (np.abs(d[:, 2]) <= half[2])
        )


@dataclass(frozen=True)
class Frame:
    """A LiDAR sweep (float32 [N, C] with `fields`) and the cameras calibrated against it."""

    name: str
    sensor: str  # intensity convention: 'nuscenes' (0-255) or 'semantickitti' (0-1)
    frame_id: str
    points: np.ndarray
    fields: tuple[str, ...]
    cameras: dict[str, CameraView]
    timestamp: float | None = None
    boxes: tuple[Box3D, ...] = field(default_factory=tuple)
    lidar2ego: np.ndarray | None = None  # [4, 4] the sensor's mounting on the vehicle

    @cached_property
    def xyz(self) -> np.ndarray:
        return self.points[:, :3]

    @cached_property
    def intensity(self) -> np.ndarray:
        return self.points[:, 3]


def _mat(value: list) -> np.ndarray:
    return np.asarray(value, dtype=np.float64)


def _read_points(path: Path, fields: list[str]) -> np.ndarray:
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size % len(fields):
        raise ValueError(f"{path}: {raw.size} floats is not a multiple of {len(fields)} fields")
    return raw.reshape(-1, len(fields))


def load_nuscenes_frame(root: Path | None = None) -> Frame:
    """nuScenes keyframe: 32-beam sweep (x, y, z, intensity 0-255, ring) and 6 cameras."""
    root = Path(root) if root else FRAMES_DIR / "nuscenes_frame"
    calib = json.loads((root / "calib.json").read_text())
    lidar = calib["lidar"]
    points = _read_points(root / lidar["file"], lidar["fields"])
    cameras = {}
    for name, cam in calib["cameras"].items():
        K = _mat(cam["K"])
        lidar2cam = _mat(cam["lidar2cam"])
        viewpad = np.eye(4)
        viewpad[:3, :3] = K
        from PIL import Image

        with Image.open(root / cam["image"]) as img:
            width, height = img.size
        cameras[name] = CameraView(
            name=name,
            image_path=root / cam["image"],
            K=K,
            lidar2cam=lidar2cam,
            lidar2img=viewpad @ lidar2cam,
            width=width,
            height=height,
            cam2ego=_mat(cam["cam2ego"]),
            timestamp=cam.get("timestamp"),
        )
    boxes = ()
    if (root / "boxes.json").is_file():
        boxes = tuple(
            Box3D(
                label=b["label"],
                center=_mat(b["box_lidar_xyz_lwh_yaw"][:3]),
                size=_mat(b["box_lidar_xyz_lwh_yaw"][3:6]),
                yaw=float(b["box_lidar_xyz_lwh_yaw"][6]),
                num_lidar_pts=b.get("num_lidar_pts"),
            )
            for b in json.loads((root / "boxes.json").read_text())
        )
    return Frame(
        name="nuscenes",
        sensor="nuscenes",
        frame_id=lidar.get("frame", "LIDAR_TOP"),
        points=points,
        fields=tuple(lidar["fields"]),
        cameras=cameras,
        timestamp=lidar.get("timestamp"),
        boxes=boxes,
        lidar2ego=_mat(lidar["lidar2ego"]) if "lidar2ego" in lidar else None,
    )


def load_kitti_frame(root: Path | None = None) -> Frame:
    """KITTI object frame 000008: 64-beam points in the camera's view (x, y, z, reflectance 0-1)."""
    root = Path(root) if root else FRAMES_DIR / "kitti_frame"
    calib = json.loads((root / "calib.json").read_text())
    lidar = calib["lidar"]
    points = _read_points(root / lidar["file"], lidar["fields"])
    cameras = {}
    for name, cam in calib["cameras"].items():
        P = _mat(cam["P"])
        from PIL import Image

        with Image.open(root / cam["image"]) as img:
            width, height = img.size
        K = P[:3, :3].copy()
        lidar2img = _mat(cam["lidar2img"])
        # KITTI's P2 = K [I | t] carries camera 2's offset from the rectified camera 0, so the
        # camera-2 optical frame is inv([K 0; 0 1]) @ lidar2img; then lidar2img = K @ lidar2cam.
        viewpad = np.eye(4)
        viewpad[:3, :3] = K
        cameras[name] = CameraView(
            name=name,
            image_path=root / cam["image"],
            K=K,
            lidar2cam=np.linalg.inv(viewpad) @ lidar2img,
            lidar2img=lidar2img,
            width=width,
            height=height,
        )
    return Frame(
        name="kitti",
        sensor="semantickitti",
        frame_id=lidar.get("frame", "velodyne"),
        points=points,
        fields=tuple(lidar["fields"]),
        cameras=cameras,
    )


def load_frame(name: str) -> Frame:
    """A bundled frame by name: 'nuscenes' or 'kitti'."""
    if name == "nuscenes":
        return load_nuscenes_frame()
    if name == "kitti":
        return load_kitti_frame()
    raise ValueError(f"unknown frame '{name}'; bundled frames: {list(FRAME_NAMES)}")
