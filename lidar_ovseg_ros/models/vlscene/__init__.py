"""VLScene (AAAI 2025, willemeng/VLScene, GPL-3.0): stereo semantic scene completion."""

from .checkpoint import TRAINING_ONLY_PREFIXES, load_vlscene_checkpoint, load_vlscene_state_dict
from .config import SEMANTIC_KITTI_CLASSES, VLSceneConfig
from .network import StereoInputs, VLSceneNet

__all__ = [
    "SEMANTIC_KITTI_CLASSES",
    "TRAINING_ONLY_PREFIXES",
    "StereoInputs",
    "VLSceneConfig",
    "VLSceneNet",
    "load_vlscene_checkpoint",
    "load_vlscene_state_dict",
]
