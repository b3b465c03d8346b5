"""Table numbers keep their significant digits: a real 0.15 img/s is not printed as 0.1."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perfkit.analysis._format import significant


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.15, "0.15"),  # fixed 1 decimal would print 0.1
        (0.04, "0.04"),  # ... and 0.0
        (0.123456, "0.123"),
        (4.0, "4.0"),  # the seeds' 1 decimal for larger numbers
        (455.63, "455.6"),
        (12345.678, "12345.7"),
        (0.0, "0.0"),
        (-0.0375, "-0.0375"),
        (math.nan, "nan"),
    ],
)
def test_examples(value, text):
    assert significant(value) == text


@given(st.floats(min_value=1e-9, max_value=1e12), st.integers(1, 8), st.booleans())
def test_relative_error_within_the_digits(value, digits, negative):
    value = -value if negative else value
    text = significant(value, digits)
    # rounding to `digits` significant digits errs by half a unit of the last one at most
    assert abs(float(text) - value) <= 0.5 * 10 ** (1 - digits) * abs(value) * (1 + 1e-9)
    assert float(text) != 0.0  # a real value never prints as zero
    assert "e" not in text


def test_bad_digits():
    with pytest.raises(ValueError, match="`digits` to be an int >= 1"):
        significant(1.0, 0)
