"""Shared test setup: deterministic per-test random data (Hypothesis profiles: the root conftest)."""

import zlib

import numpy as np
import pytest

@pytest.fixture
def rng(request):
    """A generator seeded from the test's node id: the same data on every run, different per test."""
    return np.random.default_rng(zlib.adler32(request.node.nodeid.encode()))

