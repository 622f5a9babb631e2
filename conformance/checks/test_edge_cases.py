"""Edge and hostile input, listed by name. An exception is an outcome here: the implementation agrees
when it raises where the reference raises; where it legitimately differs (one raises, the other returns
beta) the deviation registry records what it does and why."""

import pytest

from conformance.cases import Case

# inf - inf in the NaN/Inf cases is the point of those cases, not something to warn about.
pytestmark = [pytest.mark.conformance, pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")]

EDGE_CASES = {
    "one_value_per_channel": Case((1, 3)),
    "one_value_per_channel_4d": Case((1, 3, 1, 1)),
    "one_value_per_channel_5d": Case((1, 3, 1, 1, 1)),
    "batch_of_one_spatial_3d": Case((1, 3, 5)),
    "batch_of_one_spatial_4d": Case((1, 3, 4, 4)),
    "batch_of_one_spatial_channels_last": Case((1, 4, 4, 3), channel_axis=-1),
    "zero_size_batch": Case((0, 3)),
    "zero_size_batch_4d": Case((0, 3, 2, 2)),
    "constant_channel": Case((8, 3, 2, 2), data="constant"),
    "large_mean_offset": Case((16, 3, 2, 2), data="offset"),
    "large_mean_offset_float64": Case((16, 3, 2, 2), dtype="float64", data="offset"),
    "tiny_eps": Case((8, 3, 2, 2), eps=1e-12, data="constant"),
    "huge_eps": Case((8, 3, 2, 2), eps=1e3),
    "nan_input": Case((8, 3, 2, 2), data="nan"),
    "inf_input": Case((8, 3, 2, 2), data="inf"),
    "shape_3x1": Case((3, 1)),
    "shape_2x3x1x1": Case((2, 3, 1, 1)),
    "channels_last_2x1x1x3": Case((2, 1, 1, 3), channel_axis=-1),
    # Where a framework offers a two-pass variance beside a one-pass default (Flax), offset data with it.
    "large_mean_offset_two_pass": Case((16, 3, 2, 2), data="offset", options=(("use_fast_variance", False),)),
}
# What the report's conventions table shows as each implementation's behaviour on one value per channel
# in training (every implementation supports one of these shapes).
ONE_VALUE_PER_CHANNEL = ("one_value_per_channel", "one_value_per_channel_4d", "one_value_per_channel_5d")
ONE_VALUE_ROLE = pytest.mark.conformance(roles=("one_value_per_channel",))
PARAMS = [
    pytest.param(name, case, training, marks=[ONE_VALUE_ROLE] if name in ONE_VALUE_PER_CHANNEL and training else [])
    for name, case in EDGE_CASES.items() for training in (True, False)
]


@pytest.mark.parametrize(
    "name, case, training", PARAMS, ids=[f"{p.values[0]}-{'training' if p.values[2] else 'inference'}" for p in PARAMS]
)
def test_edge_case(conformance, name, case, training):
    mirror = conformance(case, edge=name, training=training)
    mirror.forward(case.batches()[0], training=training, may_raise=True)
    mirror.compare_state()
    mirror.verify()
