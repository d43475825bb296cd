"""Parameter lists whose first cases run in the fast loop (`pytest -m "not slow"`) and the rest only in
the full suite (CI runs everything): the interpreted Triton oracles are the fast loop's main cost."""
import pytest


def fast_first(values, keep):
    """``values`` for one parametrize argument, the cases after the first ``keep`` marked slow.
    Order the list so the cases that cover distinct code paths come first."""
    return [value if index < keep else pytest.param(value, marks=pytest.mark.slow)
            for index, value in enumerate(values)]


def fast_first_rows(rows, keep):
    """The same for several parametrize arguments at once (``rows`` of tuples)."""
    return [row if index < keep else pytest.param(*row, marks=pytest.mark.slow) for index, row in enumerate(rows)]
