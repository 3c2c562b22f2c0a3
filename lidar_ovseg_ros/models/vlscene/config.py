"""VLScene's inference network, described once (official `projects/configs/occupancy/
semantickitti/vlscene.py` plus the constants hard-coded in its modules).

`VLSceneConfig.official()` is the released SemanticKITTI model; `VLSceneConfig.tiny()` keeps
every module and op order with small sizes, for tests. Grid bounds, `dbound` and class names
are the official ones; the LSS grid is the 256x256x32 output grid down-sampled by 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "OFFICIAL_REPVIT_M2_3",
    "SEMANTIC_KITTI_CLASSES",
    "VLSceneConfig",
]

# 20 classes, index 0 is "unlabeled" (= empty space in the completed scene).
SEMANTIC_KITTI_CLASSES: tuple[str, ...] = (
    "unlabeled",
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


def _repvit_m2_3() -> tuple[tuple[int, int, int, int, int, int], ...]:
    # (k, t, c, SE, HS, s) exactly as the official config lists them (54 blocks).
    rows = [(3, 2, 80, 1 - i % 2, 0, 1) for i in range(6)] + [(3, 2, 80, 0, 0, 1)]
    rows += [(3, 2, 160, 0, 0, 2)] + [(3, 2, 160, i % 2, 0, 1) for i in range(1, 7)]
    rows += [(3, 2, 160, 0, 0, 1)]
    rows += [(3, 2, 320, 0, 1, 2)] + [(3, 2, 320, i % 2, 1, 1) for i in range(1, 35)]
    rows += [(3, 2, 320, 0, 1, 1)]
    rows += [(3, 2, 640, 0, 1, 2), (3, 2, 640, 1, 1, 1), (3, 2, 640, 0, 1, 1)]
    return tuple(rows)


OFFICIAL_REPVIT_M2_3 = _repvit_m2_3()


@dataclass(frozen=True)
class VLSceneConfig:
    """Sizes of every part of the network. Defaults are the official SemanticKITTI model."""

    name: str = "VLScene"
    input_size: tuple[int, int] = (384, 1280)  # (H, W) fed to the backbone
    img_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)  # RGB
    img_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    repvit_cfgs: tuple[tuple[int, int, int, int, int, int], ...] = OFFICIAL_REPVIT_M2_3
    repvit_out_indices: tuple[int, ...] = (6, 14, 50, 54)
    fpn_out_channels: int = 128
    fpn_start_level: int = 1
    fpn_num_outs: int = 4
    downsample: int = 8  # image stride of the FPN level that is lifted
    point_cloud_range: tuple[float, float, float, float, float, float] = (
        0.0,
        -25.6,
        -2.0,
        51.2,
        25.6,
        4.4,
    )
    occ_size: tuple[int, int, int] = (256, 256, 32)
    lss_downsample: tuple[int, int, int] = (2, 2, 2)
    dbound: tuple[float, float, float] = (2.0, 58.0, 0.5)
    num_trans: int = 128  # numC_Trans: lifted feature channels
    cam_channels: int = 30  # KITTI mlp_input: 18 intrinsics/augmentation + 12 sensor2ego
    view_gn_groups: int = 2  # GroupNorm groups of the view transformer's norm_cfg
    aspp_mid_channels: int | None = None  # None: numC_input (official)
    dcn_groups: int = 4
    stereo_feature_channels: int = 64  # stereofeature_net depth_channels
    stereo_groups: int = 32  # GwcNet groups
    stereo_channels: int = 32  # cost-volume 3D conv channels
    sparse_init_size: int = 64  # GSSA init_size (sparse_dim)
    head_mid_channels: int = 128  # OccHead occ_conv (hard-coded 128 officially)
    head_gn_groups: int = 32
    sdb_depth: int = 2
    class_names: tuple[str, ...] = SEMANTIC_KITTI_CLASSES
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        h, w = self.input_size
        if h % (4 * self.downsample) or w % (4 * self.downsample):
            raise ValueError(
                f"input_size {self.input_size} must be divisible by 4*downsample "
                f"({4 * self.downsample}): the stereo hourglass halves the feature map twice"
            )
        if self.num_depth_bins % 4:
            raise ValueError(f"dbound {self.dbound} gives {self.num_depth_bins} bins; need 4k")
        for n, d in zip(self.lss_grid, ("x", "y", "z"), strict=True):
            if n % 4:
                raise ValueError(f"LSS grid {self.lss_grid}: {d} must be divisible by 4 (GSSA)")
        if len(self.class_names) < 2:
            raise ValueError("need at least 2 classes (index 0 is empty)")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        r = self.point_cloud_range
        return tuple((r[i + 3] - r[i]) / self.occ_size[i] for i in range(3))  # type: ignore[return-value]

    @property
    def grid_config(self) -> dict[str, list[float]]:
        """The official `grid_config` (xbound/ybound/zbound/dbound), computed the same way."""
        r, v, s = self.point_cloud_range, self.voxel_size, self.lss_downsample
        return {
            "xbound": [r[0], r[3], v[0] * s[0]],
            "ybound": [r[1], r[4], v[1] * s[1]],
            "zbound": [r[2], r[5], v[2] * s[2]],
            "dbound": list(self.dbound),
        }

    @property
    def lss_grid(self) -> tuple[int, int, int]:
        return tuple(o // s for o, s in zip(self.occ_size, self.lss_downsample, strict=True))  # type: ignore[return-value]

    @property
    def num_depth_bins(self) -> int:
        lo, hi, step = self.dbound
        return len(range(0, round((hi - lo) / step)))

    @property
    def feature_size(self) -> tuple[int, int]:
        return self.input_size[0] // self.downsample, self.input_size[1] // self.downsample

    @classmethod
    def official(cls) -> VLSceneConfig:
        return cls()

    @classmethod
    def tiny(cls) -> VLSceneConfig:
        """Every module of the official network, small: 64x256 images, 8-bin depth, a
        16x16x4 LSS grid (32x32x8 output at 1.6 m x 1.6 m x 0.8 m)."""
        cfgs = (
            (3, 2, 8, 1, 0, 1),
            (3, 2, 8, 0, 0, 1),
            (3, 2, 16, 0, 0, 2),
            (3, 2, 16, 1, 0, 1),
            (3, 2, 24, 0, 1, 2),
            (3, 2, 24, 1, 1, 1),
            (3, 2, 32, 0, 1, 2),
            (3, 2, 32, 1, 1, 1),
        )
        return cls(
            name="VLSceneTiny",
            input_size=(64, 256),
            repvit_cfgs=cfgs,
            repvit_out_indices=(2, 4, 6, 8),
            fpn_out_channels=16,
            occ_size=(32, 32, 8),
            dbound=(2.0, 50.0, 6.0),
            num_trans=16,
            stereo_feature_channels=8,
            stereo_groups=4,
            stereo_channels=8,
            sparse_init_size=8,
            head_mid_channels=16,
            head_gn_groups=4,
            point_cloud_range=(0.0, -25.6, -2.0, 51.2, 25.6, 4.4),
        )
