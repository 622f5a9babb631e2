"""Case grids: every check that runs on cases has its operator's grid and every grid a check, each grid's ids
are unique and are the ids of the cases it runs (or, for a named grid, its names), one id never stands for
two cases, the plugin shows those ids, and a case's seeded data is the same in every process (pytest-xdist
workers, reruns) and different from every other case's."""

import ast
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import case_digest
import pytest

import conformance.checks
from conformance.harness.registry import select
from conformance.operators.batchnorm import BATCHNORM
from conformance.operators.batchnorm.cases import EDGE_CASES, GRIDS, BatchNormCase

pytest_plugins = ["pytester"]

# Every stream BatchNormCase.rng is asked for (batches, cotangent, initial_state, direction).
SALTS = ("x", "dy", "state", "direction")
CHECKS = Path(conformance.checks.__file__).parent


def checks_on_cases() -> set[str]:
    """The checks (function names without ``test_``) that take a ``case``, read from the check modules' source:
    a check module may need a framework to import, its grid never does."""
    found = set()
    for path in CHECKS.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                if "case" in [a.arg for a in node.args.args]:
                    found.add(node.name.removeprefix("test_"))
    return found


def grid_cases() -> list[BatchNormCase]:
    """Every case some grid runs, once each, in a stable order."""
    return list(dict.fromkeys(case for check in GRIDS for _, case in BATCHNORM.cases(check)))


def test_every_check_on_cases_has_a_grid_and_every_grid_a_check() -> None:
    # The plugin generates a check once per case of its grid: a check without one would silently run
    # nothing, a grid without a check (a misspelt key) would never run.
    assert checks_on_cases() == set(GRIDS)
    assert {"training_output", "running_statistics", "gradients", "edge_case", "porting"} <= set(GRIDS)
    assert BATCHNORM.cases("no_such_check") == []
    assert len(grid_cases()) > 100


@pytest.mark.parametrize("check", sorted(GRIDS))
def test_grid_ids_are_unique_and_name_their_case(check: str) -> None:
    pairs = BATCHNORM.cases(check)
    ids = [name for name, _ in pairs]
    assert pairs, f"{check}: an empty grid"
    assert len(set(ids)) == len(ids), f"{check}: repeated ids {sorted({i for i in ids if ids.count(i) > 1})}"
    grid = GRIDS[check]()
    if isinstance(grid, dict):  # a named grid (edge cases): its names are the ids
        assert ids == list(grid) and all(name.isidentifier() for name in ids)
    else:  # what a failure shows must be the id that seeds the data it ran on
        assert ids == [case.id for _, case in pairs]


def test_the_plugin_shows_the_grids_ids(run_checks) -> None:
    # Each check once per case of its grid that the implementation can build, named by the case's id.
    (impl,) = select(["reference.torch"])
    result = run_checks("test_forward.py", "test_edge_cases.py", "--co", "-q", "--impl", impl.name)
    collected = {line.partition("::")[2] for line in result.stdout.lines if "::test_" in line}
    checks = {"training_output": "[{}]", "inference_output": "[{}]", "inference_after_training": "[{}]",
              "edge_case": "[{}-training]"}
    expected = {f"test_{check}" + form.format(f"{impl.name}-{name}") for check, form in checks.items()
                for name, case in BATCHNORM.cases(check) if not impl.unsupported(case.spec(impl.convention))}
    inference = {name.replace("-training]", "-inference]") for name in expected if name.startswith("test_edge_case")}
    assert collected == expected | inference
    assert len(expected) < sum(len(BATCHNORM.cases(check)) for check in checks)  # what it cannot build: left out


def test_one_id_never_stands_for_two_cases() -> None:
    by_id: dict[str, BatchNormCase] = {}
    for case in grid_cases():
        assert by_id.setdefault(case.id, case) == case, f"{case.id} names {by_id[case.id]!r} and {case!r}"


def test_named_edge_cases_are_different_cases() -> None:
    assert len({case.id for case in EDGE_CASES.values()}) == len(EDGE_CASES)


def test_every_case_and_stream_has_its_own_seed() -> None:
    # Seeds are adler32 of "id/salt", a weak hash: a collision would give two cases the same numbers.
    seeds = [zlib.adler32(f"{case.id}/{salt}".encode()) for case in grid_cases() for salt in SALTS]
    assert len(set(seeds)) == len(seeds)


def test_seeded_data_is_identical_across_processes() -> None:
    cases = grid_cases()
    here = {case.id: case_digest.digest(case) for case in cases}
    assert {case.id: case_digest.digest(case) for case in cases} == here  # no state carried between calls
    # A fresh interpreter with another string-hash seed, as an xdist worker or a rerun would be.
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    run = subprocess.run([sys.executable, case_digest.__file__], input="\n".join(map(repr, cases)), env=env,
                         capture_output=True, text=True, check=True)
    assert json.loads(run.stdout) == here
    assert len(set(here.values())) == len(here)  # and distinct cases got distinct data


@pytest.mark.parametrize("change, message", [({"data": "nans"}, "data 'nans'"),
                                             ({"dtype": "float8"}, "dtype 'float8'")])
def test_a_misspelt_case_is_rejected(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BatchNormCase((4, 3), **change)
