"""Run the asv benchmarks once per group of implementations that share their import-time environment.

    python -m perf.run [--bench REGEX] [--grid full|ci] [--machine NAME] [--python PATH] [--config FILE] [asv options]

asv's forkserver forks one child per benchmark and parameter combination, thousands in a full run, and
importing a framework in each costs 3.5 s (torch) to 7 s (TensorFlow) on the CI-sized machine. It could
import the frameworks once before forking, but not all of them into one process: Keras fixes its backend
when first imported (and importing TensorFlow imports Keras), and frameworks slow each other down. So
asv runs once per group (``benchmarks.common.process_groups``: a family, one Keras backend), in that
group's environment, and its forkserver imports the group's frameworks once (``BN_BENCH_PREIMPORT``).
Each run selects its group's parameter combinations; asv merges them into one results file. A plain
``asv run`` works too, importing each framework in every child.

Options other than these go to ``asv run`` (``--quick``, ``--dry-run``, ``--show-stderr``, ``-a``, ...);
results are saved for the commit checked out when it starts (``--set-commit-hash``) unless ``--dry-run``
or another ``--set-commit-hash`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

__all__ = ["ROOT", "commit_of", "groups", "run", "selection", "write_config"]

ROOT = Path(__file__).resolve().parent.parent


def groups(python: str, env: Mapping[str, str]) -> list[dict]:
    """``process_groups()`` as the benchmarks see them with ``python`` and ``env`` (a side of the gate may
    select other implementations, or import another source tree, than this process)."""
    code = "import json, benchmarks.common as c; print(json.dumps(c.process_groups()))"
    if "ASV_PYTHONPATH" in env:  # the path asv gives the benchmarks in place of PYTHONPATH
        env = {**env, "PYTHONPATH": env["ASV_PYTHONPATH"]}
    out = subprocess.run([python, "-c", code], env=dict(env), cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"listing the benchmarks' implementations failed:\n{out.stderr}")
    return json.loads(out.stdout.splitlines()[-1])


# Benchmarks that take no implementation, run once (with the first group): the machine itself, and the
# reference at production size.
_ONCE = r"bench_machine\.|bench_reference_large\."


def selection(names: list[str], machine: bool, bench: str | None = None) -> str:
    """asv's ``-b`` regex for one group: its implementations' parameter combinations (asv matches
    ``name(param, ...)``), with the benchmarks that take no implementation (``_ONCE``) when ``machine``, and only
    benchmarks also matching ``bench``."""
    group = r".*\((?:%s)," % "|".join(re.escape(repr(name)) for name in names)
    if machine:
        group = rf"(?:{_ONCE}|{group})"
    return rf"^(?=.*(?:{bench}))(?={group})" if bench else rf"^(?={group})"


def commit_of(revision: str) -> str:
    """The full hash of a git revision of this repository."""
    return subprocess.run(["git", "rev-parse", "--verify", f"{revision}^{{commit}}"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()


def write_config(directory: Path) -> Path:
    """A copy of asv.conf.json keeping results and the dashboard under ``directory``: runs that must not
    mix with .asv/results (a side of the gate, a test)."""
    from asv.util import load_json

    conf = load_json(str(ROOT / "asv.conf.json"), js_comments=True)
    # asv reads the paths relative to the configuration file's directory: all absolute here.
    conf |= {key: str(ROOT / conf[key]) for key in ("repo", "benchmark_dir", "env_dir")}
    conf |= {"results_dir": str(directory / "results"), "html_dir": str(directory / "html")}
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "asv.conf.json"
    path.write_text(json.dumps(conf, indent=4))
    return path


def _ensure_machine(env: Mapping[str, str], machine: str | None) -> None:
    """asv asks interactively about an unknown machine; CI has no one to answer. A named machine is a
    profile of this one (e.g. a thread count) recorded under its own name, with this machine's details."""
    known = Path("~/.asv-machine.json").expanduser()
    if not known.exists() or (machine and machine not in json.loads(known.read_text())):
        subprocess.run([sys.executable, "-m", "asv", "machine", "--yes", *(["--machine", machine] if machine else [])],
                       env=dict(env), cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def run(asv_args: list[str], *, python: str = "same", config: str | None = None,
        env: Mapping[str, str] | None = None, bench: str | None = None, machine: str | None = None) -> int:
    """``asv run`` once per group, results under ``machine`` (default: asv's name for this one); the worst
    exit status (asv: 2 when a benchmark failed)."""
    from asv.benchmarks import Benchmarks
    from asv.config import Config

    env = {**os.environ, **(env or {})}
    _ensure_machine(env, machine)
    asv_run = [sys.executable, "-m", "asv", "run", f"--python={python}", *(["--config", config] if config else []),
               *(["--machine", machine] if machine else [])]
    # asv fails a run whose -b selects nothing: its discovery tells which groups have something to run.
    subprocess.run([*asv_run, "--bench", "just-discover"], env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    config_path = Path(config) if config else ROOT / "asv.conf.json"
    conf = Config.load(str(config_path))
    conf.results_dir = str(config_path.parent / conf.results_dir)  # as asv reads it, from the file's directory
    status = 0
    for i, group in enumerate(groups(sys.executable if python == "same" else python, env)):
        regex = selection(group["names"], machine=i == 0, bench=bench)
        if not Benchmarks.load(conf, regex):
            continue
        # BN_BENCH_SELECT: benchmarks that measure many combinations at once (bench_counted) measure only these.
        group_env = {**env, **group["env"], "BN_BENCH_PREIMPORT": ",".join(group["preimport"]),
                     "BN_BENCH_SELECT": regex}
        start = time.monotonic()
        status = max(status, subprocess.run([*asv_run, "-b", regex, *asv_args], env=group_env, cwd=ROOT).returncode)
        print(f"perf.run: {', '.join(group['names'])}: {time.monotonic() - start:.0f} s", flush=True)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", "-b", help="only benchmarks matching this regex (asv's -b)")
    parser.add_argument("--python", default="same", help="the interpreter to benchmark in (asv's --python)")
    parser.add_argument("--config", help="asv configuration file (default: asv.conf.json)")
    parser.add_argument("--grid", choices=("full", "ci"), help="the parameter grid (BN_BENCH_GRID; default full)")
    parser.add_argument("--machine", help="record the results under this machine name, e.g. one per thread count "
                        "(BN_BENCH_THREADS); default: asv's name for this machine")
    args, asv_args = parser.parse_known_args(argv)
    if "--dry-run" not in asv_args and not any(a.startswith("--set-commit-hash") for a in asv_args):
        # asv saves results of an existing environment only so; resolved once, for every group's run,
        # whatever is committed meanwhile.
        asv_args += ["--set-commit-hash", commit_of("HEAD")]
    start = time.monotonic()
    env = {"BN_BENCH_GRID": args.grid} if args.grid else {}
    status = run(asv_args, python=args.python, config=args.config, env=env, bench=args.bench, machine=args.machine)
    print(f"perf.run: {time.monotonic() - start:.0f} s in all, exit status {status}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
