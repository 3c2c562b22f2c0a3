"""Shared fixtures: DDS isolation for real rclpy nodes, and the bundled frames.

Every test session gets its own ROS_DOMAIN_ID, LOCALHOST-only discovery and a temporary
ROS_LOG_DIR, set before rclpy is initialised anywhere, so tests never see (or disturb) other ROS
programs on the machine. Child processes started by tests inherit the same environment.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Models fetched on this machine (`lidar-ovseg weights`) must not change what tests see.
os.environ["LIDAR_OVSEG_CACHE"] = tempfile.mkdtemp(prefix="lidar_ovseg_models_")

_LOG_DIR = tempfile.mkdtemp(prefix="lidar_ovseg_roslog_")


def _pick_domain_id() -> int:
    # 1..100 stays inside the port range every Linux host allows; the pid spreads parallel runs.
    return 1 + (os.getpid() * 7919) % 100


def ros_isolation_env(domain_id: int | None = None) -> dict[str, str]:
    """The environment variables that isolate DDS traffic for this test session."""
    return {
        "ROS_DOMAIN_ID": str(domain_id if domain_id is not None else _pick_domain_id()),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "ROS_LOG_DIR": _LOG_DIR,
        "RCUTILS_LOGGING_BUFFERED_STREAM": "0",
    }


if "LIDAR_OVSEG_TEST_DOMAIN" not in os.environ:
    os.environ["LIDAR_OVSEG_TEST_DOMAIN"] = str(_pick_domain_id())
os.environ.update(ros_isolation_env(int(os.environ["LIDAR_OVSEG_TEST_DOMAIN"])))

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine: one intra-op thread avoids oversubscription
    stalls (10x slower under load). Modules opt in with
    `pytestmark = pytest.mark.usefixtures("one_torch_thread")`; restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def nuscenes_frame():
    from lidar_ovseg_ros.frames import load_nuscenes_frame

    return load_nuscenes_frame()


@pytest.fixture(scope="session")
def kitti_frame():
    from lidar_ovseg_ros.frames import load_kitti_frame

    return load_kitti_frame()


class RosHarness:
    """An initialised rclpy context with a multi-threaded executor spinning in a thread."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import MultiThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self._nodes: list = []
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        with contextlib.suppress(ExternalShutdownException, KeyboardInterrupt):
            self.executor.spin()

    def add_node(self, node):
        self.executor.add_node(node)
        self._nodes.append(node)
        return node

    def make_node(self, name: str, **kwargs):
        from rclpy.node import Node

        return self.add_node(Node(name, context=self.context, **kwargs))

    def remove_node(self, node) -> None:
        self.executor.remove_node(node)
        self._nodes.remove(node)
        node.destroy_node()

    def shutdown(self) -> None:
        import rclpy

        for node in list(self._nodes):
            self.executor.remove_node(node)
            node.destroy_node()
        self._nodes.clear()
        self.executor.shutdown(timeout_sec=2.0)
        if self.context.ok():
            rclpy.shutdown(context=self.context)
        self._thread.join(timeout=5.0)


@pytest.fixture
def ros() -> Iterator[RosHarness]:
    """A fresh rclpy context + spinning executor; every node added to it is torn down after."""
    harness = RosHarness()
    try:
        yield harness
    finally:
        harness.shutdown()


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, period: float = 0.02) -> bool:
    """Poll until `predicate()` is true or `timeout` seconds pass; returns the last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return bool(predicate())


@pytest.fixture
def node_process(tmp_path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start a node in a child process (same DDS isolation); SIGINT it at teardown.

    The fixture asserts that every child exits cleanly on SIGINT, without a traceback.
    """
    procs: list[tuple[subprocess.Popen, Path]] = []

    def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = tmp_path / f"proc{len(procs)}.log"
        full_env = dict(os.environ)
        full_env.update(env or {})
        proc = subprocess.Popen(
            [sys.executable, *args],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=REPO_ROOT,
        )
        procs.append((proc, log))
        return proc

    yield start

    problems = []
    for proc, log in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                problems.append(f"{proc.args} ignored SIGINT")
        text = log.read_text()
        if "Traceback" in text:
            problems.append(f"{proc.args} printed a traceback:\n{text[-3000:]}")
        if proc.returncode not in (0, -signal.SIGINT):
            problems.append(f"{proc.args} exited with {proc.returncode}:\n{text[-3000:]}")
    assert not problems, "\n".join(problems)
