"""What users read from saved results: the README table (perf.table) and asv's dashboard (asv publish),
the latter opened in headless Chromium over http, as the dashboard loads its data with XHR."""

from __future__ import annotations

import functools
import http.server
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("asv", reason="asv is not installed (tox -e bench runs these tests)")

from benchmarks import callgrind  # noqa: E402
from perf import run as perf_run  # noqa: E402
from perf.gate import collect  # noqa: E402
from perf.run import ROOT, commit_of  # noqa: E402
from perf.table import MARKERS, render, write  # noqa: E402


@pytest.fixture(scope="module")
def commit() -> str:
    return commit_of("HEAD")


MACHINES = {"ci-1-thread": "1", "ci-2-threads": "2"}  # two machine profiles: this machine, two thread counts
ASV_SAMPLING = ("repeat=3", "rounds=1", "warmup_time=0")  # 3 timing samples per benchmark, quickly


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, commit: str) -> Path:
    """The asv configuration of two saved runs of the ci grid on the reference, one per machine profile,
    with timing samples recorded (about 30 s; the counted benchmarks skip where valgrind is missing)."""
    config = perf_run.write_config(tmp_path_factory.mktemp("asv"))
    # The dashboard graphs the commits of the configured branches: HEAD's, whatever is checked out.
    config.write_text(json.dumps(json.loads(config.read_text()) | {"branches": ["HEAD"]}))
    for machine, threads in MACHINES.items():
        env = {"BN_BENCH_GRID": "ci", "BN_BENCH_IMPL": "reference.torch", "BN_BENCH_THREADS": threads}
        asv_args = ["--set-commit-hash", commit, "--record-samples", *(f"-a{a}" for a in ASV_SAMPLING)]
        assert perf_run.run(asv_args, config=str(config), env=env, machine=machine) == 0
    return config


@pytest.fixture
def dashboard(config: Path) -> Iterator[str]:
    """The published dashboard's address, served by a local http server."""
    subprocess.run([sys.executable, "-m", "perf.publish", "--config", str(config)], cwd=ROOT, check=True,
                   capture_output=True)
    html = json.loads(config.read_text())["html_dir"]

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=html))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_table_has_every_operation_of_the_implementation(config: Path, commit: str) -> None:
    with pytest.raises(SystemExit, match="several machines"):
        render(config, commit)
    table = render(config, commit, "ci-2-threads")
    assert "ci-2-threads" in table and "2 threads" in table
    [row] = [line for line in table.splitlines() if line.startswith("| `reference.torch`")]
    cells = row.strip("|").split("|")[1:]
    assert [bool(re.fullmatch(r" \d+\.\d\d ", c)) for c in cells] == [True] * 3 + [False] * 3  # ci: float32 only


def test_table_replaces_what_stands_between_the_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{MARKERS[0]}\nold\n{MARKERS[1]}\nafter\n")
    write(readme, "| new |")
    assert readme.read_text() == f"before\n{MARKERS[0]}\n| new |\n{MARKERS[1]}\nafter\n"


def test_gate_reads_timing_samples_and_track_values(config: Path) -> None:
    """What the gate compares: every timing sample asv recorded (``--record-samples``), a track's value."""
    found: dict = {}
    collect(config, found)
    timing = [v for (key, _), v in found.items() if key.endswith("time_batchnorm")]
    tracks = [v for (key, _), v in found.items() if key.endswith("track_error_ratio")]
    assert timing and tracks
    assert all(len(v) == 2 * 3 for v in timing)  # two machines' results, 3 samples each
    assert all(len(v) == 2 for v in tracks)


def test_dashboard_renders_the_benchmarks_offline(browser, dashboard: str) -> None:
    """The grid lists every benchmark module and benchmark; a benchmark's page plots its parameter
    combinations for both machine profiles, timings and counted metrics alike, on a canvas with something
    drawn on it; nothing fails to load (perf.publish serves asv's scripts locally)."""
    page = browser(dashboard, wait_for=".benchmark-container")
    modules = {"bench_speed": ("time_batchnorm", "peakmem_batchnorm"),
               "bench_bandwidth": ("track_gbps", "track_copy_fraction"),
               "bench_accuracy": ("track_error_ratio",),
               "bench_machine": ("track_copy_bandwidth", "track_threads")}
    counted = callgrind.unavailable() is None
    if counted:
        modules["bench_counted"] = ("track_cost", "track_instructions", "track_l1_misses", "track_ll_misses")
    for module, benchmarks in modules.items():
        assert module in page.text.split("\n")
        assert all(name in page.text for name in benchmarks)
    assert page.console_errors() == []
    graphs = ["bench_speed.BatchNorm.time_batchnorm", *(["bench_counted.BatchNorm.track_cost"] * counted)]
    for benchmark in graphs:
        graph = browser(f"{dashboard}#{benchmark}", wait_for="#main-graph canvas")
        assert "operation-forward_backward; shape-(4, 8, 6, 6)" in graph.text
        assert all(machine in graph.text for machine in MACHINES)
        assert graph.console_errors() == []
        drawn = graph.driver.execute_script(
            "const c = document.querySelector('#main-graph canvas');"
            "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n;")
        assert drawn > 1000, f"{benchmark}: only {drawn} pixels drawn"
