"""The launch files run for real where `launch` and `launch_ros` are installed (a ROS 2 install;
skipped in the PyPI venv). The package is installed into a temporary ament prefix (share files
by setup.py, console-script wrappers in lib/lidar_ovseg_ros as colcon puts them), then each
launch file runs in a LaunchService child process and must end by itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("launch")
pytest.importorskip("launch_ros")

pytestmark = pytest.mark.ros

RUNNER = """
import sys
from launch import LaunchDescription, LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
path, *args = sys.argv[1:]
service = LaunchService(argv=args)
arguments = [a.split(":=", 1) for a in args]
source = PythonLaunchDescriptionSource(path)
service.include_launch_description(
    LaunchDescription([IncludeLaunchDescription(source, launch_arguments=arguments)])
)
print("LAUNCH EXIT", service.run(), flush=True)
"""

SCRIPTS = {
    "lidar_ovseg_node": "lidar_ovseg_ros.nodes.lidar_ovseg_node",
    "camera_occupancy_node": "lidar_ovseg_ros.nodes.camera_occupancy_node",
    "lidar-ovseg": "lidar_ovseg_ros.cli",
}


@pytest.fixture(scope="module")
def prefix(tmp_path_factory, repo_root) -> Path:
    root = tmp_path_factory.mktemp("ament_prefix")
    subprocess.run(
        [sys.executable, "setup.py", "-q", "install_data", "--install-dir", str(root)],
        cwd=repo_root,
        check=True,
        capture_output=True,
    )
    lib = root / "lib" / "lidar_ovseg_ros"
    lib.mkdir(parents=True)
    for name, module in SCRIPTS.items():
        script = lib / name
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m {module} "$@"\n')
        script.chmod(0o755)
    return root


def _launch(prefix: Path, repo_root: Path, name: str, *args: str, timeout: float = 120):
    env = dict(os.environ)
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(
        p for p in (str(prefix), env.get("AMENT_PREFIX_PATH", "")) if p
    )
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo_root), env.get("PYTHONPATH", "")) if p)
    path = prefix / "share" / "lidar_ovseg_ros" / "launch" / name
    res = subprocess.run(
        [sys.executable, "-c", RUNNER, str(path), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return res.stdout + res.stderr


def test_rviz_requested_but_missing_stops_before_anything_starts(prefix, repo_root):
    from lidar_ovseg_ros.launch_support import package_installed

    if package_installed("rviz2"):
        pytest.skip("rviz2 is installed here")
    out = _launch(prefix, repo_root, "lidar_ovseg.launch.py", "rviz:=true", timeout=60)
    assert "rviz:=true needs RViz" in out and "ros-$ROS_DISTRO-rviz2" in out, out
    assert "process started" not in out, out  # no orphan: nothing was started
    assert "LAUNCH EXIT" in out


def test_the_launch_ends_when_the_node_exits(prefix, repo_root, tmp_path):
    missing = tmp_path / "no_such_checkpoint.pth"  # start-up error: the node exits 1
    out = _launch(
        prefix, repo_root, "lidar_ovseg.launch.py", "profile:=full", f"checkpoint:={missing}"
    )
    assert "process[lidar_ovseg_node-1] was required: shutting down launched system" in out, out
    assert "LAUNCH EXIT" in out


def test_replay_with_the_packages_player_ends_when_the_bag_is_played(prefix, repo_root, tmp_path):
    from lidar_ovseg_ros.bags import write_demo_bag

    bag = tmp_path / "bag"
    write_demo_bag(bag, repeats=2, rate_hz=10.0, cameras=False)
    args = [f"bag:={bag}", "player:=lidar_ovseg", "delay:=0.0", "rate:=4.0"]
    out = _launch(prefix, repo_root, "replay.launch.py", *args)
    # lib/lidar_ovseg_ros/lidar-ovseg ran (not a PATH lookup), played the bag and ended the launch.
    assert "published 2 messages" in out, out
    assert "process[lidar-ovseg-1] was required: shutting down launched system" in out, out
    assert "LAUNCH EXIT" in out
