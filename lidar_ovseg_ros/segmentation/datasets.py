"""Readers for labelled LiDAR datasets (SemanticKITTI, nuScenes-lidarseg), official label mappings.

Both yield `LabelledScan`s: points float32 [N, 4] (x, y, z, intensity in the sensor's own units) and
labels uint8 [N] in the evaluation classes, 0..K-1 in the order of the bundled vocabulary presets,
`IGNORE_INDEX` (255) for points that are not evaluated. The mappings are the ones used by the
official evaluations (and by valeoai/WaffleIron / ScaLR / IGLOSS):

- SemanticKITTI: `labels/NNNNNN.label` is uint32 per point, the semantic id in the lower 16 bits
  (the upper 16 bits are the instance id); `learning_map` of the official `semantic-kitti.yaml`
  maps it to 0..19 where 0 is "unlabeled"; we subtract 1 so the 19 classes are 0..18 and
  unlabeled becomes 255.
- nuScenes-lidarseg: `lidarseg/<version>/<token>_lidarseg.bin` is uint8 per point, an index into
  the 32 fine categories (`<version>/category.json`, field `index`); the devkit's
  `LidarsegClassMapper` merges them by name into 16 classes + ignore.

Layouts (the official ones):

    SemanticKITTI:  ROOT[/dataset]/sequences/NN/velodyne/NNNNNN.bin   float32 x, y, z, reflectance
                                             /labels/NNNNNN.label     uint32
    nuScenes:       ROOT/<version>/lidarseg.json, sample_data.json  (version e.g. v1.0-mini)
                    ROOT/<version>/category.json, sample.json, scene.json  (optional)
                    ROOT/samples/LIDAR_TOP/*.pcd.bin     float32 x, y, z, intensity, ring
                    ROOT/lidarseg/<version>/<token>_lidarseg.bin   uint8
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lidar_ovseg_ros.segmentation.metrics import IGNORE_INDEX

__all__ = [
    "DATASET_KINDS",
    "NUSCENES_CATEGORIES",
    "NUSCENES_CLASSES",
    "NUSCENES_FINE_TO_COARSE",
    "SEMANTICKITTI_CLASSES",
    "SEMANTICKITTI_LEARNING_MAP",
    "DatasetError",
    "DatasetNotFoundError",
    "LabelledScan",
    "NuScenesLidarsegDataset",
    "SemanticKittiDataset",
    "map_semantickitti_labels",
    "nuscenes_label_lut",
    "open_dataset",
    "semantickitti_label_lut",
]

DATASET_KINDS = ("semantickitti", "nuscenes")


class DatasetError(ValueError):
    """A dataset folder or file that does not have the expected format."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset folder or file that does not exist; the message names the path."""


# --- SemanticKITTI ----------------------------------------------------------------------------

SEMANTICKITTI_CLASSES = (
    "car",
    "bicycle",
    "motorcycle",
    "truck",
    "other-vehicle",
    "person",
    "bicyclist",
    "motorcyclist",
    "road",
    "parking",
    "sidewalk",
    "other-ground",
    "building",
    "fence",
    "vegetation",
    "trunk",
    "terrain",
    "pole",
    "traffic-sign",
)

SEMANTICKITTI_LEARNING_MAP = {
    # raw semantic id -> learning id (0 = unlabeled, 1..19 = the classes above)
    0: 0,  # unlabeled
    1: 0,  # outlier
    10: 1,  # car
    11: 2,  # bicycle
    13: 5,  # bus -> other-vehicle
    15: 3,  # motorcycle
    16: 5,  # on-rails -> other-vehicle
    18: 4,  # truck
    20: 5,  # other-vehicle
    30: 6,  # person
    31: 7,  # bicyclist
    32: 8,  # motorcyclist
    40: 9,  # road
    44: 10,  # parking
    48: 11,  # sidewalk
    49: 12,  # other-ground
    50: 13,  # building
    51: 14,  # fence
    52: 0,  # other-structure -> unlabeled
    60: 9,  # lane-marking -> road
    70: 15,  # vegetation
    71: 16,  # trunk
    72: 17,  # terrain
    80: 18,  # pole
    81: 19,  # traffic-sign
    99: 0,  # other-object -> unlabeled
    252: 1,  # moving-car -> car
    253: 7,  # moving-bicyclist -> bicyclist
    254: 6,  # moving-person -> person
    255: 8,  # moving-motorcyclist -> motorcyclist
    256: 5,  # moving-on-rails -> other-vehicle
    257: 5,  # moving-bus -> other-vehicle
    258: 4,  # moving-truck -> truck
    259: 5,  # moving-other-vehicle -> other-vehicle
}


def semantickitti_label_lut() -> np.ndarray:
    """[65536] int16: raw semantic id -> 0..18, 255 for unlabeled, -1 for ids not in the map."""
    lut = np.full(1 << 16, -1, dtype=np.int16)
    for raw, learn in SEMANTICKITTI_LEARNING_MAP.items():
        lut[raw] = learn - 1 if learn > 0 else IGNORE_INDEX
    return lut


_KITTI_LUT = semantickitti_label_lut()


def map_semantickitti_labels(raw: np.ndarray, where: str = "labels") -> np.ndarray:
    """uint32 `.label` values -> uint8 evaluation labels (0..18, 255 ignore)."""
    semantic = (np.asarray(raw, dtype=np.uint32) & 0xFFFF).astype(np.int64)
    mapped = _KITTI_LUT[semantic]
    if (mapped < 0).any():
        bad = sorted(set(semantic[mapped < 0].tolist()))[:5]
        raise DatasetError(f"{where}: semantic ids {bad} are not in the SemanticKITTI learning map")
    return mapped.astype(np.uint8)


# --- nuScenes-lidarseg ------------------------------------------------------------------------

NUSCENES_CLASSES = (
    "barrier",
    "bicycle",
    "bus",
    "car",
    "construction_vehicle",
    "motorcycle",
    "pedestrian",
    "traffic_cone",
    "trailer",
    "truck",
    "driveable_surface",
    "other_flat",
    "sidewalk",
    "terrain",
    "manmade",
    "vegetation",
)

NUSCENES_CATEGORIES = (
    # The 32 lidarseg categories in their v1.0 index order (used when category.json is absent).
    "noise",
    "animal",
    "human.pedestrian.adult",
    "human.pedestrian.child",
    "human.pedestrian.construction_worker",
    "human.pedestrian.personal_mobility",
    "human.pedestrian.police_officer",
    "human.pedestrian.stroller",
    "human.pedestrian.wheelchair",
    "movable_object.barrier",
    "movable_object.debris",
    "movable_object.pushable_pullable",
    "movable_object.trafficcone",
    "static_object.bicycle_rack",
    "vehicle.bicycle",
    "vehicle.bus.bendy",
    "vehicle.bus.rigid",
    "vehicle.car",
    "vehicle.construction",
    "vehicle.emergency.ambulance",
    "vehicle.emergency.police",
    "vehicle.motorcycle",
    "vehicle.trailer",
    "vehicle.truck",
    "flat.driveable_surface",
    "flat.other",
    "flat.sidewalk",
    "flat.terrain",
    "static.manmade",
    "static.other",
    "static.vegetation",
    "vehicle.ego",
)

NUSCENES_FINE_TO_COARSE = {
    # The devkit's lidarseg challenge merge (nuscenes.eval.lidarseg.utils); None = ignore.
    "noise": None,
    "animal": None,
    "human.pedestrian.adult": "pedestrian",
    "human.pedestrian.child": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian",
    "human.pedestrian.personal_mobility": None,
    "human.pedestrian.police_officer": "pedestrian",
    "human.pedestrian.stroller": None,
    "human.pedestrian.wheelchair": None,
    "movable_object.barrier": "barrier",
    "movable_object.debris": None,
    "movable_object.pushable_pullable": None,
    "movable_object.trafficcone": "traffic_cone",
    "static_object.bicycle_rack": None,
    "vehicle.bicycle": "bicycle",
    "vehicle.bus.bendy": "bus",
    "vehicle.bus.rigid": "bus",
    "vehicle.car": "car",
    "vehicle.construction": "construction_vehicle",
    "vehicle.emergency.ambulance": None,
    "vehicle.emergency.police": None,
    "vehicle.motorcycle": "motorcycle",
    "vehicle.trailer": "trailer",
    "vehicle.truck": "truck",
    "flat.driveable_surface": "driveable_surface",
    "flat.other": "other_flat",
    "flat.sidewalk": "sidewalk",
    "flat.terrain": "terrain",
    "static.manmade": "manmade",
    "static.other": None,
    "static.vegetation": "vegetation",
    "vehicle.ego": None,
}


def nuscenes_label_lut(name_to_index: dict[str, int] | None = None) -> np.ndarray:
    """[256] uint8: lidarseg fine index -> 0..15, 255 for ignored or unknown indices."""
    if name_to_index is None:
        name_to_index = {name: i for i, name in enumerate(NUSCENES_CATEGORIES)}
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for name, index in name_to_index.items():
        if name not in NUSCENES_FINE_TO_COARSE:
            raise DatasetError(f"unknown nuScenes lidarseg category '{name}'")
        coarse = NUSCENES_FINE_TO_COARSE[name]
        if coarse is not None:
            lut[int(index)] = NUSCENES_CLASSES.index(coarse)
    return lut


# --- readers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelledScan:
    """One labelled sweep: points float32 [N, 4] and uint8 labels [N] (255 = not evaluated)."""

    name: str
    points: np.ndarray
    labels: np.ndarray


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DatasetNotFoundError(f"{what} not found: {path}")
    return path


def _read_bin(path: Path, columns: int) -> np.ndarray:
    raw = np.fromfile(_require(path, "point file"), dtype=np.float32)
    if raw.size % columns:
        raise DatasetError(f"{path}: {raw.size} floats is not a multiple of {columns} columns")
    return raw.reshape(-1, columns)


class SemanticKittiDataset:
    """SemanticKITTI scans with labels, sorted by sequence then scan number.

    `root` is the folder holding `sequences/` (or `dataset/sequences/`), or `sequences/` itself.
    `sequences` picks some (e.g. ["08"], the official validation split); by default every
    sequence that has a `labels/` folder is read (the test sequences have none).
    """

    sensor = "semantickitti"
    class_names = SEMANTICKITTI_CLASSES

    def __init__(self, root: str | Path, sequences: Sequence[str | int] | None = None) -> None:
        root = _require(Path(root).expanduser(), "SemanticKITTI folder")
        for candidate in (root / "sequences", root / "dataset" / "sequences", root):
            if candidate.name == "sequences" and candidate.is_dir():
                seq_root = candidate
                break
        else:
            raise DatasetError(f"{root}: no 'sequences' folder (expected ROOT/sequences/NN/...)")
        if sequences is None:
            names = sorted(
                p.name for p in seq_root.iterdir() if p.is_dir() and (p / "labels").is_dir()
            )
            if not names:
                raise DatasetError(f"{seq_root}: no sequence has a 'labels' folder")
        else:
            names = [str(s).zfill(2) for s in sequences]
        self.files: list[tuple[Path, Path]] = []
        for name in names:
            velodyne = _require(seq_root / name / "velodyne", "SemanticKITTI velodyne folder")
            labels = seq_root / name / "labels"
            for scan in sorted(velodyne.glob("*.bin")):
                self.files.append((scan, labels / f"{scan.stem}.label"))
        if not self.files:
            raise DatasetError(f"{seq_root}: no scans in sequences {names}")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> LabelledScan:
        scan, label_file = self.files[index]
        points = _read_bin(scan, 4)
        raw = np.fromfile(_require(label_file, "SemanticKITTI label file"), dtype=np.uint32)
        if raw.size != len(points):
            raise DatasetError(f"{label_file}: {raw.size} labels for {len(points)} points")
        labels = map_semantickitti_labels(raw, where=str(label_file))
        name = f"{scan.parent.parent.name}/{scan.stem}"
        return LabelledScan(name=name, points=points, labels=labels)

    def __iter__(self) -> Iterator[LabelledScan]:
        for i in range(len(self)):
            yield self[i]


class NuScenesLidarsegDataset:
    """nuScenes-lidarseg keyframes with labels, in the order of `lidarseg.json`.

    `version` is the metadata folder (e.g. "v1.0-mini"); by default the only `v1.0-*` folder of
    `root` that has a `lidarseg.json`. `scenes` keeps the samples of those scene names (e.g. the
    devkit's val split), which needs `sample.json` and `scene.json`.
    """

    sensor = "nuscenes"
    class_names = NUSCENES_CLASSES

    def __init__(
        self,
        root: str | Path,
        version: str | None = None,
        scenes: Sequence[str] | None = None,
    ) -> None:
        self.root = _require(Path(root).expanduser(), "nuScenes folder")
        if version is None:
            found = sorted(p.parent.name for p in self.root.glob("v1.0-*/lidarseg.json"))
            if len(found) != 1:
                raise DatasetError(
                    f"{self.root}: expected one v1.0-*/lidarseg.json, found {found or 'none'}; "
                    "pick one with version="
                )
            version = found[0]
        meta = _require(self.root / version, "nuScenes metadata folder")
        self.version = version
        lidarseg = self._load(meta / "lidarseg.json")
        sample_data = {sd["token"]: sd for sd in self._load(meta / "sample_data.json")}
        if (meta / "category.json").is_file():
            categories = self._load(meta / "category.json")
            mapping = {c["name"]: int(c["index"]) for c in categories if "index" in c}
        else:
            mapping = None
        self.lut = nuscenes_label_lut(mapping)
        keep_samples = None
        if scenes is not None:
            scene_tokens = {
                s["token"] for s in self._load(meta / "scene.json") if s["name"] in set(scenes)
            }
            keep_samples = {
                s["token"]
                for s in self._load(meta / "sample.json")
                if s["scene_token"] in scene_tokens
            }
        self.files: list[tuple[str, Path, Path]] = []
        for entry in lidarseg:
            sd = sample_data.get(entry["sample_data_token"])
            if sd is None:
                raise DatasetError(
                    f"{meta / 'lidarseg.json'}: sample_data_token {entry['sample_data_token']} "
                    "is not in sample_data.json"
                )
            if keep_samples is not None and sd.get("sample_token") not in keep_samples:
                continue
            self.files.append(
                (
                    entry["sample_data_token"],
                    self.root / sd["filename"],
                    self.root / entry["filename"],
                )
            )
        if not self.files:
            raise DatasetError(f"{meta}: no labelled keyframes selected")

    @staticmethod
    def _load(path: Path) -> list[dict]:
        try:
            data = json.loads(_require(path, "nuScenes table").read_text())
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: not valid JSON: {exc}") from exc
        if not isinstance(data, list):
            raise DatasetError(f"{path}: expected a JSON list of records")
        return data

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> LabelledScan:
        token, scan, label_file = self.files[index]
        points = _read_bin(scan, 5)[:, :4]
        raw = np.fromfile(_require(label_file, "nuScenes lidarseg file"), dtype=np.uint8)
        if raw.size != len(points):
            raise DatasetError(f"{label_file}: {raw.size} labels for {len(points)} points")
        return LabelledScan(name=token, points=np.ascontiguousarray(points), labels=self.lut[raw])

    def __iter__(self) -> Iterator[LabelledScan]:
        for i in range(len(self)):
            yield self[i]


def open_dataset(
    kind: str, root: str | Path, **kwargs
) -> SemanticKittiDataset | NuScenesLidarsegDataset:
    """'semantickitti' or 'nuscenes' reader; extra keyword arguments go to its constructor."""
    if kind == "semantickitti":
        return SemanticKittiDataset(root, **kwargs)
    if kind == "nuscenes":
        return NuScenesLidarsegDataset(root, **kwargs)
    raise DatasetError(f"unknown dataset '{kind}'; choose one of {list(DATASET_KINDS)}")
