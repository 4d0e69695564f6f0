"""The sample schema's write and read sides agree: what a writer stores, the reader gives back."""

import numpy as np
import pytest

from mtv.data.schema import (DEPTH, METRIC_DEPTH, VIEW2_DEPTH, decode_depth, encode_inverse_depth, encode_metric_depth,
                             metric_depth, sample_inverse_depth)
from mtv.errors import SkipSample


def test_metric_depth_round_trips_to_half_a_step_and_keeps_holes():
    depth = np.array([[0.5, 1.25], [np.nan, 20.0]], np.float32)
    back = decode_depth({DEPTH: encode_metric_depth(depth, 0.001)}, {"type": "metric", "scale": 0.001})
    assert np.isnan(back[1, 0]) and np.allclose(back[~np.isnan(depth)], depth[~np.isnan(depth)], atol=0.0005)


def test_metric_depth_is_found_before_and_after_labelling_moved_it():
    depth = np.full((2, 2), 4.0, np.float32)
    entry = {"type": "metric", "scale": 0.001, "shift": 0.0}
    world = {DEPTH: encode_metric_depth(depth, 0.001), VIEW2_DEPTH: encode_metric_depth(depth / 2, 0.001)}
    assert np.allclose(metric_depth(world, {"depth": entry}), 4.0)
    assert np.allclose(metric_depth(world, {"view2_depth": entry}, view2=True), 2.0)
    png, inverse = encode_inverse_depth(1 / depth)
    labelled = {DEPTH: png, METRIC_DEPTH: world[DEPTH]}
    assert np.allclose(metric_depth(labelled, {"depth": inverse, "depth_metric": entry}), 4.0)
    # training reads inverse depth from either form
    assert np.allclose(sample_inverse_depth(world, {"depth": entry}), 0.25)
    assert np.allclose(sample_inverse_depth(labelled, {"depth": inverse}), 0.25)
    with pytest.raises(SkipSample, match="no_metric_depth"):
        metric_depth({DEPTH: png}, {"depth": inverse})
