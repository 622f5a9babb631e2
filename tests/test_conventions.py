"""Convention records: the five built-ins agree with the conventions table measured in shared/NOTES.md; a record
is validated on construction (each invalid field raises, naming it); a default a framework lacks is
:data:`reference.REQUIRED`, which the layer then demands and which survives pickling (worker processes)."""

import pickle
from dataclasses import replace

import pytest

import reference
from reference import CONVENTIONS, REQUIRED, BatchNorm, Convention, get_convention

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
    built_ins = [reference.TORCH, reference.KERAS, reference.TF_KERAS_FUSED, reference.ONNX, reference.FLAX]
    assert built_ins == list(CONVENTIONS.values())


@pytest.mark.parametrize("name", sorted(NOTES_TABLE))
def test_convention_matches_the_table(name):
    momentum, weights, eps, unbiased, axis = NOTES_TABLE[name]
    conv = CONVENTIONS[name]
    assert conv.name == name
    held = (conv.default_momentum, conv.momentum_weights, conv.default_eps, conv.running_var_ddof, conv.channel_axis)
    assert held == (momentum, weights, eps, int(unbiased), axis)
    # Only PyTorch has momentum=None (cumulative average), and with it a batch counter.
    assert conv.cumulative_momentum == (name == "torch")
    assert conv.counter == ("num_batches_tracked" if name == "torch" else None)
    # No built-in debiases its averages or averages the standard deviation.
    assert (conv.debiased, conv.averaged_spread, conv.spread_field) == (False, "var", "running_var")
    counter = ("num_batches_tracked",) if name == "torch" else ()
    assert conv.running_fields == ("running_mean", "running_var", *counter)
    assert conv.defaults() == {"momentum": momentum, "eps": eps, "channel_axis": axis}
    assert get_convention(name) is conv and get_convention(conv) is conv


@pytest.mark.parametrize("name", sorted(NOTES_TABLE))
def test_layer_takes_the_convention_defaults(name):
    momentum, _, eps, _, axis = NOTES_TABLE[name]
    layer = BatchNorm(4, convention=name)
    assert (layer.momentum, layer.eps, layer.channel_axis, layer.convention) == (momentum, eps, axis, CONVENTIONS[name])


@pytest.mark.parametrize("name", sorted(NOTES_TABLE))
def test_new_batch_weight_follows_the_rule(name):
    # "new": momentum is the weight of the batch; "old": momentum is the weight of the running value.
    _, weights, *_ = NOTES_TABLE[name]
    conv = CONVENTIONS[name]
    assert conv.new_batch_weight(0.25, 1) == (0.25 if weights == "new" else 0.75)
    assert conv.momentum_for(conv.new_batch_weight(0.25, 1)) == 0.25  # and back
    assert conv.new_batch_weight(None, 4) == 0.25  # the cumulative average: 1 / counter
    assert conv.momentum_for(None) is None


def test_custom_convention_object_is_accepted():
    # A Convention instance works wherever a name does (e.g. for a framework not in the registry).
    custom = Convention("custom", "new", 0.5, 1e-4, 1, frameworks="test")
    layer = BatchNorm(2, convention=custom)
    assert (layer.convention, layer.momentum, layer.eps, layer.channel_axis) == (custom, 0.5, 1e-4, 1)
    assert custom.running_fields == ("running_mean", "running_var") and layer.state_fields == (
        "gamma", "beta", "running_mean", "running_var")


# ---- validation ----------------------------------------------------------------------------------

VALID = {"name": "mine", "momentum_weights": "old", "default_momentum": 0.9, "default_eps": 1e-5, "channel_axis": -1}
# field changes -> (exception, text the message must contain: the field, and the record where it is known)
INVALID = {
    "name not an identifier": ({"name": "my conv"}, ValueError, "convention name must be an identifier"),
    "name not a string": ({"name": 3}, ValueError, "convention name must be an identifier, got 3"),
    "momentum_weights": ({"momentum_weights": "both"}, ValueError, "mine: momentum_weights must be 'new' or 'old'"),
    "cumulative_momentum not a bool": ({"cumulative_momentum": 1}, TypeError,
                                       "mine: cumulative_momentum must be a bool"),
    "debiased not a bool": ({"debiased": "yes"}, TypeError, "mine: debiased must be a bool"),
    "running_var_ddof 2": ({"running_var_ddof": 2}, ValueError, "mine: running_var_ddof must be 0 (biased) or 1"),
    "running_var_ddof a bool": ({"running_var_ddof": True}, ValueError, "mine: running_var_ddof must be 0"),
    "averaged_spread": ({"averaged_spread": "mad"}, ValueError, "mine: averaged_spread must be 'var' or 'std'"),
    "counter not an identifier": ({"counter": "2 steps"}, ValueError, "mine: counter must be an identifier"),
    "counter not a string": ({"counter": 3}, ValueError, "mine: counter must be an identifier"),
    "counter a state field": ({"counter": "running_var"}, ValueError, "mine: counter must be an identifier other than"),
    "counter a hyperparameter": ({"counter": "momentum"}, ValueError, "mine: counter must be an identifier other than"),
    "cumulative without a counter": ({"cumulative_momentum": True, "momentum_weights": "new"}, ValueError,
                                     "mine: cumulative_momentum needs a counter"),
    "debiased without a counter": ({"debiased": True}, ValueError, "mine: debiased needs a counter"),
    "debiased and cumulative": ({"debiased": True, "cumulative_momentum": True, "counter": "t"}, ValueError,
                                "debiased and cumulative_momentum exclude each other"),
    "default_momentum above 1": ({"default_momentum": 1.5}, ValueError, "mine: default_momentum: momentum must lie in"),
    "default_momentum a string": ({"default_momentum": "0.9"}, TypeError,
                                  "mine: default_momentum: momentum must be a real number"),
    "default_momentum None, no cumulative average": ({"default_momentum": None}, ValueError,
                                                     "mine: default_momentum: momentum=None (cumulative average)"),
    "debiased default_momentum giving no weight": (
        {"debiased": True, "counter": "t", "default_momentum": 1.0}, ValueError,
        "mine: default_momentum: momentum 1.0 gives the new batch no weight"),
    "default_eps negative": ({"default_eps": -1e-5}, ValueError, "mine: default_eps: eps must be finite"),
    "default_eps NaN": ({"default_eps": float("nan")}, ValueError, "mine: default_eps: eps must be finite"),
    "default_eps a string": ({"default_eps": "1e-5"}, TypeError, "mine: default_eps: eps must be a real number"),
    "channel_axis a float": ({"channel_axis": 1.0}, TypeError, "mine: channel_axis must be an integer or REQUIRED"),
    "channel_axis a bool": ({"channel_axis": True}, TypeError, "mine: channel_axis must be an integer or REQUIRED"),
    "frameworks not a string": ({"frameworks": ["jax"]}, TypeError, "mine: frameworks must be a string"),
}


@pytest.mark.parametrize("changes, exception, text", INVALID.values(), ids=INVALID.keys())
def test_an_invalid_field_raises_naming_it(changes, exception, text):
    with pytest.raises(exception) as raised:
        Convention(**VALID | changes)
    assert text in str(raised.value)


def test_the_valid_base_record_is_valid():
    # Guards the test above: each of its failures comes from its one change.
    assert Convention(**VALID).defaults() == {"momentum": 0.9, "eps": 1e-5, "channel_axis": -1}


def test_a_record_is_immutable_and_compared_by_value():
    conv = Convention(**VALID)
    with pytest.raises(AttributeError):
        conv.momentum_weights = "new"
    assert conv == Convention(**VALID) and conv != replace(conv, running_var_ddof=1)
    assert len({conv, Convention(**VALID)}) == 1


@pytest.mark.parametrize("value", ["caffe", 3, None])
def test_unknown_convention_names_the_built_ins(value):
    with pytest.raises((ValueError, TypeError)) as raised:
        get_convention(value)
    text = str(raised.value)
    assert ("unknown convention 'caffe'; built-in conventions: flax, keras, onnx, tf_keras_fused, torch" in text
            if isinstance(value, str) else "convention must be a name or a Convention" in text)


# ---- REQUIRED ------------------------------------------------------------------------------------

NO_DEFAULTS = Convention("no_defaults", "old", REQUIRED, REQUIRED, REQUIRED)


def test_required_defaults_are_reported_as_such():
    assert NO_DEFAULTS.defaults() == {"momentum": REQUIRED, "eps": REQUIRED, "channel_axis": REQUIRED}
    # The report's plain data says "required", never None (None is the cumulative average).
    plain = NO_DEFAULTS.as_dict()
    assert (plain["default_momentum"], plain["default_eps"], plain["channel_axis"]) == ("required",) * 3
    assert reference.TORCH.as_dict()["default_momentum"] == 0.1 and repr(REQUIRED) == "REQUIRED"


@pytest.mark.parametrize("missing", ["momentum", "eps", "channel_axis"])
def test_the_layer_demands_what_the_record_has_no_default_for(missing):
    given = {"momentum": 0.9, "eps": 1e-3, "channel_axis": 1}
    with pytest.raises(TypeError, match=rf"the 'no_defaults' convention has no default for {missing}: pass it"):
        BatchNorm(3, convention=NO_DEFAULTS, **{k: v for k, v in given.items() if k != missing})
    layer = BatchNorm(3, convention=NO_DEFAULTS, **given)
    assert (layer.momentum, layer.eps, layer.channel_axis) == (0.9, 1e-3, 1)


def test_required_and_records_survive_pickling():
    # Worker processes receive records (and specs) pickled: REQUIRED must stay the one marker.
    assert pickle.loads(pickle.dumps(REQUIRED)) is REQUIRED
    assert pickle.loads(pickle.dumps(NO_DEFAULTS)) == NO_DEFAULTS
    assert pickle.loads(pickle.dumps(NO_DEFAULTS)).default_momentum is REQUIRED
