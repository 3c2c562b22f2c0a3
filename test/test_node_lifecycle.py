"""Managed (lifecycle) nodes over DDS with real lifecycle_msgs services (issue 8).

`configure` loads the models, `activate` subscribes and publishes, `deactivate` stops processing
without unloading, `cleanup` frees, `shutdown` ends cleanly; `autostart:=false` waits for these
transitions, the default configures and activates at start-up (the other node tests).
"""

from __future__ import annotations

import time

import pytest
from conftest import RosHarness, wait_for
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2

pytestmark = pytest.mark.ros

NODE = "/lidar_ovseg_node"


class Lifecycle:
    """ChangeState/GetState clients of one node, called over DDS."""

    def __init__(self, harness: RosHarness, node_name: str) -> None:
        self.node = harness.make_node("h1_lifecycle_client")
        self.change = self.node.create_client(ChangeState, f"{node_name}/change_state")
        self.get = self.node.create_client(GetState, f"{node_name}/get_state")
        assert self.change.wait_for_service(20) and self.get.wait_for_service(20)

    def state(self) -> str:
        future = self.get.call_async(GetState.Request())
        assert wait_for(future.done, 20)
        return future.result().current_state.label

    def transition(self, transition_id: int, timeout: float = 300) -> bool:
        future = self.change.call_async(
            ChangeState.Request(transition=Transition(id=transition_id))
        )
        assert wait_for(future.done, timeout), f"transition {transition_id} got no answer"
        return future.result().success


def test_lidar_node_lifecycle_over_dds(tmp_path, nuscenes_frame):
    from test_lidar_ovseg_node import cloud_msg

    from lidar_ovseg_ros.nodes.lidar_ovseg_node import LidarOvsegNode

    harness = RosHarness()
    node = None
    try:
        node = LidarOvsegNode(
            context=harness.context,
            cli_args=["--ros-args", "-r", "~/input/points:=/h1_lc/points"],
            parameter_overrides=[
                Parameter("autostart", value=False),
                Parameter("cache_dir", value=str(tmp_path)),
                Parameter("images_per_class", value=1),
                Parameter("vocabulary", value=["car", "road"]),
                Parameter("input_reliability", value="reliable"),
                Parameter("diagnostics_period", value=0.2),
            ],
        )
        harness.add_node(node)
        lc = Lifecycle(harness, NODE)
        probe = harness.make_node("h1_lc_probe")
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        outputs: list[PointCloud2] = []
        probe.create_subscription(PointCloud2, f"{NODE}/output/points", outputs.append, reliable)
        pub = probe.create_publisher(PointCloud2, "/h1_lc/points", reliable)
        cloud = cloud_msg(nuscenes_frame.points[:3000])

        # Unconfigured: parameters answer, no model, no input subscription.
        assert lc.state() == "unconfigured" and not node.configured
        assert getattr(node, "segmenter", None) is None
        assert node.set_parameters([Parameter("max_points", value=400_000)])[0].successful
        # A vocabulary set while unconfigured is validated now and built by `configure`.
        assert node.set_parameters([Parameter("vocabulary", value=["car", "tree"])])[0].successful
        assert not node.set_parameters([Parameter("vocabulary", value=["a", "A"])])[0].successful

        assert lc.transition(Transition.TRANSITION_CONFIGURE)
        assert lc.state() == "inactive" and node.segmenter is not None
        model = node.segmenter
        time.sleep(0.5)
        assert pub.get_subscription_count() == 0  # inactive: not subscribed yet

        assert lc.transition(Transition.TRANSITION_ACTIVATE)
        assert lc.state() == "active"
        assert wait_for(lambda: pub.get_subscription_count() > 0, 10)
        assert wait_for(lambda: node.switcher.status().active is not None, 300)
        assert node.switcher.status().active.names == ["car", "tree"]
        pub.publish(cloud)
        assert wait_for(lambda: len(outputs) == 1, 60), "an active node labels"

        assert lc.transition(Transition.TRANSITION_DEACTIVATE)
        assert lc.state() == "inactive"
        assert wait_for(lambda: pub.get_subscription_count() == 0, 10)
        pub.publish(cloud)
        time.sleep(1.0)
        assert len(outputs) == 1, "an inactive node must not process"
        assert node.segmenter is model  # deactivate keeps the model loaded

        assert lc.transition(Transition.TRANSITION_ACTIVATE)
        assert wait_for(lambda: pub.get_subscription_count() > 0, 10)
        pub.publish(cloud)
        assert wait_for(lambda: len(outputs) == 2, 60), "labels again after re-activation"
        assert node.segmenter is model

        assert lc.transition(Transition.TRANSITION_DEACTIVATE)
        assert lc.transition(Transition.TRANSITION_CLEANUP)
        assert lc.state() == "unconfigured"
        assert node.segmenter is None and node.worker is None  # cleanup frees

        assert lc.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        assert lc.state() == "finalized" and node.closing
    finally:
        if node is not None:
            node.shutdown()
        harness.shutdown()


def test_a_failing_configure_leaves_the_node_unconfigured_and_answering(tmp_path):
    from lidar_ovseg_ros.nodes.lidar_ovseg_node import LidarOvsegNode

    harness = RosHarness()
    node = None
    try:
        node = LidarOvsegNode(
            context=harness.context,
            parameter_overrides=[
                Parameter("autostart", value=False),
                Parameter("profile", value="full"),
                Parameter("checkpoint", value=str(tmp_path / "missing.pth")),
            ],
        )
        harness.add_node(node)
        lc = Lifecycle(harness, NODE)
        assert not lc.transition(Transition.TRANSITION_CONFIGURE)
        assert lc.state() == "unconfigured"
        assert "missing.pth" in str(node._startup_error)
        assert node.set_parameters([Parameter("max_markers", value=10)])[0].successful
        assert node._state_machine.current_state[0] == State.PRIMARY_STATE_UNCONFIGURED
    finally:
        if node is not None:
            node.shutdown()
        harness.shutdown()
