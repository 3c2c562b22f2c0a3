"""Loading official checkpoint files into models built from configs (shared by every network).

Official releases wrap the weights differently (`{"model_point": ...}` for ScaLR, `{"net": ...}`
for WaffleIron, `{"state_dict": ...}` for POP-3D), sometimes with a DistributedDataParallel
`module.` prefix. These helpers unwrap them, refuse anything that is not plain tensors
(`torch.load(weights_only=True)`), and report every mismatch at once instead of the first.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "DEFAULT_STATE_DICT_KEYS",
    "CheckpointError",
    "CheckpointFormatError",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "extract_state_dict",
    "load_checkpoint_file",
    "load_state_dict_strict",
    "load_weights",
    "strip_prefix",
]

DEFAULT_STATE_DICT_KEYS = ("model_point", "model_points", "net", "state_dict", "model")
TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".tar")  # .tar: OpenScene's .pth.tar
SAFETENSORS_SUFFIXES = (".safetensors",)
_MAX_LISTED = 20


def _numpy_scalar_globals() -> list:
    """Plain numpy numbers (e.g. WaffleIron's `best_miou`) that weights_only may rebuild.

    Only the scalar reconstructor and numeric dtypes: no code runs, the file stays tensors-only.
    """
    from numpy._core.multiarray import scalar

    dtypes = [
        getattr(np.dtypes, n)
        for n in ("Float16DType", "Float32DType", "Float64DType", "Int32DType", "Int64DType")
    ]
    dtypes.append(np.dtypes.BoolDType)
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, *dtypes]


class CheckpointError(Exception):
    """Base class of checkpoint problems."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist; the message names the path looked for."""


class CheckpointFormatError(CheckpointError, ValueError):
    """The file or dict is not a (wrapped) state dict of tensors."""


class CheckpointMismatchError(CheckpointError, RuntimeError):
    """The state dict does not fit the model; lists missing, unexpected and mis-shaped keys."""

    def __init__(
        self,
        missing: list[str],
        unexpected: list[str],
        shape_mismatches: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
        model_name: str = "model",
    ) -> None:
        self.missing = missing
        self.unexpected = unexpected
        self.shape_mismatches = shape_mismatches
        parts = [f"checkpoint does not match {model_name}:"]
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_short(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_short(unexpected)}")
        if shape_mismatches:
            shapes = [
                f"{k} checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in shape_mismatches
            ]
            parts.append(f"{len(shape_mismatches)} shape mismatch(es): {_short(shapes)}")
        super().__init__("\n  ".join(parts))


def _short(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f", ... (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


def load_checkpoint_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint: `.pth/.pt/.ckpt/.bin` with `torch.load(weights_only=True)`,
    `.safetensors` with safetensors. Returns the top-level dict as stored."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device=str(map_location)))
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointFormatError(
                f"{path} is not a readable safetensors file: {exc}"
            ) from exc
    if suffix not in TORCH_SUFFIXES:
        raise CheckpointFormatError(
            f"{path}: unsupported checkpoint suffix {suffix!r}; expected one of "
            f"{TORCH_SUFFIXES + SAFETENSORS_SUFFIXES}"
        )
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointFormatError(
            f"{path} holds objects other than tensors and plain containers; refused by "
            f"torch.load(weights_only=True): {exc}"
        ) from exc
    except (RuntimeError, EOFError) as exc:
        raise CheckpointFormatError(f"{path} is not a readable torch checkpoint: {exc}") from exc
    if not isinstance(ckpt, Mapping):
        raise CheckpointFormatError(
            f"{path} holds a {type(ckpt).__name__}, expected a dict (a state dict or a wrapper)"
        )
    return dict(ckpt)


def strip_prefix(state: Mapping[str, Any], prefix: str = "module.") -> dict[str, Any]:
    """Drop `prefix` from every key that starts with it (DataParallel / DDP wrappers)."""
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state.items()}


def _is_tensor_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def extract_state_dict(
    ckpt: Mapping[str, Any],
    keys: Iterable[str] = DEFAULT_STATE_DICT_KEYS,
    strip_prefixes: Iterable[str] = ("module.",),
) -> dict[str, torch.Tensor]:
    """The state dict inside an official checkpoint dict (first of `keys` present), or the
    dict itself when it already maps names to tensors; `module.` prefixes removed."""
    if not isinstance(ckpt, Mapping):
        raise CheckpointFormatError(f"checkpoint must be a dict, got {type(ckpt).__name__}")
    keys = tuple(keys)
    state: Any = None
    for key in keys:
        if key in ckpt and isinstance(ckpt[key], Mapping):
            state = ckpt[key]
            break
    if state is None:
        if not _is_tensor_dict(ckpt):
            top = sorted(str(k) for k in ckpt)
            raise CheckpointFormatError(
                f"no state dict found: none of the keys {keys} holds a dict, and the checkpoint "
                f"is not itself a name -> tensor dict (top-level keys: {_short(top)})"
            )
        state = ckpt
    bad = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointFormatError(f"state dict entries that are not tensors: {_short(bad)}")
    out = dict(state)
    for prefix in strip_prefixes:
        out = strip_prefix(out, prefix)
    return out


def load_state_dict_strict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """`model.load_state_dict(state, strict=True)`, but raising `CheckpointMismatchError` that
    lists all missing, unexpected and shape-mismatched keys together."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        (k, tuple(state[k].shape), tuple(v.shape))
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        raise CheckpointMismatchError(missing, unexpected, shapes, type(model).__name__)
    model.load_state_dict(state, strict=True)


def load_weights(
    model: nn.Module,
    path: str | Path,
    keys: Iterable[str] = DEFAULT_STATE_DICT_KEYS,
    map_location: str | torch.device = "cpu",
) -> nn.Module:
    """File -> unwrap -> strict load, in one call. Returns `model`."""
    ckpt = load_checkpoint_file(path, map_location=map_location)
    load_state_dict_strict(model, extract_state_dict(ckpt, keys))
    return model
