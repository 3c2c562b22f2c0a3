"""The files a ROS 2 user touches agree with the code: package.xml, config/*.yaml, launch/, rviz/.

Launch files and RViz cannot run here (no `launch_ros`, no `rviz2`), so they are checked as
data: they parse, declare the documented arguments, and point at topics the nodes publish with
QoS that matches.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import fields

import pytest
import yaml

from lidar_ovseg_ros.nodes.camera_occupancy_node import CameraNodeParams
from lidar_ovseg_ros.nodes.lidar_ovseg_node import LidarNodeParams

VOCABULARY_PARAMS = {"vocabulary", "vocabulary_file"}


def test_package_xml_is_format_3_with_runtime_dependencies(repo_root):
    root = ET.parse(repo_root / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "lidar_ovseg_ros"
    deps = {e.text for e in root.iter("exec_depend")}
    for dep in (
        "rclpy",
        "sensor_msgs",
        "std_msgs",
        "geometry_msgs",
        "visualization_msgs",
        "diagnostic_msgs",
        "tf2_ros_py",
        "launch_ros",
        "sensor_msgs_py",
        "python3-numpy",
        "python3-torch",
    ):
        assert dep in deps, dep
    assert root.find("export/build_type").text == "ament_python"


@pytest.mark.parametrize(
    ("config", "params"),
    [("lidar_ovseg.yaml", LidarNodeParams), ("camera_occupancy.yaml", CameraNodeParams)],
)
def test_config_files_set_exactly_the_declared_parameters(repo_root, config, params):
    data = yaml.safe_load((repo_root / "config" / config).read_text())
    values = data["/**"]["ros__parameters"]
    declared = {f.name for f in fields(params)} | VOCABULARY_PARAMS
    assert set(values) == declared
    for f in fields(params):
        default = list(f.default) if isinstance(f.default, tuple) else f.default
        assert type(values[f.name]) is type(default), f.name  # ROS refuses a type change


def _declared_arguments(path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", "") == "DeclareLaunchArgument"
        and isinstance(node.args[0], ast.Constant)
    }


@pytest.mark.parametrize(
    ("launch", "expected"),
    [
        (
            "lidar_ovseg.launch.py",
            {
                "input_topic",
                "params_file",
                "checkpoint",
                "vocabulary_file",
                "device",
                "use_sim_time",
                "rviz",
            },
        ),
        (
            "camera_occupancy.launch.py",
            {"topic_prefix", "params_file", "weights", "vocabulary_file", "device", "rviz"},
        ),
    ],
)
def test_launch_files_declare_their_arguments(repo_root, launch, expected):
    path = repo_root / "launch" / launch
    compile(path.read_text(), str(path), "exec")
    assert expected <= _declared_arguments(path)
    text = path.read_text()
    assert "generate_launch_description" in text and "FindPackageShare" in text


@pytest.mark.parametrize(
    ("rviz", "node"),
    [("lidar_ovseg.rviz", "lidar_ovseg_node"), ("camera_occupancy.rviz", "camera_occupancy_node")],
)
def test_rviz_configs_show_the_node_outputs_with_matching_qos(repo_root, rviz, node):
    cfg = yaml.safe_load((repo_root / "rviz" / rviz).read_text())
    displays = cfg["Visualization Manager"]["Displays"]
    topics = {d["Topic"]["Value"]: d for d in displays if "Topic" in d}
    outputs = {"points", "voxels", "legend"}
    if node == "camera_occupancy_node":
        outputs = {"voxel_points", "voxels", "legend", "grounding"}
    assert {f"/{node}/output/{o}" for o in outputs} == set(topics)
    for name, d in topics.items():
        assert d["Topic"]["Reliability Policy"] == "Reliable"  # publishers are reliable
        latched = name.endswith("/legend")
        assert d["Topic"]["Durability Policy"] == ("Transient Local" if latched else "Volatile")
    points = topics[f"/{node}/output/{'points' if node == 'lidar_ovseg_node' else 'voxel_points'}"]
    assert points["Class"] == "rviz_default_plugins/PointCloud2"
    assert points["Color Transformer"] == "RGB8"  # shows the packed `rgb` field


def test_setup_installs_launch_config_and_rviz_to_share(repo_root):
    text = (repo_root / "setup.py").read_text()
    for folder in ('"launch"', '"config"', '"config/vocabularies"', '"rviz"'):
        assert folder in text
    cfg = (repo_root / "setup.cfg").read_text()
    assert "$base/lib/lidar_ovseg_ros" in cfg  # `ros2 run` looks there


def _setup_keywords(repo_root) -> set[str]:
    tree = ast.parse((repo_root / "setup.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    (call,) = [n for n in calls if getattr(n.func, "id", "") == "setup"]
    return {k.arg for k in call.keywords}


def test_setup_has_no_option_colcon_warns_about(repo_root):
    # "Unknown distribution option: 'tests_require'" on every colcon build (setuptools >= 72).
    assert "tests_require" not in _setup_keywords(repo_root)


def test_setup_runs_from_a_symlink_like_colcon_symlink_install(repo_root, tmp_path):
    """colcon --symlink-install symlinks setup.py, setup.cfg, the package and each data file into
    build/<pkg>/ (not the requirements files) and runs setup.py there."""
    build = tmp_path / "build" / "lidar_ovseg_ros"
    build.mkdir(parents=True)
    for item in ("setup.py", "setup.cfg", "package.xml", "resource", "launch", "config", "rviz"):
        (build / item).symlink_to(repo_root / item)
    (build / "lidar_ovseg_ros").symlink_to(repo_root / "lidar_ovseg_ros")
    install = tmp_path / "install"
    egg_info = ["egg_info", "--egg-base", str(tmp_path)]
    res = subprocess.run(
        [sys.executable, "setup.py", *egg_info, "install_data", "--install-dir", str(install)],
        cwd=build,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Unknown distribution option" not in res.stderr
    share = install / "share" / "lidar_ovseg_ros"
    installed = ("package.xml", "launch/lidar_ovseg.launch.py", "config/lidar_ovseg.yaml")
    for rel in (*installed, "config/dds/fastdds_large_clouds.xml"):
        assert (share / rel).is_file(), rel
    requires = (tmp_path / "lidar_ovseg_ros.egg-info" / "requires.txt").read_text()
    assert "torch" in requires  # requirements.txt was read from the source folder


def _depends(repo_root) -> dict[str, ET.Element]:
    root = ET.parse(repo_root / "package.xml").getroot()
    return {e.text: e for e in root if e.tag.endswith("depend")}


def _known_rosdep_keys(repo_root) -> set[str]:
    lines = (repo_root / "test" / "rosdep_keys.txt").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def test_every_dependency_is_a_rosdep_key(repo_root):
    """`rosdep install --from-paths src --ignore-src` stops at the first unknown key; the keys are
    checked against the list verified in rosdistro (test/rosdep_keys.txt names its source)."""
    unknown = set(_depends(repo_root)) - _known_rosdep_keys(repo_root)
    assert not unknown, f"not rosdep keys (see test/rosdep_keys.txt): {sorted(unknown)}"
    root = ET.parse(repo_root / "package.xml").getroot()
    assert root.find("buildtool_depend") is None or all(
        e.text != "ament_python" for e in root.iter("buildtool_depend")
    )  # ament_python is the build type, not a key


def test_python_imports_of_ros_packages_are_declared(repo_root):
    """`import tf2_ros` is provided by the tf2_ros_py package, which tf2_ros does not pull in."""
    sources = "\n".join(p.read_text() for p in (repo_root / "lidar_ovseg_ros").rglob("*.py"))
    deps = _depends(repo_root)
    for module, key in {"tf2_ros": "tf2_ros_py", "sensor_msgs_py": "sensor_msgs_py"}.items():
        if f"import {module}" in sources or f"from {module} import" in sources:
            assert key in deps, key


_ROSDEP_NAME = {"pyyaml": "yaml", "scikit-learn": "sklearn", "pillow": "pil"}


def _pip_only(repo_root) -> set[str]:
    text = (repo_root / "package.xml").read_text()
    start = text.index("pip only (no rosdep key in rosdistro):")
    names = text[start:].split(":", 1)[1].split(".", 1)[0]
    return {n.strip().lower() for n in names.split(",")}


def test_every_requirement_is_declared_in_package_xml(repo_root):
    """Each runtime requirement has its rosdep key, or is listed as pip only in package.xml."""
    deps = set(_depends(repo_root))
    pip_only = _pip_only(repo_root)
    for line in (repo_root / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        name = line.split("==")[0].split(">=")[0].split("[")[0].strip().lower()
        base = _ROSDEP_NAME.get(name, name.replace("_", "-"))
        keys = {f"python3-{base}", f"python3-{base}-pip"}
        assert keys & deps or name in pip_only, (
            f"{name}: declare {sorted(keys)} in package.xml (if rosdistro has it) or add it to "
            "the 'pip only' comment"
        )


def test_desktop_tools_are_not_hard_dependencies(repo_root):
    """rviz2 and rosbag2 are heavy for a headless vehicle: only with LIDAR_OVSEG_DESKTOP=1."""
    deps = _depends(repo_root)
    for key in ("rviz2", "ros2bag", "rosbag2_storage_mcap"):
        assert deps[key].get("condition") == "$LIDAR_OVSEG_DESKTOP == 1", key


def _readme_command_lines(repo_root) -> list[str]:
    lines, inside = [], False
    for line in (repo_root / "README.md").read_text().splitlines():
        if line.startswith("```"):
            inside = not inside
        elif inside:
            lines.append(line)
    return lines


def test_readme_quotes_tilde_in_ros_arguments(repo_root):
    """`-r ~/input/points:=...` unquoted is expanded by bash and the remap silently ignored."""
    bad = [
        line
        for line in _readme_command_lines(repo_root)
        if re.search(r"(^|\s)(-r|-p|--remap)\s+~", line) or re.search(r"\s~/[\w/]*:=", line)
    ]
    assert not bad, bad


def test_readme_lidar_ovseg_commands_exist(repo_root):
    from lidar_ovseg_ros.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for line in _readme_command_lines(repo_root):
        match = re.match(r"\s*(?:\.venv/bin/|ros2 run lidar_ovseg_ros )?lidar-ovseg ([\w-]+)", line)
        if match:
            assert match.group(1) in sub.choices, line


@pytest.mark.parametrize("config", ["lidar_ovseg.yaml", "camera_occupancy.yaml"])
def test_shipped_params_files_declare_the_vocabulary(ros, repo_root, config):
    """`vocabulary: []` in a params file (what ros2 launch and `--params-file` pass) reaches
    rclpy unset, and an empty list override is re-typed BYTE_ARRAY by rclpy: the node refused to
    start on a ROS install. The parameters must declare as an empty STRING_ARRAY."""
    from rclpy.parameter import Parameter

    from lidar_ovseg_ros.nodes.common import VocabularyParameters

    path = repo_root / "config" / config
    node = ros.make_node("params_file_probe", cli_args=["--ros-args", "--params-file", str(path)])
    VocabularyParameters(node)
    vocabulary = node.get_parameter("vocabulary")
    assert vocabulary.type_ == Parameter.Type.STRING_ARRAY and list(vocabulary.value) == []
    assert node.get_parameter("vocabulary_file").value == "nuscenes"
