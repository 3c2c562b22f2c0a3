"""camera_ssc_node's package files agree with the code: the generated parameters file, the launch
file's arguments, the RViz config's topics and QoS, the console script."""

from __future__ import annotations

import ast
from dataclasses import fields

import yaml

from lidar_ovseg_ros.nodes.camera_ssc_node import CameraSSCNodeParams
from lidar_ovseg_ros.nodes.common import render_params_yaml

NODE = "camera_ssc_node"


def test_config_is_generated_from_the_dataclass(repo_root):
    text = render_params_yaml(CameraSSCNodeParams, NODE, "lidar_ovseg_ros/nodes/camera_ssc_node.py")
    assert (repo_root / "config" / "camera_ssc.yaml").read_text() == text, (
        "config/camera_ssc.yaml is out of date: run `python scripts/write_node_configs.py`"
    )
    values = yaml.safe_load(text)["/**"]["ros__parameters"]
    assert {f.name for f in fields(CameraSSCNodeParams)} | {"vocabulary", "vocabulary_file"} == set(
        values
    )


def test_launch_file_declares_its_arguments(repo_root):
    path = repo_root / "launch" / "camera_ssc.launch.py"
    source = path.read_text()
    compile(source, str(path), "exec")
    declared = {
        n.args[0].value
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.Call)
        and getattr(n.func, "id", "") == "DeclareLaunchArgument"
        and isinstance(n.args[0], ast.Constant)
    }
    assert {"topic_prefix", "params_file", "weights", "vocabulary_file", "device", "rviz"} <= (
        declared
    )
    assert 'executable="camera_ssc_node"' in source and "camera_ssc.yaml" in source


def test_rviz_config_shows_the_outputs(repo_root):
    cfg = yaml.safe_load((repo_root / "rviz" / "camera_ssc.rviz").read_text())
    displays = cfg["Visualization Manager"]["Displays"]
    topics = {d["Topic"]["Value"]: d for d in displays if "Topic" in d}
    assert set(topics) == {f"/{NODE}/output/{o}" for o in ("voxel_points", "voxels", "legend")}
    for name, d in topics.items():
        assert d["Topic"]["Reliability Policy"] == "Reliable"
        latched = name.endswith("/legend")
        assert d["Topic"]["Durability Policy"] == ("Transient Local" if latched else "Volatile")
    assert cfg["Visualization Manager"]["Global Options"]["Fixed Frame"] == "stereo_ssc"
    assert CameraSSCNodeParams().frame_id == "stereo_ssc"


def test_console_script(repo_root):
    text = (repo_root / "setup.py").read_text()
    assert '"camera_ssc_node = lidar_ovseg_ros.nodes.camera_ssc_node:main"' in text
