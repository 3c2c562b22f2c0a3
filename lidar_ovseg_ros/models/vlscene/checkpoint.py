"""The official VLScene checkpoint (mmcv `{"meta", "state_dict", "optimizer"}`) into
`VLSceneNet`.

Keys of modules that only run in training are skipped by name (`TRAINING_ONLY_PREFIXES`:
the LSeg/CLIP guidance `clip_net`, the view transformer's image-segmentation and CLIP-fusion
heads, the OccHead point branch); every other key must be present with the model's shape,
and the model must have no key the file lacks (`CheckpointMismatchError` lists them all).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from ..checkpoints import extract_state_dict, load_checkpoint_file, load_state_dict_strict
from .config import VLSceneConfig
from .network import VLSceneNet

__all__ = [
    "GRID_CONSTANTS",
    "TRAINING_ONLY_PREFIXES",
    "GridMismatchError",
    "load_vlscene_checkpoint",
    "load_vlscene_state_dict",
    "split_training_only",
]

TRAINING_ONLY_PREFIXES: tuple[str, ...] = (
    "clip_net.",  # LSeg vision-language guidance (training only)
    "img_view_transformer.clip_fusion.",  # CLIP feature distillation
    "img_view_transformer.img_clip_fusion.",
    "img_view_transformer.img_seg_head.",  # auxiliary image segmentation
    "pts_bbox_head.img_feat_reduce.",  # point-level supervision branch
    "pts_bbox_head.point_soft_weights.",
    "pts_bbox_head.point_occ_mlp.",
)

# Saved by the official code as frozen parameters of the view transformer: the LSS grid and the
# image frustum. They must equal the ones the config computes (same grid, same input size).
GRID_CONSTANTS = ("dx", "bx", "nx", "frustum")


class GridMismatchError(ValueError):
    """The checkpoint was trained for another grid or input size than the config."""


def _check_grid(model: VLSceneNet, state: Mapping[str, torch.Tensor]) -> None:
    own = model.img_view_transformer
    bad = []
    for name in GRID_CONSTANTS:
        key = f"img_view_transformer.{name}"
        mine = getattr(own, name)
        same_shape = key in state and state[key].shape == mine.shape
        if same_shape and not torch.allclose(
            state[key].float().cpu(), mine.float().cpu(), atol=1e-4
        ):
            bad.append(key)
    if bad:
        raise GridMismatchError(
            f"checkpoint grid constants {bad} differ from the config's (grid "
            f"{model.cfg.grid_config}, input size {model.cfg.input_size})"
        )


def split_training_only(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(inference keys, skipped training-only keys) of an official state dict."""
    kept, skipped = {}, []
    for k, v in state.items():
        if k.startswith(TRAINING_ONLY_PREFIXES):
            skipped.append(k)
        else:
            kept[k] = v
    return kept, sorted(skipped)


def load_vlscene_state_dict(model: VLSceneNet, ckpt: Mapping) -> list[str]:
    """Load an official checkpoint dict (or bare state dict) strictly; returns the skipped
    training-only keys."""
    state = extract_state_dict(ckpt, keys=("state_dict",))
    kept, skipped = split_training_only(state)
    _check_grid(model, kept)  # before loading: compares with the config's own grid
    load_state_dict_strict(model, kept)  # every key and shape, all mismatches listed
    return skipped


def load_vlscene_checkpoint(
    path: str | Path,
    cfg: VLSceneConfig | None = None,
    device: str | torch.device = "cpu",
) -> tuple[VLSceneNet, list[str]]:
    """Build the network from `cfg` (official by default), load `path`, eval mode."""
    model = VLSceneNet(cfg or VLSceneConfig.official())
    skipped = load_vlscene_state_dict(model, load_checkpoint_file(path, map_location="cpu"))
    return model.to(device).eval(), skipped
