"""Reference vs PyTorch CPU BatchNorm2d, training forward and forward+backward on (32, 64, 56, 56) float32.

    python benchmarks/reference_speed.py      (best of 25 runs each, same process)
"""

import time

import numpy as np

import reference


def best_ms(fn, repeats: int = 25) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def main() -> None:
    import torch

    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 64, 56, 56), dtype=np.float32)
    dy = rng.standard_normal(x.shape, dtype=np.float32)
    bn, module = reference.BatchNorm(64), torch.nn.BatchNorm2d(64)
    xt, dyt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(dy)

    def torch_forward():
        with torch.no_grad():
            module(xt)

    rows = {
        "forward": (lambda: bn.forward(x, training=True), torch_forward),
        "forward+backward": (lambda: (bn.forward(x, training=True), bn.backward(dy)), lambda: module(xt).backward(dyt)),
    }
    print(f"threads: reference {reference.batchnorm.num_threads()}, torch {torch.get_num_threads()}")
    for name, (ours, theirs) in rows.items():
        a, b = best_ms(ours), best_ms(theirs)
        print(f"{name:18s} reference {a:7.2f} ms   torch {b:7.2f} ms   ratio {a / b:.2f}")


if __name__ == "__main__":
    main()
