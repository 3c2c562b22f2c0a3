"""POP-3D (open-vocabulary 3D occupancy from surround cameras) in plain PyTorch.

Parameter names follow the official code (vobecant/POP3D on TPVFormer) so that the released
`pop3d_weights.pth` loads with `strict=True`; no mmcv or compiled operators are needed.
"""

from .network import (
    NUSCENES_CAMERAS,
    POP3D_STATE_DICT_KEYS,
    Pop3DConfig,
    Pop3DConfigError,
    Pop3DNetwork,
    load_pop3d_weights,
)

__all__ = [
    "NUSCENES_CAMERAS",
    "POP3D_STATE_DICT_KEYS",
    "Pop3DConfig",
    "Pop3DConfigError",
    "Pop3DNetwork",
    "load_pop3d_weights",
]
