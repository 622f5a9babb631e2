"""The regression gate: benchmark a baseline and a candidate, and fail when the candidate got worse.

    python -m perf.gate --baseline SPEC --candidate SPEC [--factor 1.2] [--bench REGEX] [--rounds 2]

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

The sides run in alternating rounds (baseline, candidate, baseline, ...; one asv round each, samples
accumulated), so drift of the machine's speed reaches both alike. The verdict is asv's own, that of
``asv continuous``: a benchmark got worse when its median rose by more than ``factor`` and, where there
are samples, a Mann-Whitney U test finds the difference significant (p < 0.002); one that ran in the
baseline and fails in the candidate got worse too. Timings (``time_*``) are compared so, and so is the
accuracy track (``track_error_ratio``: error / tolerance, deterministic, so by the factor alone). The
bandwidth tracks are left out by default: larger is better there, and asv's comparison assumes smaller.
Exit status 1 when anything got worse, 0 otherwise; the table lists what changed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from . import run as perf_run
from .results import load
from .run import ROOT

__all__ = ["DEFAULT_BENCH", "Side", "compare", "main", "parse_side", "requirements"]

DEFAULT_BENCH = r"\.time_|\.track_error_ratio"
EXTRAS = ("torch", "keras", "tfkeras", "flax", "onnx", "bench")


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


def _prepare(side: Side, workdir: Path) -> Prepared:
    commit = perf_run.commit_of(side.revision or "HEAD")
    source = ROOT
    if side.revision:
        source = workdir / "src" / commit
        if not source.exists():
            (workdir / "src").mkdir(parents=True, exist_ok=True)
            tmp = source.with_suffix(".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            archive = subprocess.run(["git", "archive", commit], cwd=ROOT, check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            tmp.rename(source)
    python = _venv(side.pins, workdir) if side.pins else "same"
    sidedir = workdir / side.name
    shutil.rmtree(sidedir, ignore_errors=True)  # samples accumulate over the rounds of this run only
    config = perf_run.write_config(sidedir)
    # The side's source comes first on the path, before this project's installed copy, if any (asv
    # drops PYTHONPATH and puts ASV_PYTHONPATH in its place).
    path = os.pathsep.join(p for p in (str(source), os.environ.get("ASV_PYTHONPATH", "")) if p)
    return Prepared(side, commit, python, config, {**side.env, "ASV_PYTHONPATH": path})


def _resultset(config: Path) -> Iterator[tuple]:
    """One side's results as ``asv compare`` iterates them, under one environment name, so that the two
    sides' results pair up although they ran in different environments."""
    for result in load(config):
        for key in result.get_all_result_keys():
            params = result.get_result_params(key)
            yield (key, params, result.get_result_value(key, params), result.get_result_stats(key, params),
                   result.get_result_samples(key, params), result.benchmark_version.get(key),
                   result.params["machine"], "gate")


def compare(baseline: Prepared, candidate: Prepared, factor: float) -> bool:
    """Print asv's comparison table of what changed; True when anything got worse."""
    from asv.commands.compare import Compare
    from asv.config import Config

    conf = Config.load(str(candidate.config))
    worsened, _ = Compare.print_table(
        conf, baseline.commit, candidate.commit, factor, split=True, resultset_1=_resultset(baseline.config),
        resultset_2=_resultset(candidate.config), only_changed=True, sort="ratio",
    )
    return worsened


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="SPEC of the baseline (see the module's help)")
    parser.add_argument("--candidate", required=True, help="SPEC of the candidate")
    parser.add_argument("--factor", type=float, default=1.2, help="a larger ratio than this is a regression")
    parser.add_argument("--bench", default=DEFAULT_BENCH,
                        help=f"benchmarks to compare (regex; default {DEFAULT_BENCH})")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per side")
    parser.add_argument("--repeat", type=int, default=20,
                        help="timing samples per benchmark and round (asv's default, at most 5 here, is too few "
                        "for a Mann-Whitney U test to resolve 1.3x on a noisy machine)")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".asv" / "gate")
    args = parser.parse_args(argv)

    sides = [_prepare(parse_side(name, spec), args.workdir)
             for name, spec in (("baseline", args.baseline), ("candidate", args.candidate))]
    for _ in range(args.rounds):
        for side in sides:
            print(f"perf.gate: {side.side.name} {side.commit[:8]} {' '.join(side.side.pins)} "
                  f"{' '.join(f'{k}={v}' for k, v in side.side.env.items())}", flush=True)
            asv_args = ["--set-commit-hash", side.commit, "--append-samples",
                        "-a", "rounds=1", "-a", f"repeat={args.repeat}"]
            perf_run.run(asv_args, python=side.python, config=str(side.config), env=side.env, bench=args.bench)
    worse = compare(*sides, factor=args.factor)
    print(f"perf.gate: {'worse than the baseline by more than' if worse else 'nothing worse than'} "
          f"{args.factor}x", flush=True)
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main())
