"""A third-party adapter: tinygrad's ``nn.BatchNorm`` (tinygrad 0.14.0), checked by the conformance suite
from outside this project, as a maintainer of another framework would run it in their own CI:

    pip install batchnorm-conformance tinygrad==0.14.0
    python -m pytest --pyargs conformance.checks --impl tinygrad_adapter:IMPLEMENTATIONS \\
        --deviations deviations.toml --report out/

tinygrad follows PyTorch's conventions (momentum weights the new batch, 0.1; eps 1e-5; channels at axis
1; the stored running variance Bessel-corrected). Training mode is tinygrad's ``TRAINING`` context
variable (``Context(TRAINING=1)``), not an argument of the layer. ``DEV=PYTHON`` runs it on tinygrad's
pure-Python emulated device, without a compiler; the suite gives the worker process that environment.
"""

from __future__ import annotations

import numpy as np

from conformance.adapters.base import Capabilities, Implementation, LayerSpec, State, as_numpy_float
from reference import TORCH


class TinygradLayer:
    def __init__(self, spec: LayerSpec) -> None:
        from tinygrad import Tensor, dtypes, nn

        self.Tensor = Tensor
        self.dtype = getattr(dtypes, spec.dtype)
        self.bn = nn.BatchNorm(spec.num_features, eps=spec.eps, affine=spec.affine,
                               track_running_stats=spec.track_running_stats, momentum=spec.momentum)
        # tinygrad makes its parameters and statistics float32 whatever the input; a layer for another
        # dtype holds them in that dtype, as ``module.to(dtype)`` does in PyTorch.
        self.set_state(State(**{name: self._numpy(getattr(self.bn, attribute, None))
                                for name, attribute in _ATTRIBUTE.items()}))

    def _tensor(self, values: np.ndarray):
        # Tensor(float64 array) alone would make a float32 tensor (tinygrad's default float): the dtype is given.
        from tinygrad import dtypes

        values = as_numpy_float(np.asarray(values))  # bfloat16 arrives as float32, which holds it exactly
        given = dtypes.float64 if values.dtype == np.float64 else dtypes.float32
        return self.Tensor(values, dtype=given).cast(self.dtype)

    @staticmethod
    def _numpy(t) -> np.ndarray | None:
        from tinygrad import dtypes

        return None if t is None else t.cast(dtypes.float64).numpy()  # exact from every float dtype

    def set_state(self, state: State) -> None:
        for name, attribute in _ATTRIBUTE.items():
            value = state.get(name)
            if value is not None and getattr(self.bn, attribute, None) is not None:
                setattr(self.bn, attribute, self._tensor(value).contiguous().realize())
        tracked = state.get("num_batches_tracked")
        if tracked is not None and self.bn.track_running_stats:
            self.bn.num_batches_tracked = self.Tensor([tracked], dtype=self.bn.num_batches_tracked.dtype).realize()

    def get_state(self) -> State:
        tracked = int(self.bn.num_batches_tracked.numpy().item()) if self.bn.track_running_stats else None
        return State(**{name: self._numpy(getattr(self.bn, attribute, None)) for name, attribute in _ATTRIBUTE.items()},
                     num_batches_tracked=tracked)

    def _call(self, x, training: bool):
        from tinygrad import Context

        with Context(TRAINING=int(training)):
            return self.bn(x)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return self._numpy(self._call(self._tensor(x), training))

    def forward_backward(self, x, dy, training):
        xt = self._tensor(x)
        y = self._call(xt, training)
        params = [p for p in (self.bn.weight, self.bn.bias) if p is not None]
        dx, *dparams = y.gradient(xt, *params, gradient=self._tensor(dy))
        return self._numpy(y), self._numpy(dx), *(map(self._numpy, dparams) if dparams else (None, None))


# State's names -> tinygrad's attributes.
_ATTRIBUTE = {"gamma": "weight", "beta": "bias", "running_mean": "running_mean", "running_var": "running_var"}


class TinygradImplementation(Implementation):
    name = "tinygrad.BatchNorm"
    family = "tinygrad"
    framework = "tinygrad"
    convention = TORCH
    requires = ("tinygrad",)
    process_env = {"DEV": "PYTHON"}  # tinygrad's pure-Python device: no compiler needed
    # momentum=None (PyTorch's cumulative average) is a multiplication by None in tinygrad: not supported.
    capabilities = Capabilities(channel_axes=frozenset({1}), features=frozenset({"affine_false", "no_running_stats"}))

    def environment(self) -> dict[str, str]:
        from importlib.metadata import version

        from tinygrad import Device

        return {"version": version("tinygrad"), "device": Device.DEFAULT}  # tinygrad has no __version__

    def defaults(self) -> dict[str, float | int]:
        import inspect

        from tinygrad import nn

        params = inspect.signature(nn.BatchNorm).parameters
        return {"momentum": params["momentum"].default, "eps": params["eps"].default, "channel_axis": 1}

    def build(self, spec: LayerSpec) -> TinygradLayer:
        return TinygradLayer(spec)


IMPLEMENTATIONS = [TinygradImplementation()]
