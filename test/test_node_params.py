"""Node parameters are declared once (dataclass field metadata), described, ranged and
validated by one helper for both nodes; config/*.yaml are generated from the same metadata."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import pytest
from rcl_interfaces.msg import ParameterType

from lidar_ovseg_ros.nodes.camera_occupancy_node import CameraNodeParams
from lidar_ovseg_ros.nodes.common import (
    check_param_value,
    declare_node_params,
    node_param,
    param_descriptor,
    param_spec,
    render_params_yaml,
)
from lidar_ovseg_ros.nodes.lidar_ovseg_node import LidarNodeParams

pytestmark = pytest.mark.ros


@pytest.mark.parametrize("cls", [LidarNodeParams, CameraNodeParams])
def test_every_parameter_has_a_description_and_numbers_a_range(cls):
    for f in fields(cls):
        spec = param_spec(cls, f)
        desc = param_descriptor(spec, f.default)
        assert len(desc.description) > 10, f.name
        if isinstance(f.default, float):
            assert desc.floating_point_range, f"{f.name} has no range"
        elif isinstance(f.default, int) and not isinstance(f.default, bool):
            assert desc.integer_range, f"{f.name} has no range"
        assert desc.read_only == (not spec.runtime)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e300, 0.0, -1.0])
def test_voxel_size_must_be_finite_and_sane(value):
    f = next(f for f in fields(LidarNodeParams) if f.name == "voxel_size")
    reason = check_param_value("voxel_size", param_spec(LidarNodeParams, f), value)
    assert reason is not None and "voxel_size" in reason


def test_a_field_without_description_is_a_clear_error(ros):
    @dataclass
    class Params:
        fine: int = node_param(1, "a described parameter", range=(0, 10))
        method: str = "igloss"  # added without node_param

    node = ros.make_node("h1_undescribed")
    with pytest.raises(TypeError, match=r"Params\.method has no description.*node_param"):
        declare_node_params(node, Params)


def test_declared_descriptor_is_what_describe_shows(ros):
    @dataclass
    class Params:
        size: float = node_param(0.4, "cube size", range=(0.01, 100.0), runtime=True)
        mode: str = node_param("a", "a mode", choices=("a", "b"))
        names: tuple[str, ...] = node_param(("x", "y"), "names")

    node = ros.make_node("h1_described")
    params = declare_node_params(node, Params)
    assert params == Params()
    d = node.describe_parameter("size")
    assert d.type == ParameterType.PARAMETER_DOUBLE and d.description == "cube size"
    assert d.floating_point_range[0].to_value == 100.0 and not d.read_only
    assert node.describe_parameter("mode").read_only
    assert "one of: a, b" in node.describe_parameter("mode").additional_constraints
    assert node.describe_parameter("names").type == ParameterType.PARAMETER_STRING_ARRAY
    from rclpy.parameter import Parameter

    for bad in (math.nan, math.inf, 1e300):
        assert not node.set_parameters([Parameter("size", value=bad)])[0].successful
    assert node.set_parameters([Parameter("size", value=1.5)])[0].successful
    assert node.params.size == 1.5  # applied after every callback accepted it
    assert not node.set_parameters([Parameter("mode", value="b")])[0].successful  # read-only


def test_config_files_are_generated_from_the_dataclasses(repo_root):
    for cls, node, config, source in (
        (LidarNodeParams, "lidar_ovseg_node", "lidar_ovseg.yaml", "lidar_ovseg_node.py"),
        (
            CameraNodeParams,
            "camera_occupancy_node",
            "camera_occupancy.yaml",
            "camera_occupancy_node.py",
        ),
    ):
        text = render_params_yaml(cls, node, f"lidar_ovseg_ros/nodes/{source}")
        assert (repo_root / "config" / config).read_text() == text, (
            f"config/{config} is out of date: run `python scripts/write_node_configs.py`"
        )
