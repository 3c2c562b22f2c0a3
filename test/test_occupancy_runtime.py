"""Node-side occupancy runtime: profiles, official sub-names, atomic vocabulary swap."""

import numpy as np
import pytest

from lidar_ovseg_ros.models.checkpoints import CheckpointNotFoundError
from lidar_ovseg_ros.occupancy.runtime import SwitchableOccupancy, build_predictor, class_queries
from lidar_ovseg_ros.occupancy.text_queries import nuscenes16_vocabulary
from lidar_ovseg_ros.vocabulary import Vocabulary, load_preset


def test_preset_uses_pop3d_official_sub_names_and_free_classes_their_prompts():
    official = dict(nuscenes16_vocabulary())
    queries = dict(class_queries(load_preset("nuscenes")))
    assert queries == {name: list(subs) for name, subs in official.items()}
    mixed = dict(class_queries(Vocabulary.from_names(["car", "fire hydrant"])))
    assert mixed["car"] == list(official["car"])
    assert mixed["fire hydrant"] == ["fire hydrant"]


def test_full_profile_names_missing_weights_before_loading_clip(tmp_path):
    missing = tmp_path / "pop3d_weights.pth"
    with pytest.raises(CheckpointNotFoundError, match=str(missing)):
        build_predictor("full", weights=str(missing), clip_model="/nonexistent/clip")
    with pytest.raises(ValueError, match="profile"):
        build_predictor("medium")


def test_prediction_uses_the_vocabulary_active_when_it_started(nuscenes_frame):
    model = SwitchableOccupancy(build_predictor("tiny", seed=0))
    images = {n: c.load_image() for n, c in nuscenes_frame.cameras.items()}
    calibs = dict(nuscenes_frame.cameras)
    first = model.prepare_vocabulary(Vocabulary.from_names(["car", "road"]))
    second = model.prepare_vocabulary(Vocabulary.from_names(["tree", "building", "person"]))
    model.activate(first)
    result, used = model.predict(images, calibs)
    assert used is first and result.num_occupied > 0
    assert set(np.unique(result.labels)) <= {0, 1}
    model.activate(second)
    result2, used2 = model.predict(images, calibs)
    assert used2 is second and set(np.unique(result2.labels)) <= {0, 1, 2}
    # Same network, same voxels: only the vocabulary changed.
    np.testing.assert_array_equal(result.indices, result2.indices)
