"""Case grids: every parametrized grid of ``conformance/checks`` has unique ids that are the ids of the
cases it runs, one id never stands for two cases, and a case's seeded data is the same in every
process (pytest-xdist workers, reruns) and different from every other case's."""

import importlib
import json
import os
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import case_digest
import pytest
from _pytest.mark import ParameterSet

import conformance.checks
from conformance.cases import Case
from conformance.checks.test_edge_cases import EDGE_CASES

SALTS = ("x", "dy", "state")  # every stream Case.rng is asked for (batches, cotangent, initial_state)


def grids() -> Iterator[tuple[str, pytest.Mark]]:
    """``(module::test, parametrize mark)`` for every parametrized check."""
    for path in sorted(Path(conformance.checks.__file__).parent.glob("test_*.py")):
        module = importlib.import_module(f"conformance.checks.{path.stem}")
        for name, function in vars(module).items():
            for mark in getattr(function, "pytestmark", []) if name.startswith("test_") else []:
                if mark.name == "parametrize":
                    yield f"{path.stem}::{name}", mark


GRIDS = list(grids())


def grid_cases() -> list[Case]:
    """Every case some grid runs, once each, in a stable order."""
    found = {}
    for _, mark in GRIDS:
        for value in mark.args[1]:
            value = value.values if isinstance(value, ParameterSet) else value
            for item in value if isinstance(value, tuple) else (value,):
                if isinstance(item, Case):
                    found.setdefault(item, None)
    return list(found)


def test_the_grids_are_found() -> None:
    # Guards the tests below against passing vacuously if the checks stop being found.
    names = {name for name, _ in GRIDS}
    assert {"test_forward::test_training_output", "test_running_stats::test_running_statistics",
            "test_gradients::test_gradients", "test_edge_cases::test_edge_case"} <= names
    assert len(grid_cases()) > 100


@pytest.mark.parametrize("name, mark", GRIDS, ids=[f"{name}-{mark.args[0]}" for name, mark in GRIDS])
def test_grid_ids_are_unique_and_name_their_case(name: str, mark: pytest.Mark) -> None:
    argnames, values = mark.args[:2]
    ids = mark.kwargs.get("ids")
    # Without explicit ids pytest shows case0, case1, ...; with duplicates it silently appends suffixes.
    assert ids is not None, f"{name}: no ids for {argnames}"
    ids = list(ids)
    assert len(ids) == len(values)
    assert len(set(ids)) == len(ids), f"{name}: repeated ids {sorted({i for i in ids if ids.count(i) > 1})}"
    if argnames == "case":  # what a failure shows must be the id that seeds the data it ran on
        assert ids == [case.id for case in values]


def test_one_id_never_stands_for_two_cases() -> None:
    by_id: dict[str, Case] = {}
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
        Case((4, 3), **change)
