"""The synchronized specification (``reference/sharding.py``) against the single-device layer on the
concatenated batch, and its argument checks."""

from __future__ import annotations

import numpy as np
import pytest

import reference
from reference.sharding import split_batch, synchronized_training

SIZES = [(4, 4), (5, 3), (1, 7), (1, 1, 1, 5), (0, 8)]


@pytest.mark.parametrize("sizes", SIZES, ids=[str(s) for s in SIZES])
@pytest.mark.parametrize("channel_axis", [1, -1])
def test_every_rank_holds_its_slice_of_the_global_results(sizes, channel_axis):
    rng = np.random.default_rng(sum(sizes))
    shape = (8, 3, 2, 5) if channel_axis == 1 else (8, 2, 5, 3)
    x, dy = rng.standard_normal(shape), rng.standard_normal(shape)
    gamma, beta = rng.uniform(0.5, 1.5, 3), rng.uniform(-0.5, 0.5, 3)
    layer = reference.BatchNorm(3, convention="torch", eps=1e-3, channel_axis=channel_axis)
    layer.gamma, layer.beta = gamma, beta
    y = layer.forward(x, training=True)
    dx = layer.backward(dy)
    ranks, mean, var = synchronized_training(x, dy, sizes, gamma, beta, 1e-3, channel_axis)
    assert [len(r.y) for r in ranks] == list(sizes)
    np.testing.assert_array_equal(np.concatenate([r.y for r in ranks]), y)
    np.testing.assert_array_equal(np.concatenate([r.dx for r in ranks]), dx)
    # The shards' shares add up to the global parameter gradients.
    np.testing.assert_allclose(sum(r.dgamma for r in ranks), layer.dgamma, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sum(r.dbeta for r in ranks), layer.dbeta, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal((mean, var), reference.batch_statistics(x, channel_axis))


def test_a_share_is_the_sum_over_the_rank_own_samples():
    rng = np.random.default_rng(1)
    x, dy = rng.standard_normal((6, 2)), rng.standard_normal((6, 2))
    ranks, mean, var = synchronized_training(x, dy, (2, 4), np.ones(2), np.zeros(2), 1e-5, 1)
    xhat = (x - mean) / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(ranks[0].dgamma, (dy[:2] * xhat[:2]).sum(0), rtol=1e-12)
    np.testing.assert_allclose(ranks[1].dbeta, dy[2:].sum(0), rtol=1e-12)


def test_without_affine_parameters_there_are_no_shares():
    x = np.random.default_rng(2).standard_normal((4, 3))
    ranks, _, _ = synchronized_training(x, np.ones_like(x), (2, 2), None, None, 1e-5)
    assert all(r.dgamma is None and r.dbeta is None for r in ranks)


@pytest.mark.parametrize("sizes, message", [((3, 3), "add up to 6"), ((), "non-empty"), ((9, -1), ">= 0")])
def test_bad_shard_sizes_are_refused(sizes, message):
    with pytest.raises(ValueError, match=message):
        split_batch(np.zeros((8, 3)), sizes)


def test_a_cotangent_of_another_shape_is_refused():
    with pytest.raises(ValueError, match="dy has shape"):
        synchronized_training(np.zeros((4, 3)), np.zeros((4, 2)), (2, 2), None, None, 1e-5)
