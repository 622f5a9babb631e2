"""The committed performance baseline (perf/baseline.json): expected instruction counts, each with a noise
margin, that CI checks; it fails on a regression and on an unexpected improvement alike, so that the
baseline is refreshed on purpose.

    python -m perf.baseline check [--baseline perf/baseline.json] [--write FILE]
    python -m perf.baseline update [--baseline perf/baseline.json] [--repeats 5]

``check`` refuses (exit 2, naming them) when what the counts depend on differs from the baseline's record
(``perf.environment``: interpreter, C library, valgrind, the CPU valgrind presents, framework versions);
a host of another CPU model is only noted. Otherwise it measures the baseline's combinations and this
checkout's selection (``SELECTED``), once each, prints the table (``perf.expected`` has the rule), and
the new baseline, ready to commit, to stdout or ``--write FILE``: the measured counts, the margins kept.
Exit status 1 when anything is worse, better or missing, else 0. Without valgrind it exits 2 when
``BN_REQUIRE_VALGRIND`` is set (CI), else 0, saying why nothing was compared.

``update`` measures the selection ``--repeats`` times, each time in fresh processes, and writes the
medians as the expected counts, with margins from their spread.

The selection: for the first implementation of each family in ``SELECTED``, every operation; for the
others (variants of the same adapter: dimensions, layouts, opsets) the first operation each runs; each on
the first shape of the ci grid (``benchmarks.common.GRIDS``) it supports, channels first, float32. A
combination costs 2 to 7 s of callgrind time, a family's process start 10 to 40 s: this keeps the check
to about 3 minutes on this project's 2-core CI machine (327 s of callgrind time, two processes at once).
Each group of implementations that share a process is measured in one callgrind process
(``benchmarks.counted``), as many at once as this process may use CPUs. Left out (docs/benchmarks.md has
the measurements): Flax and Keras on JAX, whose calls differ by up to 37% within one process, and Keras on
TensorFlow, for its cost (80 s more; tf-keras covers TensorFlow's kernels, Keras on torch the Keras
adapter).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from fnmatch import fnmatch
from pathlib import Path

from benchmarks import callgrind
from benchmarks.common import GRIDS, IMPLEMENTATIONS, unsupported
from benchmarks.counted import measure_combinations
from conformance.adapters.base import OPERATIONS
from conformance.harness.registry import process_groups
from conformance.operators.batchnorm import cases

from . import expected
from .environment import environment, host
from .expected import CALLS, WARMUP, Combination
from .run import ROOT

__all__ = ["SELECTED", "main", "measure", "selection"]

SELECTED = ("reference.*", "torch.*", "onnx.*", "tf_keras.*", "keras.torch")  # globs over implementation names
DEFAULT = ROOT / "perf" / "baseline.json"
# Bytes the measured process's environment grows by from one update round to the next: its strings and
# os.environ shift the memory layout, which moves counts (address-keyed hashing, alignment, cache sets) by
# up to 1% as another checkout path or CI's variables would; the margins must cover that.
PAD_STEP = 613


def selection() -> list[Combination]:
    """The combinations this checkout measures (the module's docstring)."""
    shapes, _, _ = GRIDS["ci"]
    found, families = [], set()
    for impl in IMPLEMENTATIONS.values():
        if not any(fnmatch(impl.name, pattern) for pattern in SELECTED):
            continue
        every = impl.family not in families  # a family's first implementation: every operation; the others one
        families.add(impl.family)
        for operation in OPERATIONS:
            shape = next((s for s in shapes if not unsupported(impl, operation, cases.BatchNormCase(s, 1, "float32"))),
                         None)
            if shape is not None:
                found.append((impl.name, operation, shape, 1, "float32"))
                if not every:
                    break
    return found


def measure(combinations: Sequence[Combination], pad: int = 0) -> dict[Combination, int | None]:
    """The instructions of each combination, the median of ``CALLS`` calls (None: not measured: unsupported, not
    installed, or its process failed, which is reported on stderr), in processes whose environment holds
    ``pad`` more bytes."""
    known = {c[0]: IMPLEMENTATIONS[c[0]] for c in combinations if c[0] in IMPLEMENTATIONS}
    groups = [[c for c in combinations if c[0] in {i.name for i in group}] for group in process_groups(known.values())]

    def one(group: list[Combination]) -> dict[Combination, int | None]:
        start = time.monotonic()
        env = {**known[group[0][0]].process_env, "BN_BASELINE_PAD": "x" * pad}
        try:
            counts = measure_combinations(group, CALLS, env=env, warmup=WARMUP)
        except RuntimeError as error:
            print(f"perf.baseline: {group[0][0]}'s process failed: {error}", file=sys.stderr)
            return {}
        print(f"perf.baseline: {', '.join(dict.fromkeys(c[0] for c in group))}: {time.monotonic() - start:.0f} s",
              file=sys.stderr, flush=True)
        return {c: v and statistics.median_low(x.instructions for x in v) for c, v in counts.items()}

    found: dict[Combination, int | None] = dict.fromkeys(combinations)
    with ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        for result in pool.map(one, groups):
            found.update(result)
    return found


def _today() -> str:
    return datetime.date.today().isoformat()


def _described(machine: dict) -> str:
    return f"{machine['cpu']} ({machine['cpus']} CPUs; {' '.join(machine['extensions'])})"


def _refusal(differences: list[tuple[str, str | None, str | None]]) -> str:
    lines = ["perf.baseline: refusing to compare: the counts depend on these, and they differ from the baseline's:"]
    lines += [f"  {what}: baseline {recorded or 'not recorded'}, here {current or 'absent'}"
              for what, recorded, current in differences]
    lines.append("Run the check where they match (install the recorded versions; a machine of the baseline's kind), "
                 "or refresh the baseline on purpose: python -m perf.baseline update")
    return "\n".join(lines)


def check(path: Path, write: Path | None) -> int:
    baseline = expected.loads(path.read_text())
    here = host()
    differences = expected.mismatches(baseline.environment, environment())
    if differences:
        print(_refusal(differences), file=sys.stderr)
        return 2
    if here != baseline.host:
        print(f"perf.baseline: note: the baseline was measured on {_described(baseline.host)}, this host is "
              f"{_described(here)}; valgrind presents the same CPU to the measured code, so the counts should agree "
              f"(if they do not, this is the first suspect)", file=sys.stderr)
    start = time.monotonic()
    wanted = list(dict.fromkeys([*(e.combination for e in baseline.entries), *selection()]))
    measured = measure(wanted)
    rows = expected.compare(baseline, measured)
    code = expected.status(rows)
    print(expected.table(rows))
    verdicts = {v: sum(r.verdict == v for r in rows) for v in dict.fromkeys(r.verdict for r in rows)}
    print(f"perf.baseline: {', '.join(f'{n} {v}' for v, n in verdicts.items())} against {path.name} "
          f"(measured {baseline.measured}) in {time.monotonic() - start:.0f} s: "
          f"{'fails: refresh the baseline on purpose if this is expected' if code else 'passes'}", flush=True)
    proposed = expected.dumps(expected.refreshed(baseline, measured, here, _today()))
    if write:
        write.write_text(proposed)
        print(f"perf.baseline: the new baseline is in {write}")
    else:
        print(f"perf.baseline: the new baseline (measured values, margins kept), ready to commit as {path.name}:")
        print(proposed, end="")
    return code


def update(path: Path, repeats: int) -> int:
    facts, here, wanted = environment(), host(), selection()
    rounds = []
    pads = [i * PAD_STEP for i in range(repeats)]
    for i, pad in enumerate(pads):
        print(f"perf.baseline: round {i + 1} of {repeats}", file=sys.stderr, flush=True)
        rounds.append(measure(wanted, pad))
    baseline = expected.from_rounds(rounds, pads, facts, here, _today())
    path.write_text(expected.dumps(baseline))
    margins = sorted(e.margin for e in baseline.entries)
    print(f"perf.baseline: {len(margins)} entries written to {path}; margins {margins[0]:.2%} to {margins[-1]:.2%}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    checking = commands.add_parser("check", help="measure and compare with the baseline")
    checking.add_argument("--write", type=Path, help="write the new baseline here instead of printing it")
    updating = commands.add_parser("update", help="measure in fresh processes and write the new baseline")
    updating.add_argument("--repeats", type=int, default=5, help="measurements in fresh processes (margins: spread)")
    for command in (checking, updating):
        command.add_argument("--baseline", type=Path, default=DEFAULT, help="the baseline file (perf/baseline.json)")
    args = parser.parse_args(argv)
    reason = callgrind.unavailable()
    if reason:
        required = bool(os.environ.get("BN_REQUIRE_VALGRIND")) or args.command == "update"
        print(f"perf.baseline: nothing compared: counted metrics are unavailable: {reason}", file=sys.stderr)
        return 2 if required else 0
    if args.command == "check":
        return check(args.baseline, args.write)
    return update(args.baseline, args.repeats)


if __name__ == "__main__":
    sys.exit(main())
