"""Shared test setup: reproducible Hypothesis runs and deterministic per-test random data."""

import zlib

import numpy as np
import pytest
from hypothesis import settings

# "deterministic" is the default so that CI and every developer see the same examples; "dev" explores
# new ones. Choose with the Hypothesis plugin's standard option: `pytest --hypothesis-profile dev`
# (the plugin loads that profile after this module has loaded the default).
settings.register_profile(
    "deterministic", derandomize=True, database=None, deadline=None, max_examples=40, print_blob=True
)
settings.register_profile("dev", derandomize=False, deadline=None, max_examples=40, print_blob=True)
settings.load_profile("deterministic")


@pytest.fixture
def rng(request):
    """A generator seeded from the test's node id: the same data on every run, different per test."""
    return np.random.default_rng(zlib.adler32(request.node.nodeid.encode()))

