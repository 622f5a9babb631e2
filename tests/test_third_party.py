"""A third party's run, as docs/third-party.md describes it: this project installed
(``pip install --no-deps --target``: the run imports the installed copy, never the checkout), and from a
scratch directory that holds only an example's adapter module and its own deviation registry, the suite
run on it with ``--deviations`` and ``--report``. The tinygrad example must exit 0 with its deviations
registered, and the report must say where each came from, the device tinygrad really ran on, and what the
implementation did on one value per channel; the jitted JAX example must pass everything it supports with no
registry at all. Each skips where its framework is not installed (``tox -e example`` installs both)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from sources import copy_sources

from conformance.report.results import SCHEMA, load

ROOT = Path(__file__).resolve().parents[1]
# Enough of the suite to pass, deviate (one value per channel, empty batches) and skip (channels last).
SELECTION = "edge_case or defaults_match_convention or (training_output and (16x3 or 2x3x4x5))"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This project installed into a directory of its own (its dependencies are the environment's)."""
    target = tmp_path_factory.mktemp("site-packages")
    source = copy_sources(tmp_path_factory.mktemp("source") / "checkout")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-cache-dir",
         "--target", str(target), str(source)],
        check=True, capture_output=True, text=True,
    )
    return target


def outside(installed: Path, scratch: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m pytest ARGS`` in ``scratch``, importing this project from ``installed`` only."""
    env = {**os.environ, "PYTHONPATH": str(installed), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("BN_CONFORMANCE_IMPL", None)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=scratch, env=env,
                          capture_output=True, text=True, timeout=900)


def test_the_installed_package_is_what_runs(installed: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(installed)}
    where = subprocess.run([sys.executable, "-c", "import conformance.harness.plugin as p; print(p.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(installed)
    assert (installed / "conformance" / "checks" / "test_forward.py").is_file()


def test_the_jitted_jax_example_passes_everything_it_supports(installed: Path, tmp_path: Path) -> None:
    # docs/third-party.md, "Speed": an adapter written the documented way; a correct layer needs no registry.
    pytest.importorskip("jax")
    shutil.copy(ROOT / "examples" / "jax_adapter.py", tmp_path)
    run = outside(installed, tmp_path, "--pyargs", "conformance.checks", "-n", "2", "-q",
                  "--impl", "jax_adapter:IMPLEMENTATIONS", "--report", "out")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    doc = load(tmp_path / "out" / "conformance.json")
    assert doc["counts"]["pass"] > 300 and doc["counts"]["deviation"] == 0, doc["counts"]
    assert {r["implementation"] for r in doc["results"] if r["check"] == "porting"} >= {
        "ported.example.jax-to-reference.flax", "ported.reference.torch-to-example.jax"}


def test_tinygrad_example_from_outside(installed: Path, tmp_path: Path) -> None:
    pytest.importorskip("tinygrad")
    for name in ("tinygrad_adapter.py", "deviations.toml"):
        shutil.copy(ROOT / "examples" / "tinygrad" / name, tmp_path / name)
    run = outside(installed, tmp_path, "--pyargs", "conformance.checks", "-n", "2", "-q",
                  "--impl", "tinygrad_adapter:IMPLEMENTATIONS", "--deviations", "deviations.toml",
                  "--report", "out", "-k", SELECTION)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    jsonschema.validate(json.loads((tmp_path / "out" / "conformance.json").read_text()), json.loads(SCHEMA.read_text()))
    doc = load(tmp_path / "out" / "conformance.json")
    assert doc["counts"]["fail"] == doc["counts"]["error"] == doc["counts"]["unexpected_pass"] == 0
    assert doc["counts"]["pass"] > 0
    deviations = [r for r in doc["results"] if r["status"] == "deviation"]
    assert {r["params"]["edge"] for r in deviations} >= {"one_value_per_channel", "zero_size_batch"}
    assert {r["deviation"]["registry"] for r in deviations} == {"deviations.toml"}
    # The layer itself, and the pairs porting its state to and from every convention, which run on it.
    impl, *pairs = doc["implementations"]
    assert impl["name"] == "tinygrad.BatchNorm" and impl["version"] == "0.14.0" and impl["devices"] == ["PYTHON"]
    assert pairs and all(p["derivation"]["row"] == impl["name"] for p in pairs)
    # Channels-last cases are never generated for it (its layer takes channels at axis 1), yet counted.
    assert doc["not_generated"]["tinygrad.BatchNorm"]["forward"]["unsupported"]["channel_axis=-1"] > 0
    md = (tmp_path / "out" / "conformance.md").read_text()
    conventions = ("| tinygrad.BatchNorm | torch | new batch | 0.1 | 1e-05 | 1 | unbiased n/(n-1) variance; counter "
                   "num_batches_tracked "
                   "| raises ZeroDivisionError |")
    assert conventions in md
    assert "| deviations.toml |" in md  # the deviations table names the user's registry


def test_without_its_registry_the_run_fails(installed: Path, tmp_path: Path) -> None:
    # The same deviations unregistered are failures: the exit status gates a third party's CI.
    pytest.importorskip("tinygrad")
    shutil.copy(ROOT / "examples" / "tinygrad" / "tinygrad_adapter.py", tmp_path)
    run = outside(installed, tmp_path, "--pyargs", "conformance.checks", "-q",
                  "--impl", "tinygrad_adapter:IMPLEMENTATIONS", "-k", "one_value_per_channel and training")
    assert run.returncode == 1, run.stdout[-3000:]
    assert "3 failed" in run.stdout


def test_seed_example_from_outside_with_bn_conformance(installed: Path, tmp_path: Path) -> None:
    # The console command, as pip would install it: `bn-conformance` is conformance.cli:main.
    shutil.copy(ROOT / "examples" / "seed_adapter.py", tmp_path)
    env = {**os.environ, "PYTHONPATH": str(installed)}
    env.pop("BN_CONFORMANCE_IMPL", None)
    run = subprocess.run(
        [sys.executable, "-c", "import sys, conformance.cli; sys.exit(conformance.cli.main())", "-q", "-p",
         "no:cacheprovider", "--impl", "seed_adapter:IMPLEMENTATIONS", "-k", "training_output or running_statistics"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:]
    assert " passed" in run.stdout and "failed" not in run.stdout and "warning" not in run.stdout
