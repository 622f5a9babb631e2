"""How much the benchmark figures move from run to run on this machine: raw time against the
copy-normalized fraction (the numbers in docs/benchmarks.md).

    python -m perf.dispersion [--runs 5] [--bench REGEX]

Runs the selected benchmarks ``--runs`` times, each a complete ``perf.run`` with its results under
``.asv/dispersion/run-N``, then prints for each parameter combination the coefficient of variation over
the runs (standard deviation / mean) of ``time_batchnorm`` (asv's median of its samples) and of
``track_copy_fraction``, their medians over all combinations, and that of the copy bandwidth itself.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys

from . import run as perf_run
from .results import load, values
from .run import ROOT, commit_of

__all__ = ["DEFAULT_BENCH", "coefficient_of_variation", "main"]

DEFAULT_BENCH = (r"bench_machine\.Machine\.track_copy_bandwidth|BatchNorm\.(time_batchnorm|track_copy_fraction)"
                 r"\('(reference\.torch|torch\.BatchNorm2d|keras\.jax|tf_keras\.fused)', "
                 r"'(forward_training|forward_backward)', \(32, 64, 56, 56\), -?1, 'float32'\)")
METRICS = {"time": "bench_speed.BatchNorm.time_batchnorm", "fraction": "bench_bandwidth.BatchNorm.track_copy_fraction"}


def coefficient_of_variation(xs: list[float]) -> float:
    return statistics.stdev(xs) / statistics.fmean(xs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--bench", default=DEFAULT_BENCH, help="benchmarks to run (regex)")
    args = parser.parse_args(argv)
    commit = commit_of("HEAD")
    configs = []
    for n in range(args.runs):
        directory = ROOT / ".asv" / "dispersion" / f"run-{n}"
        shutil.rmtree(directory, ignore_errors=True)
        configs.append(perf_run.write_config(directory))
        status = perf_run.run(["--set-commit-hash", commit], config=str(configs[-1]), bench=args.bench)
        if status:
            return status

    runs = [{name: {} for name in (*METRICS, "copy")} for _ in configs]
    for run, config in zip(runs, configs):
        for result in load(config, commit):
            for name, key in METRICS.items():
                run[name] |= values(result, key)
            run["copy"] |= values(result, "bench_machine.Machine.track_copy_bandwidth")
    combos = sorted(set.intersection(*(set(run["time"]) & set(run["fraction"]) for run in runs)), key=str)
    print("coefficient of variation over", len(runs), "runs:  time   fraction   parameters")
    cvs = {name: [] for name in METRICS}
    for combo in combos:
        for name in METRICS:
            cvs[name].append(coefficient_of_variation([run[name][combo] for run in runs]))
        print(f"{'':44s}{cvs['time'][-1]:6.3f}  {cvs['fraction'][-1]:6.3f}     {combo}")
    print(f"median over {len(combos)} combinations:{'':14s}{statistics.median(cvs['time']):6.3f}  "
          f"{statistics.median(cvs['fraction']):6.3f}")
    copies = [run["copy"][()] for run in runs if () in run["copy"]]
    print(f"copy bandwidth: {', '.join(f'{c:.1f}' for c in copies)} GB/s, "
          f"coefficient of variation {coefficient_of_variation(copies):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
