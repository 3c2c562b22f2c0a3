"""Large clouds over DDS (issue 9 item 7): a best-effort 260k-point (8.3 MB) cloud, as a 128-beam
LiDAR sends it, is lost under the Fast DDS defaults; the node counts the loss (`messages_lost` on
/diagnostics), and with the shipped profile (config/dds/) the cloud arrives and is labeled.

The node and the publisher are separate processes, as on a vehicle (within one process Fast DDS
delivers without a transport), each with or without the profile in its environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET

import pytest
from conftest import wait_for
from diagnostic_msgs.msg import DiagnosticArray

pytestmark = pytest.mark.ros

TOPIC = "/large/points"
OUTPUT = "/lidar_ovseg_node/output/points"


def _rmw() -> str:
    return os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")


def test_profiles_are_well_formed(repo_root):
    fast = ET.parse(repo_root / "config" / "dds" / "fastdds_large_clouds.xml").getroot()
    ns = {"p": "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"}
    shm = fast.find("p:transport_descriptors/p:transport_descriptor[p:type='SHM']", ns)
    assert int(shm.findtext("p:segment_size", namespaces=ns)) >= 4 * 8_320_000  # 4 clouds
    participant = fast.find("p:participant", ns)
    assert participant.get("is_default_profile") == "true"  # applies without code changes
    used = {e.text for e in participant.iterfind("p:rtps/p:userTransports/p:transport_id", ns)}
    declared = {e.text for e in fast.iterfind(".//p:transport_descriptor/p:transport_id", ns)}
    assert used == declared
    cyclone = ET.parse(repo_root / "config" / "dds" / "cyclonedds_large_clouds.xml").getroot()
    cns = {"c": "https://cdds.io/config"}
    rcvbuf = cyclone.find("c:Domain/c:Internal/c:SocketReceiveBufferSize", cns)
    assert rcvbuf is not None and rcvbuf.get("min").endswith("MB")


@pytest.mark.skipif(_rmw() != "rmw_fastrtps_cpp", reason="the Fast DDS profile")
def test_large_best_effort_cloud_is_counted_lost_by_default_and_labeled_with_the_profile(
    ros, node_process, tmp_path, repo_root
):
    profile = {
        "FASTRTPS_DEFAULT_PROFILES_FILE": str(repo_root / "config/dds/fastdds_large_clouds.xml")
    }
    args = ["-p", "profile:=tiny", "-p", f"cache_dir:={tmp_path}", "-p", "images_per_class:=1"]
    args += ["-p", "diagnostics_period:=0.2", "-p", "input_reliability:=best_effort"]
    args += ["-p", "vocabulary:=[car, road, vegetation]"]  # three classes: a quick start-up
    node = "lidar_ovseg_ros.nodes.lidar_ovseg_node"
    node_process(
        ["-m", node, "--ros-args", *args, "-r", f"~/input/points:={TOPIC}"],
        env=profile,
    )
    lock, latest = threading.Lock(), {}

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if "messages_lost" in values:
                with lock:
                    latest.update(values)

    def value(key: str) -> str:
        with lock:
            return latest.get(key, "")

    ros.make_node("large_cloud_probe").create_subscription(
        DiagnosticArray, "/diagnostics", on_diagnostics, 10
    )
    assert wait_for(lambda: value("vocabulary_state") == "active", 300), latest

    script = repo_root / "test" / "large_cloud_peer.py"

    def peer(count: int, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(script), TOPIC, str(count), *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    # A driver under the Fast DDS defaults: its 8.3 MB clouds are lost, and the node says so.
    plain = {k: v for k, v in os.environ.items() if k != "FASTRTPS_DEFAULT_PROFILES_FILE"}
    res = peer(4, plain)
    assert res.returncode == 0, res.stdout + res.stderr
    assert wait_for(lambda: int(value("messages_lost") or 0) >= 1, 20), latest

    # The same driver with the profile: the cloud arrives and comes back labeled, every point.
    res = peer(5, {**os.environ, **profile}, "--until-labeled", OUTPUT)
    assert res.returncode == 0, res.stdout + res.stderr
    width, fields = res.stdout.split("\n")[0].split()[1:]
    assert int(width) == 260_000 and "label" in fields.split(",")
    assert wait_for(lambda: int(value("processed") or 0) >= 1, 20), latest
