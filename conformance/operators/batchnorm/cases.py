"""BatchNorm's cases: the case record (:class:`BatchNormCase`) and which cases each check runs (:data:`GRIDS`).

A case gives the running average's rate as ``new_batch_weight``, the weight ``w`` of the batch statistic in
``run = (1 - w) * run + w * batch`` (what PyTorch calls momentum); :meth:`BatchNormCase.spec` converts it
into the implementation's own ``momentum`` (:attr:`LayerSpec.momentum`, e.g. ``1 - w`` for Keras, ONNX and
Flax), through the implementation's convention record.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reference import Convention

from ...core.case import ChannelCase, contract_grids
from ...core.dtypes import ALL_DTYPES, round_to
from ...core.profiles import profile_name
from .spec import LayerSpec

__all__ = ["FRAMEWORK_OPTIONS", "GRIDS", "LAYOUTS", "SHARDINGS", "BatchNormCase", "draw_case", "layout_cases",
           "option_cases"]

# Channels-first shapes per rank; channels-last cases move the channel axis to the end.
_SHAPES = {2: (16, 3), 3: (4, 3, 5), 4: (2, 3, 4, 5), 5: (2, 3, 2, 3, 4)}
LAYOUTS = tuple((rank, axis) for rank in _SHAPES for axis in (1, -1))


@dataclass(frozen=True)
class BatchNormCase(ChannelCase):
    """One run except the implementation: shape, channel position, dtype, layer options, the data's
    character and the number of training steps."""

    shape: tuple[int, ...]
    channel_axis: int = 1
    dtype: str = "float32"
    eps: float = 1e-3
    new_batch_weight: float | None = 0.1  # w in run = (1 - w) run + w batch; None: cumulative, w = 1 / step
    affine: bool = True
    track_running_stats: bool = True
    trainable: bool = True
    data: str = "normal"
    steps: int = 1
    options: tuple[tuple[str, object], ...] = ()  # framework options (LayerSpec.options), sorted by name

    @property
    def num_features(self) -> int:
        return self.shape[self.channel_axis]

    @property
    def values_per_channel(self) -> int:
        return int(np.prod(self.shape)) // max(self.num_features, 1)

    @property
    def accumulation_dtype(self) -> str:
        """The precision reductions must run in: at least float32 (every framework accumulates half-precision
        input in float32), unless an option asks for the input's own (Flax's ``force_float32_reductions``)."""
        if self.dtype in ("float16", "bfloat16") and dict(self.options).get("force_float32_reductions", True):
            return "float32"
        return self.dtype

    def spec(self, convention: Convention) -> LayerSpec:
        """The layer spec, with ``new_batch_weight`` expressed as ``convention``'s own momentum."""
        return LayerSpec(
            num_features=self.num_features, rank=self.rank, channel_axis=self.channel_axis, eps=self.eps,
            momentum=convention.momentum_for(self.new_batch_weight), affine=self.affine,
            track_running_stats=self.track_running_stats, trainable=self.trainable, dtype=self.dtype,
            options=self.options,
        )

    def initial_state(self, convention: Convention) -> dict[str, np.ndarray]:
        """Non-trivial gamma, beta and running statistics (so no term vanishes by accident), in the fields of
        ``convention`` (a standard deviation where it averages that); its counter stays as built."""
        rng, c = self.rng("state"), self.num_features
        state = {}
        if self.affine:
            state |= {"gamma": rng.uniform(0.5, 1.5, c), "beta": rng.uniform(-0.5, 0.5, c)}
        if self.track_running_stats:
            mean, var = rng.uniform(-1.0, 1.0, c), rng.uniform(0.5, 2.0, c)
            state |= {"running_mean": mean, convention.spread_field: np.sqrt(var)
                      if convention.averaged_spread == "std" else var}
        return state

    def direction(self) -> dict[str, np.ndarray | None]:
        """The direction ``(vx, vgamma, vbeta)`` of the second-order checks (``None`` where there are no
        parameters); ``vx`` is rounded to the case's dtype, the parameters' components are float64 as
        parameters cross the protocol."""
        rng = self.rng("direction")
        vx = round_to(rng.standard_normal(self.shape), self.dtype)
        params = rng.standard_normal((2, self.num_features)) if self.affine else (None, None)
        return {"vx": vx, "vgamma": params[0], "vbeta": params[1]}


def _shape(rank: int, channel_axis: int, channels: int = 3) -> tuple[int, ...]:
    shape = list(_SHAPES[rank])
    shape[1] = channels
    return tuple(shape) if channel_axis == 1 else (shape[0], *shape[2:], shape[1])


def layout_cases(dtypes: tuple[str, ...] = ALL_DTYPES, **options) -> list[BatchNormCase]:
    """Every rank and channel position, for each dtype."""
    return [BatchNormCase(_shape(rank, axis), axis, dtype, **options) for rank, axis in LAYOUTS for dtype in dtypes]


# Framework options that change the numerics, each at its alternatives to the framework's default (the
# default is what every other case runs), with the dtypes where the alternative makes a difference.
# An implementation takes the ones it declares (Capabilities.options); the others skip these cases.
FRAMEWORK_OPTIONS: dict[str, tuple[tuple[object, ...], tuple[str, ...]]] = {
    # Flax: the variance as E[x^2] - E[x]^2 (default) or two-pass.
    "use_fast_variance": ((False,), ("float32", "float64")),
    # Flax linen: statistics and running averages at least float32 (default) or in the input's dtype.
    "force_float32_reductions": ((False,), ("float16", "bfloat16")),
    # Flax: parameters float32 (default) or in the input's dtype (``param_dtype``); the computation's dtype
    # inferred from input and parameters (default) or the input's (Flax's ``dtype``).
    "param_dtype": (("input",), ("float16", "bfloat16", "float64")),
    "compute_dtype": (("input",), ("float16", "bfloat16")),
}


def option_cases(**changes) -> list[BatchNormCase]:
    """Every layout with each framework option at each of its alternatives."""
    return [
        case.with_(options=((name, value),))
        for name, (values, dtypes) in FRAMEWORK_OPTIONS.items()
        for value in values
        for case in layout_cases(dtypes, **changes)
    ]


# Edge and hostile input, by name (the edge case checks run each in both modes).
EDGE_CASES = {
    "one_value_per_channel": BatchNormCase((1, 3)),
    "one_value_per_channel_4d": BatchNormCase((1, 3, 1, 1)),
    "one_value_per_channel_5d": BatchNormCase((1, 3, 1, 1, 1)),
    "batch_of_one_spatial_3d": BatchNormCase((1, 3, 5)),
    "batch_of_one_spatial_4d": BatchNormCase((1, 3, 4, 4)),
    "batch_of_one_spatial_channels_last": BatchNormCase((1, 4, 4, 3), channel_axis=-1),
    "zero_size_batch": BatchNormCase((0, 3)),
    "zero_size_batch_4d": BatchNormCase((0, 3, 2, 2)),
    "constant_channel": BatchNormCase((8, 3, 2, 2), data="constant"),
    "large_mean_offset": BatchNormCase((16, 3, 2, 2), data="offset"),
    "large_mean_offset_float64": BatchNormCase((16, 3, 2, 2), dtype="float64", data="offset"),
    "tiny_eps": BatchNormCase((8, 3, 2, 2), eps=1e-12, data="constant"),
    "huge_eps": BatchNormCase((8, 3, 2, 2), eps=1e3),
    "nan_input": BatchNormCase((8, 3, 2, 2), data="nan"),
    "inf_input": BatchNormCase((8, 3, 2, 2), data="inf"),
    "shape_3x1": BatchNormCase((3, 1)),
    "shape_2x3x1x1": BatchNormCase((2, 3, 1, 1)),
    "channels_last_2x1x1x3": BatchNormCase((2, 1, 1, 3), channel_axis=-1),
    # Where a framework offers a two-pass variance beside a one-pass default (Flax), offset data with it.
    "large_mean_offset_two_pass": BatchNormCase((16, 3, 2, 2), data="offset", options=(("use_fast_variance", False),)),
}
# The edge cases that train on one value per channel: what the conventions table reports each
# implementation doing there (every implementation supports one of these shapes).
ONE_VALUE_PER_CHANNEL = ("one_value_per_channel", "one_value_per_channel_4d", "one_value_per_channel_5d")

# The contract's layouts: channels first at ranks 2 and 4, channels last at rank 4.
CONTRACT = [BatchNormCase((6, 3)), BatchNormCase((4, 3, 2, 2)), BatchNormCase((4, 2, 2, 3), channel_axis=-1)]

# Production sizes: 2**20 values per channel of two channels at every rank and channel position (BatchNorm1d's
# (N, C) after a linear layer, (N, C, L) and (N, L, C), a (256, 2, 64, 64) batch and one 1024x1024 image with
# its channels last, volumes both ways) in float16, bfloat16 and float32, with production-scale magnitudes
# and one channel 100 spreads away (``data="large"``).
LARGE = [((2**20, 2), 1), ((256, 2, 4096), 1), ((256, 4096, 2), -1), ((256, 2, 64, 64), 1),
         ((1, 1024, 1024, 2), -1), ((16, 2, 16, 64, 64), 1), ((1, 64, 128, 128, 2), -1)]


def _production_layouts() -> list[tuple[tuple[int, ...], int]]:
    """Every layout of :data:`LARGE`, except for the mutation self-test (``BN_EXPLORATION=kill``): its verdict
    needs a check to fail a mutant, which rank 4 both ways does, and its 48 NumPy layers would spend
    minutes on the other five."""
    return LARGE[3:5] if profile_name() == "kill" else LARGE

# Synchronized BatchNorm (the shard transform, ``transforms/sharded.py``): a global batch that the transform
# splits over a world's ranks by the case's ``sharding`` option, at the sizes given here for each world size
# (the ``world_size`` option): equal shards, unequal ones, a rank holding a single sample, one sample per rank.
SHARDINGS = {
    "equal": {2: (3, 3), 4: (2, 2, 2, 2)},
    "unequal": {2: (5, 3), 4: (4, 3, 2, 3)},
    "single_sample_rank": {2: (1, 5), 4: (1, 3, 2, 2)},
    "one_sample_per_rank": {2: (1, 1), 4: (1, 1, 1, 1)},
}
_SHARDED_SPATIAL = {2: (), 4: (2, 3), 5: (2, 2, 2)}


def _sharded(layouts: list[tuple[int, str, tuple[int, ...]]], steps: int = 1, **options) -> list[BatchNormCase]:
    """Float32 cases of three channels for ``(rank, sharding, channel axes)`` at every world size. The shard
    transform runs a case listed at one channel axis at its engine's own, one listed at both at both."""
    def case(rank: int, sharding: str, world_size: int, axis: int) -> BatchNormCase:
        batch, spatial = sum(SHARDINGS[sharding][world_size]), _SHARDED_SPATIAL[rank]
        shape = (batch, 3, *spatial) if axis == 1 else (batch, *spatial, 3)
        settings = {"sharding": sharding, "world_size": world_size, **options}
        return BatchNormCase(shape, axis, steps=steps, options=tuple(sorted(settings.items())))

    return [case(rank, sharding, n, axis) for rank, sharding, axes in layouts for n in SHARDINGS[sharding]
            for axis in axes]


# Training: rank 2, 4 and 5 with equal shards (rank 4 at both channel axes), rank 4 with each other sharding.
_SHARDED_TRAINING = [(2, "equal", (1,)), (4, "equal", (1, -1)), (5, "equal", (1,))] + [
    (4, sharding, (1,)) for sharding in ("unequal", "single_sample_rank", "one_sample_per_rank")]
NEW_BATCH_WEIGHTS = (0.0, 0.1, 0.5, 1.0, None)
_LAYOUTS = layout_cases  # short, for the table below


def _gradients() -> list[BatchNormCase]:
    return (_LAYOUTS() + _LAYOUTS(("float32",), track_running_stats=False) + _LAYOUTS(("float32",), affine=False)
            + option_cases())


def _layer_options() -> list[BatchNormCase]:
    flags = ({"track_running_stats": False}, {"trainable": False}, {"affine": False})
    return [c for options in flags for c in _LAYOUTS(("float32",), steps=2, **options)] + option_cases(steps=2)


# Which cases each check runs, by check name (the check functions' names without ``test_``).
GRIDS = {
    "training_output": _LAYOUTS,
    "inference_output": _LAYOUTS,
    "inference_after_training": lambda: _LAYOUTS(steps=4),
    "running_statistics": lambda: [c for w in NEW_BATCH_WEIGHTS
                                   for c in _LAYOUTS(("float32", "float64"), new_batch_weight=w, steps=3)],
    "train_eval_train": lambda: _LAYOUTS(("float32",), steps=4),
    "layer_options": _layer_options,
    "gradients": _gradients,
    "hessian_vector_product": lambda: _LAYOUTS(("float64", "float32")) + _LAYOUTS(("float32",), affine=False),
    "state_from_construction": lambda: _LAYOUTS(steps=3) + _LAYOUTS(("float32",), new_batch_weight=None, steps=3),
    "edge_case": lambda: EDGE_CASES,
    **contract_grids(CONTRACT),
    # A layer trained three steps, ported at the inference call, then trained once more (transforms/porting.py):
    # a new-batch weight and an eps no convention has by default, so that a lost momentum or eps shows.
    "porting": lambda: _LAYOUTS(("float64", "float32"), new_batch_weight=0.3, eps=2e-3, steps=5),
    # Synchronized BatchNorm (above): three training steps, also through the framework's own training loop
    # (``model.fit``: it splits each global batch over the ranks itself, so the sharding only sizes the batch);
    # one training step with gradients; inference.
    "synchronized_training": lambda: _sharded(_SHARDED_TRAINING, steps=3) + _sharded(
        [(2, "equal", (1,)), (4, "equal", (1,)), (4, "unequal", (1,))], steps=3, training_loop="model.fit"),
    "synchronized_gradients": lambda: _sharded(_SHARDED_TRAINING),
    "synchronized_inference": lambda: _sharded([(rank, "equal", (1,)) for rank in (2, 4, 5)] + [(4, "unequal", (1,))]),
    "production_size": lambda: [BatchNormCase(shape, axis, dtype, data="large", steps=2)
                                for shape, axis in _production_layouts()
                                for dtype in ("float16", "bfloat16", "float32")],
}


def draw_case(draw, capabilities) -> BatchNormCase:
    """A random case within ``capabilities`` (Hypothesis): rank, sizes, channel position, dtype, eps,
    new-batch weight, three steps."""
    from hypothesis import strategies as st

    rank = draw(st.sampled_from(sorted(capabilities.ranks)))
    axis = draw(st.sampled_from(sorted(capabilities.channel_axes)))
    shape = [draw(st.integers(2, 6))] + [draw(st.integers(1, 4)) for _ in range(rank - 1)]
    shape[axis] = draw(st.integers(1, 5))
    return BatchNormCase(
        tuple(shape), axis, draw(st.sampled_from(sorted(capabilities.dtypes & {"float32", "float64"}))),
        eps=draw(st.sampled_from([1e-5, 1e-3, 0.1])), new_batch_weight=draw(st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0])),
        steps=3,
    )
