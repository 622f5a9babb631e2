"""Porting the seeds' CNN between frameworks, as a user runs it: ``python examples/port_cnn.py`` prints, for every
framework that is installed, how its network compares with the float64 reference network after a training step
(logits, every parameter's gradient, both BatchNorms' running statistics) and in inference (logits), each
quantity's largest error and its error ratio (error / derived tolerance; at most 1 passes).

The weights are made once, in PyTorch's layout, and ported into each framework by its adapter: kernels
``(out, in, kh, kw) -> (kh, kw, in, out)``, the classifier's inputs permuted from ``(C, H, W)`` to ``(H, W, C)``
order (not just transposed), each BatchNorm built with the source's eps and its momentum in the framework's
convention (``conformance/operators/cnn/spec.py``, ``conformance/adapters/cnn_*.py``). The exported PyTorch
network (BatchNorm folded into the convolutions, run in onnxruntime) is compared in inference. This is one case
of the suite's CNN checks, which run every grid: ``pytest conformance/checks --impl '*cnn*'``.
"""

from __future__ import annotations

from conformance.harness import isolation
from conformance.harness.mirror import Mirror
from conformance.harness.registry import select
from conformance.operators.cnn.cases import seeds


def compare(impl) -> list[tuple[str, object]]:
    """One training step with its gradients (a forward where the implementation has none), then inference on the
    next batch: every comparison the Mirror made, with the phase it was made in."""
    case = next(c for c in seeds(("float32",), steps=2) if not impl.unsupported(c.spec(impl.convention)))
    mirror = Mirror(isolation.isolate(impl), case)
    train, evaluate = case.batches()
    mirror.training_step(train, case.cotangent())
    mirror.compare_state()
    trained = len(mirror.comparisons)
    mirror.forward(evaluate, training=False)
    return [("training" if i < trained else "inference", c) for i, c in enumerate(mirror.comparisons)]


def main() -> None:
    rows = []
    try:
        for impl in select(["*cnn*"]):
            if reason := impl.missing():
                print(f"{impl.name}: skipped ({reason})")
                continue
            for phase, c in compare(impl):
                if c.max_abs_error or c.error_ratio:  # parameters no call changes are exact: not listed
                    rows.append((impl.name, f"{c.quantity} ({phase})", c.max_abs_error, c.error_ratio, c.passed))
    finally:
        isolation.shutdown()
    print(f"{'implementation':22s} {'quantity':30s} {'max |error|':>12s} {'error ratio':>12s}")
    for name, quantity, error, ratio, passed in rows:
        print(f"{name:22s} {quantity:30s} {error:12.3g} {ratio:12.3g}{'' if passed else '  FAILED'}")
    if rows:
        worst = max(rows, key=lambda r: r[3])
        print(f"worst: {worst[0]} {worst[1]} error ratio {worst[3]:.3g}")


if __name__ == "__main__":
    main()
