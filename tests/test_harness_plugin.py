"""The suite's pytest plugin (``conformance/harness/plugin.py``) passes facts to the report, never sentences:
the implementation from collection, what a skip was for, a crash as a flag, a check's report roles (the
operator's vocabulary gives them), and a Hypothesis-driven check's deciding example only; checks of cases an
implementation cannot build are never generated, and the report counts them; ``--deviations`` adds a user
registry, and a bad one is a usage error naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from facts import Properties, values

pytest_plugins = ["pytester"]


def test_random_check_records_the_deciding_example_only(run_checks) -> None:
    seen = Properties()
    run_checks("test_random.py", "--impl", "reference.torch", plugins=[seen], outcomes={"passed": 1})
    (properties,) = seen.by_test.values()
    params = values(properties, "params")
    assert len(params) == 1  # the example that decided the outcome, not one per example tried
    comparisons = values(properties, "comparison")
    # That example's steps: forward+backward (y, dx, dgamma, dbeta), two forwards (y), then the state:
    # gamma, beta, running mean, variance and num_batches_tracked.
    assert [c["quantity"] for c in comparisons] == [
        "y", "dx", "dgamma", "dbeta", "y", "y", "gamma", "beta", "running_mean", "running_var", "num_batches_tracked"]


EDGE_RUN = ("test_edge_cases.py", "-k", "one_value_per_channel_4d-training",
            "--impl", "examples.seed_adapter:IMPLEMENTATIONS", "--impl", "reference.torch")


def test_facts_on_every_check(run_checks) -> None:
    seen = Properties()
    result = run_checks(*EDGE_RUN, plugins=[seen])
    result.assert_outcomes(passed=1)  # and no skip: deselected by -k, or never generated
    for test, properties in seen.by_test.items():
        assert values(properties, "implementation") == [test.split("[")[1].split("-")[0]]
        assert values(properties, "roles") == [["one_value_per_channel"]]  # the edge case declares it
        assert values(properties, "check") == ["edge_case"] and values(properties, "check_family") == ["edge_cases"]
    # The seed layer is 2D only: its rank-4 checks are never generated.
    assert not any("seed.numpy" in t for t in seen.by_test)


def test_the_report_counts_what_was_not_generated(run_checks, tmp_path: Path) -> None:
    from conformance.report.results import load

    run_checks(*EDGE_RUN, "--report", str(tmp_path), outcomes={"passed": 1})
    doc = load(tmp_path / "conformance.json")
    assert doc["not_generated"] == {"seed.numpy": {"edge_cases": {"checks": 1, "unsupported": {"rank 4 input": 1}}}}
    assert "| seed.numpy | rank 4 input (1) |" in (tmp_path / "conformance.md").read_text()


def test_a_skip_for_a_missing_capability_names_it(run_checks) -> None:
    seen = Properties()
    run_checks("test_second_order.py", "-k", "16x3-cfirst-float64", "--impl", "examples.seed_adapter:IMPLEMENTATIONS",
               plugins=[seen], outcomes={"skipped": 1})
    (properties,) = seen.by_test.values()
    assert values(properties, "unsupported") == [["double_backward"]]


def test_crash_is_a_flag(run_checks) -> None:
    seen = Properties()
    run_checks("test_forward.py", "-k", "test_training_output and 16x3-cfirst-float32", "--impl",
               "fake_adapters:CRASHING", "--impl", "fake_adapters:HEALTHY", plugins=[seen],
               outcomes={"failed": 3, "passed": 1})
    crashed = {t.split("[")[1].split("-")[0]: values(p, "crashed") for t, p in seen.by_test.items()}
    assert crashed.pop("healthy.torch") == []
    assert set(map(tuple, crashed.values())) == {(True,)}


def test_bad_deviations_file_is_a_usage_error(run_checks, tmp_path: Path) -> None:
    bad = tmp_path / "mine.toml"
    bad.write_text('[[deviation]]\nimplementation = "x"\ncheck = "y"\n')
    result = run_checks("test_conventions.py", "--deviations", str(bad))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--deviations: mine.toml entry 0: unknown keys [[]], missing [[]'link', 'observed',"
                                 " 'reason'[]]*"])
    result = run_checks("test_conventions.py", "--deviations", str(tmp_path / "absent.toml"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--deviations: */absent.toml is not a file*"])
