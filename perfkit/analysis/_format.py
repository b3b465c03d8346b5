"""Numbers as table text with significant digits, not fixed decimals (0.15 stays 0.15)."""

from __future__ import annotations

import math

from perfkit.checks import check_type, wrong_value


def significant(value: float, digits: int = 3, min_decimals: int = 1) -> str:
    """``value`` with at least ``digits`` significant digits and at least ``min_decimals``
    decimals, trailing zeros beyond those dropped: 455.63 -> "455.6", 4.0 -> "4.0",
    0.15 -> "0.15", 0.04 -> "0.04", 0.123456 -> "0.123". NaN and infinities as Python writes
    them."""
    check_type("digits", digits, int, "an int >= 1")
    if digits < 1:
        raise wrong_value("digits", "an int >= 1", digits)
    if not math.isfinite(value):
        return str(value)
    exponent = math.floor(math.log10(abs(value))) if value != 0 else 0
    decimals = max(min_decimals, digits - 1 - exponent)
    text = f"{value:.{decimals}f}"
    if decimals > min_decimals:
        whole, fraction = text.split(".")
        fraction = fraction.rstrip("0").ljust(min_decimals, "0")
        text = f"{whole}.{fraction}" if fraction else whole
    return text
