"""Legend image for RViz."""

import numpy as np

from lidar_ovseg_ros.legend import ROW_HEIGHT, render_legend
from lidar_ovseg_ros.vocabulary import NO_CLASS_COLOR, load_preset


def test_legend_has_a_row_and_swatch_per_class():
    vocab = load_preset("nuscenes")
    img = render_legend(vocab, title="nuscenes", counts={3: 120})
    assert img.dtype == np.uint8 and img.shape[2] == 3
    assert img.shape[0] >= ROW_HEIGHT * (len(vocab) + 2)
    colours = {tuple(c) for c in img.reshape(-1, 3).tolist()}
    for cls in vocab.classes:
        assert cls.color in colours
    assert NO_CLASS_COLOR in colours
