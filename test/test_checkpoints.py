"""Checkpoint loading: official wrappers, `module.` prefixes, strict mismatches, safe unpickling."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from lidar_ovseg_ros.models.checkpoints import (
    CheckpointFormatError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    extract_state_dict,
    load_checkpoint_file,
    load_state_dict_strict,
    load_weights,
    strip_prefix,
)
from lidar_ovseg_ros.models.waffleiron import WaffleIron

_MARKER: list[str] = []


def _record(text: str) -> None:
    _MARKER.append(text)


class Payload:
    """Unpickling this would call `_record`: weights_only must refuse it before that."""

    def __reduce__(self):
        return (_record, ("payload executed",))


@pytest.fixture(scope="module")
def source_state():
    torch.manual_seed(0)
    return WaffleIron.tiny().state_dict()


def fresh_model() -> WaffleIron:
    torch.manual_seed(123)  # different init than the source
    return WaffleIron.tiny()


def assert_same_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


@pytest.mark.parametrize("wrapper", ["model_point", "model_points", "net", "state_dict", None])
@pytest.mark.parametrize("ddp", [False, True])
def test_official_checkpoint_dicts_load_strictly(tmp_path, source_state, wrapper, ddp):
    state = {(f"module.{k}" if ddp else k): v for k, v in source_state.items()}
    ckpt = (
        state
        if wrapper is None
        else {wrapper: state, "epoch": 64, "optim": {"state": {}, "param_groups": [{"lr": 0.002}]}}
    )
    path = tmp_path / "ckpt_last.pth"
    torch.save(ckpt, path)
    model = fresh_model()
    assert not torch.equal(model.classif[0].weight, source_state["classif.0.weight"])
    load_weights(model, path)
    assert_same_weights(model, source_state)


def test_waffleiron_checkpoint_with_numpy_scalars_loads(tmp_path, source_state):
    """Original WaffleIron stores `best_miou` (a numpy float) next to `net`."""
    path = tmp_path / "ckpt_best.pth"
    torch.save({"net": source_state, "best_miou": np.float64(77.6), "epoch": np.int64(44)}, path)
    ckpt = load_checkpoint_file(path)
    assert float(ckpt["best_miou"]) == 77.6
    model = fresh_model()
    load_state_dict_strict(model, extract_state_dict(ckpt))
    assert_same_weights(model, source_state)


def test_safetensors_file_loads(tmp_path, source_state):
    path = tmp_path / "scalr.safetensors"
    save_file({k: v.contiguous() for k, v in source_state.items()}, str(path))
    model = fresh_model()
    load_weights(model, path)
    assert_same_weights(model, source_state)


def test_wrapper_key_priority_and_prefix():
    inner = {"module.a": torch.zeros(1)}
    ckpt = {"model": {"b": torch.ones(1)}, "model_point": inner}
    assert list(extract_state_dict(ckpt)) == ["a"]  # model_point comes first
    assert list(extract_state_dict(ckpt, keys=("model",))) == ["b"]
    assert strip_prefix({"module.x": 1, "y": 2, "modulez": 3}) == {"x": 1, "y": 2, "modulez": 3}


def test_mismatch_lists_missing_unexpected_and_shapes(source_state):
    state = dict(source_state)
    del state["classif.2.bias"]
    del state["waffleiron.spatial_mix.1.scale.weight"]
    state["head.extra.weight"] = torch.zeros(3)
    state["embed.conv1.weight"] = torch.zeros(7, 5, 1)
    model = fresh_model()
    before = model.embed.conv1.weight.clone()
    with pytest.raises(CheckpointMismatchError) as info:
        load_state_dict_strict(model, state)
    err = info.value
    assert isinstance(err, RuntimeError)
    assert set(err.missing) == {"classif.2.bias", "waffleiron.spatial_mix.1.scale.weight"}
    assert err.unexpected == ["head.extra.weight"]
    assert err.shape_mismatches == [("embed.conv1.weight", (7, 5, 1), (32, 5, 1))]
    text = str(err)
    for key in ("classif.2.bias", "head.extra.weight", "embed.conv1.weight", "(7, 5, 1)"):
        assert key in text
    assert torch.equal(model.embed.conv1.weight, before)  # nothing half-loaded


def test_wrong_architecture_is_a_mismatch(tmp_path, source_state):
    path = tmp_path / "tiny.pth"
    torch.save({"model_point": source_state}, path)
    with pytest.raises(CheckpointMismatchError, match="missing key"):
        load_weights(WaffleIron.tiny(depth=4), path)
    with pytest.raises(CheckpointMismatchError, match="shape mismatch"):
        load_weights(WaffleIron.tiny(nb_channels=16), path)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "ckpt_last.pth"
    with pytest.raises(CheckpointNotFoundError) as info:
        load_checkpoint_file(path)
    assert isinstance(info.value, FileNotFoundError)
    assert str(path) in str(info.value)


def test_pickled_objects_are_refused_unexecuted(tmp_path, source_state):
    path = tmp_path / "evil.pth"
    torch.save({"model_point": source_state, "hook": Payload()}, path)
    with pytest.raises(CheckpointFormatError, match="weights_only"):
        load_checkpoint_file(path)
    assert _MARKER == []
    path2 = tmp_path / "args.pth"
    torch.save({"net": source_state, "args": argparse.Namespace(lr=1.0)}, path2)
    with pytest.raises(CheckpointFormatError, match="weights_only"):
        load_checkpoint_file(path2)


def test_not_a_state_dict(tmp_path):
    with pytest.raises(CheckpointFormatError, match="top-level keys"):
        extract_state_dict({"epoch": 3, "optim": [1, 2]})
    with pytest.raises(CheckpointFormatError, match="not tensors"):
        extract_state_dict({"net": {"a": torch.zeros(1), "b": 3}})
    tensor_file = tmp_path / "bare.pt"
    torch.save(torch.zeros(3), tensor_file)
    with pytest.raises(CheckpointFormatError, match="Tensor"):
        load_checkpoint_file(tensor_file)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointFormatError):
        load_checkpoint_file(junk)
    with pytest.raises(CheckpointFormatError, match="suffix"):
        load_checkpoint_file(Path(__file__))
