"""Edge and hostile input, as the operator lists them by name (BatchNorm: one value per channel, an empty
batch, a constant channel, |mean|/std = 1e4, eps 1e-12 and 1e3, NaN and Inf, ...). An exception is an
outcome here: the implementation agrees when it raises where the reference raises; where it legitimately
differs (one raises, the other returns beta) the deviation registry records what it does and why."""

import pytest

# inf - inf in the NaN/Inf cases is the point of those cases, not something to warn about.
pytestmark = [pytest.mark.conformance, pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")]


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_edge_case(conformance, case_name, case, training):
    mirror = conformance(case, edge=case_name, training=training)
    mirror.forward(case.batches()[0], training=training, may_raise=True)
    mirror.compare_state()
    mirror.verify()
