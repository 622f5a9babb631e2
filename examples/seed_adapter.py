"""A complete third-party adapter: a seed-notebook-style NumPy BatchNorm checked by the whole suite.

    pytest conformance --impl examples.seed_adapter:IMPLEMENTATIONS
"""

import numpy as np

from conformance.adapters.base import Capabilities, Implementation, LayerSpec, State
from reference import ONNX

# The state's fields this layer keeps: its parameters and running averages (the ONNX convention has no counter).
FIELDS = ("gamma", "beta", "running_mean", "running_var")


class SeedBatchNorm:
    """The notebooks' layer for (batch, features) input: momentum weights the old value, biased variance."""

    def __init__(self, dim, momentum=0.9, eps=1e-5):
        self.gamma, self.beta = np.ones(dim), np.zeros(dim)
        self.running_mean, self.running_var = np.zeros(dim), np.ones(dim)
        self.momentum, self.eps = momentum, eps

    def forward(self, x, training=True):
        if training:
            mean, var = x.mean(axis=0), x.var(axis=0)
            self.running_mean = self.momentum * self.running_mean + (1 - self.momentum) * mean
            self.running_var = self.momentum * self.running_var + (1 - self.momentum) * var
        else:
            mean, var = self.running_mean, self.running_var
        self.inv_std, self.training = 1 / np.sqrt(var + self.eps), training
        self.x_hat = (x - mean) * self.inv_std
        return self.gamma * self.x_hat + self.beta

    def backward(self, dy):
        self.dgamma, self.dbeta = (dy * self.x_hat).sum(axis=0), dy.sum(axis=0)
        if not self.training:
            return dy * self.gamma * self.inv_std
        n = dy.shape[0]
        return self.gamma * self.inv_std * (dy - self.dbeta / n - self.x_hat * self.dgamma / n)


class SeedLayer:
    def __init__(self, spec: LayerSpec):
        self.bn = SeedBatchNorm(spec.num_features, spec.momentum, spec.eps)

    def set_state(self, state: State) -> None:
        for name in FIELDS:
            if state.get(name) is not None:
                setattr(self.bn, name, np.array(state[name]))

    def get_state(self) -> State:
        return State(**{name: np.array(getattr(self.bn, name)) for name in FIELDS})  # copies: the caller owns them

    def forward(self, x, training):
        return self.bn.forward(np.asarray(x, dtype=np.float64), training)

    def forward_backward(self, x, dy, training):
        y = self.forward(x, training)
        return y, self.bn.backward(np.asarray(dy, dtype=np.float64)), self.bn.dgamma, self.bn.dbeta


class SeedImplementation(Implementation):
    name = "seed.numpy"
    family = "seed"
    framework = "numpy"
    convention = ONNX  # momentum 0.9 on the old value, biased running variance, eps 1e-5, channels at axis 1
    isolated = False
    capabilities = Capabilities(dtypes=frozenset({"float64", "float32"}), ranks=frozenset({2}),
                                channel_axes=frozenset({1, -1}),
                                features=frozenset())

    def environment(self):
        return {"version": np.__version__}

    def defaults(self):
        return {"momentum": 0.9, "eps": 1e-5, "channel_axis": 1}

    def build(self, spec):
        return SeedLayer(spec)


IMPLEMENTATIONS = [SeedImplementation()]
