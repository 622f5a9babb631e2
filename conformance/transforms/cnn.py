"""Porting the seeds' CNN between frameworks: a recipe, and the check that the port is right.

The network (seed ``002_d4beb0fb53713479.txt``): Conv2d(3, 16, 3, padding=1, bias=False) -> BatchNorm2d
-> ReLU -> MaxPool2d(2), the same with 32 channels, then Linear(32 * 8 * 8, 10), on (N, 3, 32, 32) input.
Its weights are made once, in PyTorch's layout, and ported into each framework:

- convolution kernels: PyTorch (out, in, kh, kw) -> Keras/Flax (kh, kw, in, out);
- BatchNorm: :func:`conformance.porting.port` (momentum 0.1 -> 0.9 for the old-value conventions, eps
  1e-5 carried (Keras' default is 1e-3), channels last, running variance copied);
- the classifier: PyTorch flattens (C, H, W), a channels-last model (H, W, C), so the Linear weight's
  2048 inputs are permuted, not just transposed: the classic porting bug this example guards against.

Each framework then takes one SGD step (learning rate ``LR``, mean cross-entropy) in training mode on the
same batch, and is evaluated: the BN layers' running statistics after the step, the gradients of the BN
parameters, and the logits in inference mode must agree with PyTorch in float64.

Tolerances (derived, as ``conformance/tolerances.py`` derives the layer's): a float32 framework computes
each stage with relative rounding error at most ``SAFETY * u * sqrt(n)`` for a reduction over ``n``
terms (u = 2**-24); stages compose, so relative errors add along the network. ReLU and max pooling are
exact. Per quantity, the sum of ``sqrt(n)`` over the reductions it depends on (``REDUCTIONS``) times
``SAFETY * u`` and the float64 result's largest magnitude is its tolerance; a quantity that depends on the
step (statistics and logits after it) adds the gradients' bound times ``LR``.

Run ``python examples/port_cnn.py`` (or ``python -m conformance.cnn``) to print the comparison; each framework
runs once, in a process of its own (Keras picks its backend at import).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys

import numpy as np

N, LR, MOMENTUM, EPS = 8, 0.1, 0.1, 1e-5  # batch; PyTorch's momentum and eps
FRAMEWORKS = ("torch", "keras.tensorflow", "keras.jax", "keras.torch", "tf_keras", "flax.nnx")
SAFETY, U32 = 4.0, 2.0**-24
BN_VALUES = (N * 32 * 32, N * 16 * 16)  # values per channel each BatchNorm reduces over
# Reductions each compared quantity depends on: convolutions (27, 144 terms), the BatchNorms, the
# classifier (2048) and the loss's mean over the batch (N).
REDUCTIONS = {
    "bn1": (27, BN_VALUES[0]),
    "bn2": (27, BN_VALUES[0], 144, BN_VALUES[1]),
    "grad": (27, BN_VALUES[0], 144, BN_VALUES[1], 2048, N, 2048, BN_VALUES[1], 144, BN_VALUES[0]),
    "logits": (27, BN_VALUES[0], 144, BN_VALUES[1], 2048),
}


def weights(seed: int = 2) -> dict[str, np.ndarray]:
    """The network's parameters and statistics in PyTorch's layout (float64), and the batch."""
    rng = np.random.default_rng(seed)
    w = {"conv1": rng.standard_normal((16, 3, 3, 3)) / np.sqrt(27), "conv2": rng.standard_normal((32, 16, 3, 3)) / 12,
         "fc_w": rng.standard_normal((10, 2048)) / np.sqrt(2048), "fc_b": rng.uniform(-0.1, 0.1, 10),
         "x": rng.standard_normal((N, 3, 32, 32)), "labels": rng.integers(0, 10, N)}
    for i, c in (("1", 16), ("2", 32)):
        w |= {f"bn{i}.gamma": rng.uniform(0.5, 1.5, c), f"bn{i}.beta": rng.uniform(-0.5, 0.5, c),
              f"bn{i}.running_mean": rng.uniform(-0.1, 0.1, c), f"bn{i}.running_var": rng.uniform(0.5, 1.5, c)}
    return w


def channels_last(w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The port to a channels-last framework (Keras, tf-keras, Flax): kernels, classifier, BatchNorm."""
    from conformance.adapters.base import State
    from conformance.porting import Settings, port

    out = {"conv1": w["conv1"].transpose(2, 3, 1, 0), "conv2": w["conv2"].transpose(2, 3, 1, 0),
           # (10, C*H*W) in (C, H, W) order -> (H*W*C, 10) in (H, W, C) order
           "fc_w": w["fc_w"].reshape(10, 32, 8, 8).transpose(2, 3, 1, 0).reshape(2048, 10), "fc_b": w["fc_b"],
           "x": w["x"].transpose(0, 2, 3, 1), "labels": w["labels"]}
    for i in ("1", "2"):
        state = State(**{f: w[f"bn{i}.{f}"] for f in ("gamma", "beta", "running_mean", "running_var")})
        ported, settings = port(state, Settings("torch", MOMENTUM, EPS, 1), "keras")
        out |= {f"bn{i}.{f}": getattr(ported, f) for f in ("gamma", "beta", "running_mean", "running_var")}
        out["momentum"], out["eps"] = settings.momentum, settings.eps
    return out


# ---- one function per framework: one SGD step, then evaluation; results in PyTorch's terms ----------

def torch_model(w: dict, dtype: str = "float32"):
    """The network in PyTorch (``nn.Sequential``) holding ``w``, in training mode."""
    import torch
    from torch import nn

    dt = getattr(torch, dtype)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16, EPS, MOMENTUM), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32, EPS, MOMENTUM), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2048, 10)).to(dt)
    t = lambda a: torch.tensor(a, dtype=dt)  # noqa: E731
    with torch.no_grad():
        model[0].weight.copy_(t(w["conv1"]))
        model[4].weight.copy_(t(w["conv2"]))
        model[9].weight.copy_(t(w["fc_w"]))
        model[9].bias.copy_(t(w["fc_b"]))
        for i, bn in (("1", model[1]), ("2", model[5])):
            for field, p in (("gamma", bn.weight), ("beta", bn.bias), ("running_mean", bn.running_mean),
                             ("running_var", bn.running_var)):
                p.copy_(t(w[f"bn{i}.{field}"]))
    return model


def run_torch(w: dict, dtype: str = "float32") -> dict:
    import torch
    from torch import nn

    dt = getattr(torch, dtype)
    t = lambda a: torch.tensor(a, dtype=dt)  # noqa: E731
    model = torch_model(w, dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    model.train()
    loss = nn.functional.cross_entropy(model(t(w["x"])), torch.tensor(w["labels"]))
    loss.backward()
    grads = {f"bn{i}.d{f}": getattr(bn, p).grad.double().numpy().copy()
             for i, bn in (("1", model[1]), ("2", model[5])) for f, p in (("gamma", "weight"), ("beta", "bias"))}
    optimizer.step()
    model.eval()
    with torch.no_grad():
        logits = model(t(w["x"])).double().numpy()
    stats = {f"bn{i}.{f}": getattr(bn, f).double().numpy() for i, bn in (("1", model[1]), ("2", model[5]))
             for f in ("running_mean", "running_var")}
    return {**grads, **stats, "logits": logits}


def _keras_model(layers, w: dict):
    """The network in Keras 3 or tf-keras (``layers`` is the module's ``layers``), with ported weights."""
    bn = lambda: layers.BatchNormalization(momentum=w["momentum"], epsilon=w["eps"])  # noqa: E731
    model = [layers.Conv2D(16, 3, padding="same", use_bias=False), bn(), layers.ReLU(), layers.MaxPooling2D(2),
             layers.Conv2D(32, 3, padding="same", use_bias=False), bn(), layers.ReLU(), layers.MaxPooling2D(2),
             layers.Flatten(), layers.Dense(10)]
    x = w["x"].astype(np.float32)
    for layer in model:
        x = layer(x)  # builds each layer
    model[0].set_weights([w["conv1"]])
    model[4].set_weights([w["conv2"]])
    model[9].set_weights([w["fc_w"], w["fc_b"]])
    for i, layer in (("1", model[1]), ("2", model[5])):
        layer.set_weights([w[f"bn{i}.{f}"] for f in ("gamma", "beta", "running_mean", "running_var")])
    return model


def _keras_results(model, before: dict, logits) -> dict:
    """Gradients from the SGD step itself (``(before - after) / LR``), statistics, and logits."""
    out = {"logits": np.asarray(logits, dtype=np.float64)}
    for i, layer in (("1", model[1]), ("2", model[5])):
        gamma, beta, mean, var = (np.asarray(v, dtype=np.float64) for v in layer.get_weights())
        out |= {f"bn{i}.dgamma": (before[f"bn{i}.gamma"] - gamma) / LR,
                f"bn{i}.dbeta": (before[f"bn{i}.beta"] - beta) / LR, f"bn{i}.running_mean": mean,
                f"bn{i}.running_var": var}
    return out


def run_keras(w: dict, keras) -> dict:
    model = keras.Sequential(_keras_model(keras.layers, w))
    before = {f"bn{i}.{f}": np.asarray(v, np.float64) for i, layer in (("1", model.layers[1]), ("2", model.layers[5]))
              for f, v in zip(("gamma", "beta"), layer.get_weights()[:2])}
    model.compile(optimizer=keras.optimizers.SGD(LR),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.train_on_batch(w["x"].astype(np.float32), w["labels"])
    logits = model(w["x"].astype(np.float32), training=False)
    return _keras_results(model.layers, before, keras.ops.convert_to_numpy(logits) if hasattr(keras, "ops")
                          else np.asarray(logits))


def run_flax_nnx(w: dict) -> dict:
    import jax.numpy as jnp
    import optax
    from flax import nnx

    class CNN(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            bn = lambda c: nnx.BatchNorm(c, momentum=w["momentum"], epsilon=w["eps"], rngs=rngs)  # noqa: E731
            self.conv1 = nnx.Conv(3, 16, (3, 3), padding="SAME", use_bias=False, rngs=rngs)
            self.bn1, self.bn2 = bn(16), bn(32)
            self.conv2 = nnx.Conv(16, 32, (3, 3), padding="SAME", use_bias=False, rngs=rngs)
            self.fc = nnx.Linear(2048, 10, rngs=rngs)

        def __call__(self, x, train: bool):
            pool = lambda y: nnx.max_pool(y, (2, 2), (2, 2))  # noqa: E731
            x = pool(nnx.relu(self.bn1(self.conv1(x), use_running_average=not train)))
            x = pool(nnx.relu(self.bn2(self.conv2(x), use_running_average=not train)))
            return self.fc(x.reshape(x.shape[0], -1))

    model = CNN(nnx.Rngs(0))
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    model.conv1.kernel[...], model.conv2.kernel[...] = f32(w["conv1"]), f32(w["conv2"])
    model.fc.kernel[...], model.fc.bias[...] = f32(w["fc_w"]), f32(w["fc_b"])
    for i, bn in (("1", model.bn1), ("2", model.bn2)):
        bn.scale[...], bn.bias[...] = f32(w[f"bn{i}.gamma"]), f32(w[f"bn{i}.beta"])
        bn.mean[...], bn.var[...] = f32(w[f"bn{i}.running_mean"]), f32(w[f"bn{i}.running_var"])
    optimizer = nnx.Optimizer(model, optax.sgd(LR), wrt=nnx.Param)

    def loss(model):
        logits = model(f32(w["x"]), train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(w["labels"])).mean()

    grads = nnx.grad(loss)(model)
    optimizer.update(model, grads)
    out = {"logits": np.asarray(model(f32(w["x"]), train=False), np.float64)}
    for i in ("1", "2"):
        bn, g = getattr(model, f"bn{i}"), getattr(grads, f"bn{i}")
        out |= {f"bn{i}.dgamma": np.asarray(g.scale[...], np.float64),
                f"bn{i}.dbeta": np.asarray(g.bias[...], np.float64),
                f"bn{i}.running_mean": np.asarray(bn.mean[...], np.float64),
                f"bn{i}.running_var": np.asarray(bn.var[...], np.float64)}
    return out


def run(framework: str, w: dict) -> dict:
    """One framework's results, in PyTorch's layout (logits are (N, 10) everywhere)."""
    if framework.startswith("torch"):
        return run_torch(w, "float64" if framework == "torch.float64" else "float32")
    ported = channels_last(w)
    if framework.startswith("keras."):
        import keras

        return run_keras(ported, keras)
    if framework == "tf_keras":
        import tf_keras

        return run_keras(ported, tf_keras)
    return run_flax_nnx(ported)


def run_isolated(framework: str, w: dict) -> dict:
    """:func:`run` in a process of its own (Keras fixes its backend at import)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    if framework.startswith("keras."):
        env["KERAS_BACKEND"] = framework.partition(".")[2]
    done = subprocess.run([sys.executable, "-m", "conformance.cnn", "--worker", framework],
                          input=pickle.dumps(w), capture_output=True, env=env, check=False)
    if done.returncode:
        raise RuntimeError(f"{framework} failed:\n{done.stderr.decode()[-3000:]}")
    return pickle.loads(done.stdout)


GRADIENTS_FROM_STEP = ("keras.", "tf_keras")  # Keras has no backend-neutral gradient: read off the SGD step


def tolerance(framework: str, quantity: str, expected: np.ndarray, w: dict) -> float:
    """The derived tolerance of a float32 framework's ``quantity`` (see the module docstring). A gradient
    read off the step, ``(p - p') / LR``, adds the rounding of the two float32 parameters over ``LR``."""
    kind = "logits" if quantity == "logits" else "grad" if ".d" in quantity else quantity.partition(".")[0]
    rel = SAFETY * U32 * sum(math.sqrt(n) for n in REDUCTIONS[kind])
    step = SAFETY * U32 * sum(math.sqrt(n) for n in REDUCTIONS["grad"]) * LR if kind != "grad" else 0.0
    extraction = 0.0
    if kind == "grad" and framework.startswith(GRADIENTS_FROM_STEP):
        param = w[quantity.replace(".d", ".")]
        extraction = 2 * U32 * float(np.max(np.abs(param))) / LR
    return float((rel + step) * np.max(np.abs(expected))) + extraction


# Each framework's BatchNorm convention (``reference.CONVENTIONS``): tf-keras fuses 4D BatchNorm by default.
CONVENTION = {"torch": "torch", "torch.float64": "torch", "tf_keras": "tf_keras_fused", "flax.nnx": "flax",
              "keras.tensorflow": "keras", "keras.jax": "keras", "keras.torch": "keras"}


def expected_in(framework: str, expected: dict, w: dict) -> dict:
    """PyTorch's float64 results as ``framework``'s convention has them: a biased convention stores the
    biased batch variance in its running variance where PyTorch stores ``var * n / (n - 1)``."""
    from reference import CONVENTIONS

    if CONVENTIONS[CONVENTION[framework]].bessel:
        return expected
    out = dict(expected)
    for i, n in zip(("1", "2"), BN_VALUES):
        start = (1 - MOMENTUM) * w[f"bn{i}.running_var"]
        out[f"bn{i}.running_var"] = start + (expected[f"bn{i}.running_var"] - start) * (n - 1) / n
    return out


def compare(results: dict[str, dict], expected: dict, w: dict) -> list[dict]:
    """Every framework's every quantity against PyTorch in float64 (in the framework's convention): max
    abs error, tolerance, error ratio."""
    rows = []
    for framework, got in results.items():
        for quantity, want in expected_in(framework, expected, w).items():
            error = float(np.max(np.abs(np.asarray(got[quantity]) - want)))
            tol = tolerance(framework, quantity, want, w)
            rows.append({"framework": framework, "quantity": quantity, "max_abs_error": error, "tolerance": tol,
                         "error_ratio": error / tol})
    return rows


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        w = pickle.loads(sys.stdin.buffer.read())
        sys.stdout.buffer.write(pickle.dumps(run(sys.argv[2], w)))
        return
    w = weights()
    expected = run_isolated("torch.float64", w)
    rows = compare({f: run_isolated(f, w) for f in FRAMEWORKS}, expected, w)
    print(json.dumps(rows, indent=1))
    worst = max(rows, key=lambda r: r["error_ratio"])
    print(f"worst: {worst['framework']} {worst['quantity']} error ratio {worst['error_ratio']:.3g}")


if __name__ == "__main__":
    main()

