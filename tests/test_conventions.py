"""reference.CONVENTIONS agrees with the conventions table measured in shared/NOTES.md."""

import pytest

from reference import CONVENTIONS, BatchNorm, Convention, get_convention

# Copied from the NOTES.md table: (momentum default, which value momentum weights, eps default,
# stored running variance unbiased?, channel axis default). Keras 3 and tf-keras fused=False share a row.
NOTES_TABLE = {
    "torch": (0.1, "new", 1e-5, True, 1),  # (1-m)*run + m*batch; unbiased n/(n-1)
    "keras": (0.99, "old", 1e-3, False, -1),  # m*run + (1-m)*batch; biased
    "tf_keras_fused": (0.99, "old", 1e-3, True, -1),  # Keras rule; unbiased
    "onnx": (0.9, "old", 1e-5, False, 1),
    "flax": (0.99, "old", 1e-5, False, -1),
}


def test_the_table_covers_every_convention():
    assert set(CONVENTIONS) == set(NOTES_TABLE)


@pytest.mark.parametrize("name", sorted(NOTES_TABLE))
def test_convention_matches_the_table(name):
    momentum, weights, eps, bessel, axis = NOTES_TABLE[name]
    conv = CONVENTIONS[name]
    assert conv.name == name
    assert (conv.default_momentum, conv.momentum_weights, conv.default_eps, conv.bessel, conv.channel_axis) == (
        momentum, weights, eps, bessel, axis,
    )
    # Only PyTorch has momentum=None (cumulative average).
    assert conv.cumulative_momentum == (name == "torch")
    assert get_convention(name) is conv and get_convention(conv) is conv


@pytest.mark.parametrize("name", sorted(NOTES_TABLE))
def test_layer_takes_the_convention_defaults(name):
    momentum, _, eps, _, axis = NOTES_TABLE[name]
    layer = BatchNorm(4, convention=name)
    assert (layer.momentum, layer.eps, layer.channel_axis, layer.convention) == (momentum, eps, axis, CONVENTIONS[name])


@pytest.mark.parametrize("name", sorted(NOTES_TABLE))
def test_new_value_weight_follows_the_rule(name):
    # "new": momentum is the weight of the batch; "old": momentum is the weight of the running value.
    _, weights, *_ = NOTES_TABLE[name]
    conv = CONVENTIONS[name]
    assert conv.new_value_weight(0.25, 1) == (0.25 if weights == "new" else 0.75)


def test_custom_convention_object_is_accepted():
    # A Convention instance works wherever a name does (e.g. for a framework not in the registry).
    custom = Convention("custom", "test", "new", 0.5, 1e-4, 1, bessel=False)
    layer = BatchNorm(2, convention=custom)
    assert (layer.convention, layer.momentum, layer.eps, layer.channel_axis) == (custom, 0.5, 1e-4, 1)
