"""``--sample OPERATOR:K``: one case in K of each implementation's grid of each check of the operator, every
implementation and check still collected, the other operators untouched, a bad value refused."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_IMPLS = ["--impl", "reference.torch", "--impl", "reference.torch_groupnorm", "--impl", "reference.torch_instancenorm"]


def _collected(*extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "conformance/checks", "--collect-only", "-q",
                           "-p", "no:cacheprovider", *_IMPLS, *extra], cwd=ROOT, capture_output=True, text=True)


def _per_impl_and_check(out: str) -> Counter:
    """(implementation, check) -> how many of its checks were collected."""
    found = re.findall(r"::test_(\w+)\[(reference\.\w+)[-\]]", out)
    return Counter((impl, check) for check, impl in found)


def test_one_case_in_k_of_each_grid_of_the_sampled_operator():
    whole = _per_impl_and_check(_collected().stdout)
    sampled = _per_impl_and_check(_collected("--sample", "groupnorm:3").stdout)
    assert set(sampled) == set(whole)  # every implementation keeps every check
    for (impl, check), n in whole.items():
        if impl == "reference.torch":  # BatchNorm: not sampled
            assert sampled[impl, check] == n
        else:  # the first, fourth, ... case of the grid left once the cases it cannot build are gone
            assert sampled[impl, check] == -(-n // 3), (impl, check)
    assert sum(sampled.values()) < sum(whole.values())


def test_a_bad_sample_is_refused_naming_the_operators():
    for bad in ("groupnorm", "groupnorm:0", "rmsnorm:3"):  # RMSNorm is LayerNorm's records, no operator
        completed = _collected("--sample", bad)
        assert completed.returncode != 0 and "OPERATOR:K" in completed.stderr + completed.stdout, bad
