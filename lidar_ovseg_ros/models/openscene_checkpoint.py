"""OpenScene's official 3D checkpoints (e.g. `nuscenes_openseg.pth.tar`) into the spconv MinkUNet.

The file is a dict whose `state_dict` holds the DisNet weights: keys `net3d.<module>.<name>`,
possibly prefixed by `module.` (DistributedDataParallel). MinkowskiEngine stores a convolution
as `<module>.kernel` of shape (K^3, in, out) with the kernel offset index running with axis 0
fastest (`a + K*b + K*K*c` for offset (a, b, c)), and a 1x1 stride-1 convolution as (in, out).
spconv wants `<module>.weight` of shape (out, K, K, K, in); `Pointwise` wants (out, in). The
conversion happens here, at load time, so users give the official file as it is. Every key and
shape is checked before anything is loaded; a wrong or partial file names all missing,
unexpected and mis-shaped keys (in the official naming).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .checkpoints import (
    CheckpointFormatError,
    CheckpointMismatchError,
    extract_state_dict,
    load_checkpoint_file,
)
from .minkunet import MinkUNet

__all__ = [
    "NET3D_PREFIX",
    "load_openscene_checkpoint",
    "me_kernel_to_spconv",
    "official_state_dict_shapes",
    "openscene_state_dict_to_spconv",
    "spconv_weight_to_me",
]

NET3D_PREFIX = "net3d."
_KERNEL = ".kernel"
_WEIGHT = ".weight"


def me_kernel_to_spconv(kernel: torch.Tensor, target_shape: tuple[int, ...]) -> torch.Tensor:
    """A MinkowskiEngine kernel in the layout of the spconv/`Pointwise` parameter of
    `target_shape`: (K^3, in, out) -> (out, K, K, K, in); (in, out) -> (out, in).
    """
    if len(target_shape) == 2:
        out_c, in_c = target_shape
        if tuple(kernel.shape) != (in_c, out_c):
            raise ValueError(f"kernel {tuple(kernel.shape)} does not fit ({in_c}, {out_c})")
        return kernel.t().contiguous()
    out_c, k0, k1, k2, in_c = target_shape
    if not (k0 == k1 == k2) or tuple(kernel.shape) != (k0**3, in_c, out_c):
        raise ValueError(f"kernel {tuple(kernel.shape)} does not fit {target_shape}")
    k = k0
    # flat index a + K*b + K*K*c -> dims (c, b, a); spconv axes (a, b, c) follow the coords.
    return kernel.reshape(k, k, k, in_c, out_c).permute(4, 2, 1, 0, 3).contiguous()


def spconv_weight_to_me(weight: torch.Tensor) -> torch.Tensor:
    """Inverse of `me_kernel_to_spconv` (exports, tests): (out, K, K, K, in) -> (K^3, in, out),
    (out, in) -> (in, out)."""
    if weight.ndim == 2:
        return weight.t().contiguous()
    out_c, k, _, _, in_c = weight.shape
    return weight.permute(3, 2, 1, 4, 0).reshape(k**3, in_c, out_c).contiguous()


def _me_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) == 2:
        return (shape[1], shape[0])
    return (shape[1] ** 3, shape[4], shape[0])


def official_state_dict_shapes(model: MinkUNet) -> dict[str, tuple[tuple[int, ...], str]]:
    """Official key (`net3d.` + ME name) -> (official shape, this model's key)."""
    out = {}
    for key, value in model.state_dict().items():
        shape = tuple(value.shape)
        if key.endswith(_WEIGHT) and value.ndim in (2, 5):
            official = key[: -len(_WEIGHT)] + _KERNEL
            shape = _me_shape(shape)
        else:
            official = key
        out[NET3D_PREFIX + official] = (shape, key)
    return out


def _normalise_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`module.` already stripped; bare MinkUNet keys get the `net3d.` of DisNet."""
    if any(k.startswith(NET3D_PREFIX) for k in state):
        return dict(state)
    return {NET3D_PREFIX + k: v for k, v in state.items()}


def openscene_state_dict_to_spconv(
    state: Mapping[str, torch.Tensor], model: MinkUNet
) -> dict[str, torch.Tensor]:
    """Check an official (ME-layout) state dict against `model` and convert it to the model's
    state dict. Raises `CheckpointMismatchError` listing every problem."""
    state = _normalise_keys(state)
    expected = official_state_dict_shapes(model)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        (k, tuple(state[k].shape), expected[k][0])
        for k in expected
        if k in state and tuple(state[k].shape) != expected[k][0]
    ]
    if missing or unexpected or shapes:
        raise CheckpointMismatchError(
            missing, unexpected, shapes, f"OpenScene {model.config.name} (net3d)"
        )
    target = model.state_dict()
    converted = {}
    for official, (_, key) in expected.items():
        value = state[official]
        if official.endswith(_KERNEL):
            value = me_kernel_to_spconv(value, tuple(target[key].shape))
        converted[key] = value
    return converted


def load_openscene_checkpoint(
    model: nn.Module, source: str | Path | Mapping[str, object], map_location: str = "cpu"
) -> nn.Module:
    """Load `nuscenes_openseg.pth.tar` (a path, read with `weights_only=True`) or an already
    loaded checkpoint dict into `model` (a `MinkUNet`), strictly. Returns `model`."""
    if not isinstance(model, MinkUNet):
        raise TypeError(f"need a MinkUNet, got {type(model).__name__}")
    if isinstance(source, Mapping):
        ckpt = source
    else:
        ckpt = load_checkpoint_file(source, map_location=map_location)
    try:
        state = extract_state_dict(ckpt, keys=("state_dict",), strip_prefixes=("module.",))
    except CheckpointFormatError as exc:
        raise CheckpointFormatError(f"not an OpenScene checkpoint: {exc}") from exc
    model.load_state_dict(openscene_state_dict_to_spconv(state, model), strict=True)
    return model
