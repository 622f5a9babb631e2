"""The regression gate: benchmark a baseline and a candidate, and fail when the candidate got worse.

    python -m perf.gate --baseline SPEC --candidate SPEC [--metric wall|counted] [--factor F] [--bench REGEX]

A SPEC is a whitespace-separated list of words, each one of:
    REV         a git revision of this repository, whose ``reference/`` and ``conformance/`` (adapters
                included) are benchmarked; without one, the working tree. The benchmark suite itself is
                always this checkout's, as in asv, so both sides run the same measurements.
    NAME==VER   a pinned distribution. A side with pins runs in a virtual environment of its own holding
                this project's pins (pyproject extras torch, keras, tfkeras, flax, onnx, bench) but these, made once
                under ``.asv/gate/`` and reused; a side without runs in this interpreter.
    VAR=VALUE   an environment variable for the side's benchmarks: ``BN_BENCH_IMPL``, ``BN_BENCH_GRID``...

For example: ``--baseline HEAD~1 --candidate HEAD``; ``--baseline "tensorflow-cpu==2.20.0
tf-keras==2.20.1" --candidate "" --bench "time_batchnorm\\('tf_keras"``; ``--baseline "" --candidate
"BN_BENCH_IMPL=mypackage.adapter:IMPLEMENTATIONS"``.

Metrics (``--metric``): ``wall`` compares asv's timing samples (``time_*``; absolute speed, but as noisy
as the machine), ``counted`` the estimated cycles under callgrind (``bench_counted``'s ``track_cost``:
independent of the machine's load, see ``benchmarks/callgrind.py``); both also compare the accuracy track
(``track_error_ratio``, deterministic). The sides run in alternating rounds (baseline, candidate,
baseline, ...), so drift of the machine's speed reaches both alike; each round adds its timing samples, or
its one value of a track, to the side's samples. ``perf.verdict`` states the rule that decides each
benchmark: worse, inconclusive (the noise is too large to rule out a regression beyond the factor; the
table gives the noise), better or same. A benchmark that ran in the baseline and fails in the candidate
counts as worse.

Exit status: 1 when anything got worse, else 3 when anything was inconclusive, else 0; 2 when nothing was
compared (the baseline measured none of the selected benchmarks, say every one timed out). The table lists
every benchmark that is not ``same``.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from . import run as perf_run
from .results import load, samples
from .run import ROOT
from .verdict import STATUSES, Verdict, decide

__all__ = [
    "MEASURED", "METRICS", "Side", "collect", "compare", "main", "parse_side", "prepare", "requirements", "status",
    "table",
]

METRICS = {  # --metric: the benchmarks it compares by default, and its default factor
    "wall": (r"\.time_|\.track_error_ratio", 1.2),
    "counted": (r"bench_counted\.BatchNorm\.track_cost|\.track_error_ratio", 1.02),
}
EXTRAS = ("torch", "keras", "tfkeras", "flax", "onnx", "bench")
# What a revision contributes to its side: the reference and the adapters. Its benchmarks/ and perf/ stay
# behind, so that both sides run this checkout's measurements.
MEASURED = ("reference", "conformance")


@dataclass
class Side:
    name: str
    revision: str | None = None
    pins: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def parse_side(name: str, spec: str) -> Side:
    side = Side(name)
    for word in spec.split():
        if "==" in word:
            side.pins.append(word)
        elif "=" in word:
            variable, _, value = word.partition("=")
            side.env[variable] = value
        elif side.revision is None:
            side.revision = word
        else:
            raise ValueError(f"{name}: two revisions, {side.revision!r} and {word!r}")
    return side


def requirements(pins: list[str]) -> list[str]:
    """This project's pinned requirements for benchmarking, with ``pins`` replacing those of the same name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = [*project["dependencies"], *(r for extra in EXTRAS for r in project["optional-dependencies"][extra])]
    override = {canonicalize_name(Requirement(p).name): p for p in pins}
    kept = [r for r in base if canonicalize_name(Requirement(r).name) not in override]
    return list(dict.fromkeys([*kept, *override.values()]))


def _venv(pins: list[str], workdir: Path) -> str:
    reqs = requirements(pins)
    path = workdir / f"venv-{hashlib.sha256(' '.join(sorted(reqs)).encode()).hexdigest()[:12]}"
    done = path / "installed.txt"  # written last: a venv whose install was interrupted is made again
    if not done.exists():
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", path], check=True)
        subprocess.run([path / "bin" / "python", "-m", "pip", "install", "--quiet", *reqs], check=True)
        done.write_text("\n".join(reqs) + "\n")
    return str(path / "bin" / "python")


@dataclass
class Prepared:
    side: Side
    commit: str
    python: str
    config: Path
    env: dict[str, str]


def prepare(side: Side, workdir: Path) -> Prepared:
    commit = perf_run.commit_of(side.revision or "HEAD")
    source = ROOT
    if side.revision:
        source = workdir / "src" / commit
        if not source.exists():
            (workdir / "src").mkdir(parents=True, exist_ok=True)
            tmp = source.with_suffix(".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            archive = subprocess.run(["git", "archive", commit, *MEASURED], cwd=ROOT, check=True,
                                     capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            tmp.rename(source)
    python = _venv(side.pins, workdir) if side.pins else "same"
    sidedir = workdir / side.name
    shutil.rmtree(sidedir, ignore_errors=True)  # no results of an earlier gate run may be read as this one's
    config = perf_run.write_config(sidedir)
    # The side's source comes first on the path, before this project's installed copy, if any (asv
    # drops PYTHONPATH and puts ASV_PYTHONPATH in its place).
    path = os.pathsep.join(p for p in (str(source), os.environ.get("ASV_PYTHONPATH", "")) if p)
    return Prepared(side, commit, python, config, {**side.env, "ASV_PYTHONPATH": path})


Samples = dict[tuple[str, tuple], list[float]]  # (benchmark, parameter combination) -> samples


def collect(config: Path, into: Samples) -> None:
    """Add one round's results saved under ``config`` to ``into``."""
    for result in load(config):
        for key in result.get_all_result_keys():
            for combo, found in samples(result, key).items():
                into.setdefault((key, combo), []).extend(found)


def compare(baseline: Samples, candidate: Samples, factor: float) -> list[tuple[str, Verdict | None]]:
    """Each benchmark of the baseline with its verdict (None: it failed in the candidate), worst first."""
    found = [(_name(key, combo), decide(values, candidate[key, combo], factor) if (key, combo) in candidate
              else None) for (key, combo), values in baseline.items()]
    rank = {status: i for i, status in enumerate(STATUSES)}
    return sorted(found, key=lambda item: (-1, 0) if item[1] is None else (rank[item[1].status], -item[1].ratio))


def status(verdicts: list[tuple[str, Verdict | None]]) -> int:
    """1 worse, 3 inconclusive, 0 nothing worse; 2 when nothing was compared (the baseline measured none of
    the benchmarks: a gate that measured nothing must not pass)."""
    if not verdicts:
        return 2
    statuses = {verdict.status if verdict else "worse" for _, verdict in verdicts}
    return 1 if "worse" in statuses else 3 if "inconclusive" in statuses else 0


def table(verdicts: list[tuple[str, Verdict | None]]) -> str:
    """What is not ``same``, as a Markdown table."""
    lines = ["| verdict | baseline | candidate | ratio | ratio 99% interval | noise | benchmark |", "|---" * 7 + "|"]
    for name, v in verdicts:
        if v is None:
            lines.append(f"| failed | | | | | | {name} |")
        elif v.status != "same":
            bounds = "–" if math.isnan(v.low) else f"[{v.low:.3f}, {v.high:.3f}]"  # nan: an exact zero
            noise = "–" if math.isnan(v.noise) else f"±{v.noise:.1%}"
            lines.append(f"| {v.status} | {v.baseline:.4g} | {v.candidate:.4g} | {v.ratio:.3f} | {bounds} | {noise} | "
                         f"{name} |")
    return "\n".join(lines)


def _name(key: str, combo: tuple) -> str:
    return f"{key}({', '.join(map(repr, combo))})" if combo else key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="SPEC of the baseline (see the module's help)")
    parser.add_argument("--candidate", required=True, help="SPEC of the candidate")
    parser.add_argument("--metric", choices=METRICS, default="wall",
                        help="wall: asv's timings; counted: estimated cycles under callgrind (default wall)")
    parser.add_argument("--factor", type=float,
                        help="a larger ratio than this is a regression (default: wall 1.2, counted 1.02)")
    parser.add_argument("--bench", help="benchmarks to compare (regex; default: the metric's, see METRICS)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per side")
    parser.add_argument("--repeat", type=int, default=20,
                        help="timing samples per benchmark and round (asv's default, at most 5 here, is too few "
                        "for the 99%% interval of a median, which needs 8)")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".asv" / "gate")
    args = parser.parse_args(argv)
    bench, factor = args.bench or METRICS[args.metric][0], args.factor or METRICS[args.metric][1]

    sides = [prepare(parse_side(name, spec), args.workdir)
             for name, spec in (("baseline", args.baseline), ("candidate", args.candidate))]
    measured: dict[str, Samples] = {"baseline": {}, "candidate": {}}
    for _ in range(args.rounds):
        for side in sides:
            print(f"perf.gate: {side.side.name} {side.commit[:8]} {' '.join(side.side.pins)} "
                  f"{' '.join(f'{k}={v}' for k, v in side.side.env.items())}", flush=True)
            asv_args = ["--set-commit-hash", side.commit, "--record-samples",
                        "-a", "rounds=1", "-a", f"repeat={args.repeat}"]
            perf_run.run(asv_args, python=side.python, config=str(side.config), env=side.env, bench=bench)
            collect(side.config, measured[side.side.name])
    verdicts = compare(measured["baseline"], measured["candidate"], factor)
    print(table(verdicts))
    code = status(verdicts)
    said = {0: "nothing worse", 1: "worse than the baseline", 3: "inconclusive",
            2: "nothing compared: the baseline measured none of the benchmarks (asv says why above)"}
    print(f"perf.gate ({args.metric}, factor {factor}): {said[code]}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
