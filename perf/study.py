"""How well each gate metric holds on a busy machine: dispersion, detection and false alarms, measured.

    python -m perf.study [--repetitions 20] [--load 1] [--factor 1.02] [--readme docs/benchmarks.md]

While ``--load`` processes keep CPU cores busy (started and stopped by the study), each repetition
measures three variants of one benchmark, each in a fresh process and in both modes: the implementation
(baseline), the same again (unchanged), and ``perf.injected``'s 5% more work inside the operation. It
measures them as the gate does: ``wall`` takes asv's kind of timing samples (20 samples of enough calls
to last 10 ms, the benchmarks' runner, every CPU), ``counted`` the callgrind cost of 3 calls
(``benchmarks/counted.py``, one thread). Then, per mode:

- dispersion: the coefficient of variation of the baseline's median over the repetitions;
- detected: how often ``perf.verdict`` calls 5% more work ``worse`` (baseline against extra work);
- false alarms: how often it calls unchanged code ``worse`` (baseline against unchanged), and how often
  either comparison was ``inconclusive``.

Targets for the counted mode: dispersion <= 0.5%, 20/20 detected, 0/20 false alarms. The table goes to
stdout, or between the ``perf.study`` markers of the ``--readme`` file (docs/benchmarks.md), and everything
to ``.asv/study/study.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from benchmarks.counted import measure_combinations

from .run import ROOT
from .table import write
from .verdict import decide

__all__ = ["MARKERS", "main"]

MARKERS = ("<!-- perf.study: start -->", "<!-- perf.study: end -->")
VARIANTS = {"baseline": "{impl}", "unchanged": "{impl}", "extra work": "perf.injected:EXTRA_WORK"}
SAMPLES = 20


@contextmanager
def cpu_load(processes: int) -> Iterator[None]:
    """``processes`` busy loops for the duration (each stops by itself after an hour at the latest)."""
    loop = "import time\nend = time.monotonic() + 3600\nwhile time.monotonic() < end: pass"
    busy = [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(processes)]
    try:
        yield
    finally:
        for process in busy:
            process.kill()
            process.wait()


def _wall(locator: str, combination: tuple) -> list[float]:
    """Timing samples of one variant, in a fresh process (this module's ``--wall`` entry)."""
    env = {**os.environ, "BN_BENCH_IMPL": locator, "BN_BENCH_GRID": "full", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "perf.study", "--wall", json.dumps(combination)], env=env,
                         cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def _wall_entry(combination: list) -> None:
    from benchmarks.common import BatchNormCase, calls_per_sample, seconds_per_call

    case = BatchNormCase()
    case.setup(combination[0], combination[1], tuple(combination[2]), *combination[3:])
    run = case.make_runner()
    number = calls_per_sample(run)
    print(json.dumps([seconds_per_call(run, number) for _ in range(SAMPLES)]))


def _counted(locator: str, combination: tuple) -> list[float]:
    [counts] = measure_combinations([combination], env={"BN_BENCH_IMPL": locator, "BN_BENCH_GRID": "full"}).values()
    return [c.cost for c in counts]


MODES = {"wall": _wall, "counted": _counted}


def _summary(runs: list[dict[str, list[float]]], factor: float) -> dict[str, float | int]:
    medians = [statistics.median(run["baseline"]) for run in runs]
    detect = [decide(run["baseline"], run["extra work"], factor).status for run in runs]
    alarms = [decide(run["baseline"], run["unchanged"], factor).status for run in runs]
    return {"dispersion": statistics.stdev(medians) / statistics.fmean(medians),
            "extra work / baseline": statistics.median(
                statistics.median(run["extra work"]) / statistics.median(run["baseline"]) for run in runs),
            "detected": detect.count("worse"), "detection inconclusive": detect.count("inconclusive"),
            "false alarms": alarms.count("worse"), "unchanged inconclusive": alarms.count("inconclusive")}


def render(summaries: dict[str, dict], repetitions: int, factor: float, subject: str, load: int,
           load_average: float) -> str:
    lines = [f"{subject}; {repetitions} repetitions, each variant in a fresh process; {load} busy process(es) "
             f"started to compete (median 1-minute load average {load_average:.1f} on {os.cpu_count()} CPUs); "
             f"factor {factor}.", "",
             "| mode | dispersion (CV) | extra work / baseline | detected | detection inconclusive | false alarms "
             "| unchanged inconclusive |", "|---|---:|---:|---:|---:|---:|---:|"]
    for mode, s in summaries.items():
        lines.append(f"| {mode} | {s['dispersion']:.2%} | {s['extra work / baseline']:.3f} | "
                     f"{s['detected']}/{repetitions} | {s['detection inconclusive']}/{repetitions} | "
                     f"{s['false alarms']}/{repetitions} | {s['unchanged inconclusive']}/{repetitions} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repetitions", type=int, default=20)
    parser.add_argument("--load", type=int, default=1, help="busy processes competing for the CPUs")
    parser.add_argument("--factor", type=float, default=1.02, help="the gate's factor, for both modes")
    parser.add_argument("--implementation", default="torch.BatchNorm2d")
    parser.add_argument("--operation", default="forward_training")
    parser.add_argument("--shape", default="20,64,28,28", help="batch a multiple of 20: the extra work is 5%%")
    parser.add_argument("--modes", default="counted,wall")
    parser.add_argument("--readme", help="write the table between this file's perf.study markers (docs/benchmarks.md)")
    args = parser.parse_args(argv)
    combination = (args.implementation, args.operation, tuple(map(int, args.shape.split(","))), 1, "float32")
    modes = args.modes.split(",")
    runs: dict[str, list[dict]] = {mode: [] for mode in modes}
    loads: list[float] = []  # the machine's 1-minute load average after each repetition: how busy it really was
    with cpu_load(args.load):
        for i in range(args.repetitions):
            for mode in modes:
                order = list(VARIANTS)[i % 3:] + list(VARIANTS)[:i % 3]  # no variant always first
                runs[mode].append({v: MODES[mode](VARIANTS[v].format(impl=args.implementation), combination)
                                   for v in order})
            loads.append(os.getloadavg()[0])
            print(f"perf.study: repetition {i + 1}/{args.repetitions}, load average {loads[-1]:.1f}", flush=True)
    summaries = {mode: _summary(runs[mode], args.factor) for mode in modes}
    subject = (f"`{args.implementation}` {args.operation.replace('_', ' ')} on {combination[2]} float32")
    table = render(summaries, args.repetitions, args.factor, subject, args.load, statistics.median(loads))
    out = ROOT / ".asv" / "study"
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(json.dumps({"arguments": vars(args), "summaries": summaries, "runs": runs,
                                                "load_averages": loads}, indent=1))
    print(table)
    if args.readme:
        write(ROOT / args.readme, table, MARKERS)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--wall"]:
        _wall_entry(json.loads(sys.argv[2]))
    else:
        sys.exit(main())
