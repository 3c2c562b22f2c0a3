"""The launch files and their helper (lidar_ovseg_ros.launch_support).

`launch`/`launch_ros` are not installable here, so the launch files are checked as source (they
compile, declare their arguments, stop the launch when a process exits) and the decisions they
delegate to launch_support are exercised directly, including against the real CLI parser.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from lidar_ovseg_ros.launch_support import (
    BAG_LIDAR_TOPIC,
    DDS_PROFILES,
    TOOLS,
    dds_environment,
    is_true,
    missing_tools,
    package_installed,
    player_command,
)

LAUNCH_FILES = sorted(
    p.name for p in (Path(__file__).resolve().parents[1] / "launch").glob("*.launch.py")
)


def _tree(repo_root: Path, name: str) -> ast.Module:
    path = repo_root / "launch" / name
    source = path.read_text()
    compile(source, str(path), "exec")
    return ast.parse(source)


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None)) == name
    ]


def _keywords(call: ast.Call) -> dict[str, ast.expr]:
    return {k.arg: k.value for k in call.keywords}


# -- launch_support --------------------------------------------------------------------------


def test_dds_environment_defaults_to_the_shipped_profiles(repo_root):
    env = dds_environment(repo_root, "auto", environ={})
    assert Path(env["FASTRTPS_DEFAULT_PROFILES_FILE"]).is_file()
    assert env["CYCLONEDDS_URI"].startswith("file://")
    assert Path(env["CYCLONEDDS_URI"].removeprefix("file://")).is_file()
    assert set(env) == set(DDS_PROFILES)


def test_dds_environment_keeps_the_users_profile_and_can_be_turned_off(repo_root):
    mine = {"FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/my_fastdds.xml"}
    assert set(dds_environment(repo_root, "auto", environ=mine)) == {"CYCLONEDDS_URI"}
    assert dds_environment(repo_root, "none", environ={}) == {}
    with pytest.raises(ValueError, match="dds_profile:=always"):
        dds_environment(repo_root, "always", environ={})


def test_player_commands():
    ros2 = player_command("rosbag2", "/bags/run", rate="0.5", delay="2.0", loop=True)
    head = ["ros2", "bag", "play", "/bags/run", "--clock"]
    assert ros2.cmd == [*head, "--rate", "0.5", "--delay", "2.0", "--loop"]
    ours = player_command("lidar_ovseg", "/bags/run", topic="/velodyne_points")
    # A Node in lib/lidar_ovseg_ros (what colcon installs), never a bare 'lidar-ovseg' on PATH.
    assert (ours.package, ours.executable, ours.cmd) == ("lidar_ovseg_ros", "lidar-ovseg", [])
    assert ours.arguments[:2] == ["replay", "/bags/run"]
    assert ours.arguments[-2:] == ["--remap", f"{BAG_LIDAR_TOPIC}:=/velodyne_points"]
    with pytest.raises(ValueError, match="player:=vlc"):
        player_command("vlc", "/bags/run")
    with pytest.raises(ValueError, match="bag:= is required"):
        player_command("rosbag2", "")


def test_lidar_ovseg_player_arguments_parse_with_the_real_cli():
    from lidar_ovseg_ros.cli import build_parser

    ours = player_command("lidar_ovseg", "/bags/run", rate="2", delay="1", loop=True, topic="/x")
    args = build_parser().parse_args(ours.arguments)
    assert (args.bag, args.rate, args.delay, args.loop, args.clock) == (
        "/bags/run",
        2.0,
        1.0,
        True,
        True,
    )
    assert args.remap == [f"{BAG_LIDAR_TOPIC}:=/x"]


def test_missing_tools_say_what_to_install():
    assert package_installed("no_such_package_of_lidar_ovseg") is False
    assert missing_tools(["rviz2"], installed=lambda p: True) == []
    (rviz,) = missing_tools(["rviz2"], installed=lambda p: False)
    assert "rviz:=true" in rviz and "ros-$ROS_DISTRO-rviz2" in rviz
    (bag,) = missing_tools(["ros2bag"], installed=lambda p: False)
    assert "player:=lidar_ovseg" in bag
    assert set(TOOLS) == {"rviz2", "ros2bag"}
    assert is_true("True") and is_true("1") and not is_true("false") and not is_true("")


# -- the launch files as source ----------------------------------------------------------------


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_every_started_process_ends_the_launch_when_it_exits(repo_root, name):
    """A node that dies (or RViz closed, or the player done) must not leave the others running."""
    tree = _tree(repo_root, name)
    started = _calls(tree, "Node") + _calls(tree, "ExecuteProcess")
    assert started
    for call in started:
        on_exit = _keywords(call).get("on_exit")
        assert on_exit is not None, ast.unparse(call)[:120]
        assert "Shutdown" in ast.unparse(on_exit) or ast.unparse(on_exit) == "done"
    assert not _calls(tree, "IfCondition")  # processes start from checked code, not conditions


def _tools(name: str) -> list[str]:
    """The optional tools a launch file can start: RViz, or ros2 bag for the replay."""
    text = (Path(__file__).resolve().parents[1] / "launch" / name).read_text()
    return [
        t for t, needle in (("rviz2", '"rviz2"'), ("ros2bag", "player_command")) if needle in text
    ]


@pytest.mark.parametrize(("name", "tool"), [(n, t) for n in LAUNCH_FILES for t in _tools(n)])
def test_optional_tools_are_checked_before_anything_starts(repo_root, name, tool):
    tree = _tree(repo_root, name)
    (check,) = _calls(tree, "missing_tools")
    assert tool in ast.unparse(check)
    function = next(
        n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and check in ast.walk(n)
    )
    # The check comes before the first process in the same function, and a problem shuts down.
    first_start = min(
        c.lineno for c in _calls(function, "Node") + _calls(function, "ExecuteProcess")
    )
    assert check.lineno < first_start
    assert _calls(function, "Shutdown") and "error" in ast.unparse(function)


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_launch_files_apply_the_dds_profile(repo_root, name):
    tree = _tree(repo_root, name)
    declared = [c.args[0].value for c in _calls(tree, "DeclareLaunchArgument")]
    assert "dds_profile" in declared
    assert _calls(tree, "dds_environment") and _calls(tree, "SetEnvironmentVariable")


def test_no_launch_file_runs_a_console_script_from_path(repo_root):
    for name in LAUNCH_FILES:
        text = (repo_root / "launch" / name).read_text()
        assert not re.search(r"cmd=\[\s*['\"]lidar-ovseg", text), name
    setup = (repo_root / "setup.py").read_text()
    assert '"lidar-ovseg = lidar_ovseg_ros.cli:main"' in setup  # the executable the Node runs


def test_replay_launch_file_declares_its_arguments(repo_root):
    tree = _tree(repo_root, "replay.launch.py")
    declared = [c.args[0].value for c in _calls(tree, "DeclareLaunchArgument")]
    assert declared == ["bag", "rate", "loop", "delay", "input_topic", "player", "dds_profile"]
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)}
    assert {"lidar_ovseg.launch.py", "use_sim_time"} <= strings
    (include,) = _calls(tree, "IncludeLaunchDescription")
    launch_args = ast.unparse(include)
    assert "'use_sim_time': 'true'" in launch_args
    assert "'input_topic': LaunchConfiguration('input_topic')" in launch_args
    # Every LaunchConfiguration it reads is declared.
    used = {c.args[0].value for c in _calls(tree, "LaunchConfiguration")}
    assert used <= set(declared)
    # The included pipeline launch file declares the arguments passed to it.
    pipeline = _tree(repo_root, "lidar_ovseg.launch.py")
    pipeline_args = {c.args[0].value for c in _calls(pipeline, "DeclareLaunchArgument")}
    assert {"use_sim_time", "input_topic", "dds_profile"} <= pipeline_args
