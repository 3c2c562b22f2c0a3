"""The LiDAR node reports per-stage times on /diagnostics (real rclpy, real DDS, tiny profile)."""

from __future__ import annotations

import pytest
from conftest import RosHarness, wait_for
from rclpy.parameter import Parameter
from test_lidar_ovseg_node import Probe, cloud_msg

pytestmark = pytest.mark.ros

STAGE_KEYS = [
    "stage_decode_ms_median",
    "stage_segment_preprocess_ms_median",
    "stage_segment_knn_ms_median",
    "stage_segment_backbone_ms_median",
    "stage_segment_classifier_ms_median",
    "stage_segment_upsample_ms_median",
    "stage_segment_total_ms_median",
    "stage_encode_ms_median",
    "stage_markers_ms_median",
]


def test_diagnostics_keep_per_stage_times(tmp_path, nuscenes_frame):
    from lidar_ovseg_ros.nodes.lidar_ovseg_node import LidarOvsegNode

    harness = RosHarness()
    node = LidarOvsegNode(
        context=harness.context,
        cli_args=["--ros-args", "-r", "~/input/points:=/lidar/points"],
        parameter_overrides=[
            Parameter("profile", value="tiny"),
            Parameter("cache_dir", value=str(tmp_path)),
            Parameter("images_per_class", value=1),
            Parameter("vocabulary_file", value="nuscenes"),
            Parameter("diagnostics_period", value=0.2),
            Parameter("input_reliability", value="reliable"),
        ],
    )
    try:
        harness.add_node(node)
        probe = Probe(harness)
        assert wait_for(lambda: probe.vocabulary_state().get("state") == "active", 300)
        assert wait_for(lambda: probe.pub.get_subscription_count() > 0, 10)
        probe.publish_and_wait(cloud_msg(nuscenes_frame.points))
        assert wait_for(lambda: STAGE_KEYS[-1] in probe.latest_diag_values(), 10)
        values = probe.latest_diag_values()
        for key in STAGE_KEYS:
            assert float(values[key]) >= 0.0, key
        # the stages lie inside the frame: the segmenter's total within the processing time
        assert float(values["stage_segment_total_ms_last"]) <= float(
            values["processing_time_ms_last"]
        )
        assert float(values["stage_segment_backbone_ms_last"]) > 0.0
        assert values["preprocess_backend"] == "numpy"  # auto on a CPU-only machine
    finally:
        node.shutdown()
        harness.shutdown()
