"""Convention records that no built-in framework has, declared as a third party would, for the tests of the
reference and the harness; and Hypothesis strategies for any valid record and the momenta it takes."""

from hypothesis import strategies as st

from reference import CONVENTIONS, REQUIRED, Convention

__all__ = ["CUSTOM", "HAIKU_LIKE", "RECORDS", "STD_AVERAGE", "momenta", "records"]

# Haiku's ExponentialMovingAverage with zero_debias: hidden averages from 0, a counter, average = hidden /
# (1 - decay**counter); hk.BatchNorm requires decay_rate (no default) and stores the biased variance.
HAIKU_LIKE = Convention("haiku_like", "old", REQUIRED, 1e-5, -1, counter="counter", debiased=True,
                        frameworks="a Haiku-style layer (tests)")
# An average of the (Bessel-corrected) standard deviation, as tf-keras' batch renormalization keeps moving_stddev.
STD_AVERAGE = Convention("std_average", "old", 0.99, 1e-3, -1, running_var_ddof=1, averaged_spread="std",
                         frameworks="a layer averaging the standard deviation (tests)")
CUSTOM = {conv.name: conv for conv in (HAIKU_LIKE, STD_AVERAGE)}
RECORDS = {**CONVENTIONS, **CUSTOM}


@st.composite
def records(draw) -> Convention:
    """Any valid convention record; the defaults are REQUIRED (they play no part in the rules)."""
    weights = draw(st.sampled_from(["new", "old"]))
    counter = draw(st.sampled_from([None, "num_batches_tracked", "counter"]))
    debiased = counter is not None and draw(st.booleans())
    cumulative = counter is not None and not debiased and draw(st.booleans())
    return Convention("drawn", weights, REQUIRED, REQUIRED, REQUIRED, running_var_ddof=draw(st.sampled_from([0, 1])),
                      cumulative_momentum=cumulative, counter=counter, debiased=debiased,
                      averaged_spread=draw(st.sampled_from(["var", "std"])))


def momenta(convention: Convention) -> st.SearchStrategy:
    """Momenta valid in ``convention``: also None where it has the cumulative average; a positive new-batch
    weight where it debiases."""
    fixed = st.floats(0.0, 1.0).filter(lambda m: not convention.debiased or convention.new_batch_weight(m, 1) > 0)
    return st.one_of(st.none(), fixed) if convention.cumulative_momentum else fixed
