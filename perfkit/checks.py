"""Argument checks with one message style: a wrong type raises TypeError, a wrong value
ValueError, both as "Expected argument `x` to be <the expected form> but got <what came>"."""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

#: Most characters of a value's repr an error message quotes.
MAX_REPR = 200


def short_repr(value: Any, limit: int = MAX_REPR) -> str:
    """``repr(value)`` cut to ``limit`` characters (its length said); a repr that raises is
    named, not raised."""
    try:
        text = repr(value)
    except Exception as err:  # a config object whose __repr__ fails
        return f"<{type(value).__name__} whose repr raised {type(err).__name__}>"
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} characters)"
    return text


def _got(value: Any) -> str:
    return f"{short_repr(value)} ({type(value).__name__})"


def wrong_type(name: str, expected: str, value: Any) -> TypeError:
    """The TypeError for argument ``name``."""
    return TypeError(f"Expected argument `{name}` to be {expected} but got {_got(value)}")


def wrong_value(name: str, expected: str, value: Any) -> ValueError:
    """The ValueError for argument ``name``."""
    return ValueError(f"Expected argument `{name}` to be {expected} but got {_got(value)}")


def check_type(name: str, value: Any, types: type | tuple[type, ...], expected: str) -> None:
    """TypeError unless ``value`` is an instance of ``types`` (a bool never counts as a number)."""
    allowed = types if isinstance(types, tuple) else (types,)
    if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
        raise wrong_type(name, expected, value)


def check_callable(name: str, value: Any, expected: str) -> None:
    """TypeError unless ``value`` is callable."""
    if not callable(value):
        raise wrong_type(name, expected, value)


def check_finite(name: str, value: Any) -> float:
    """``value`` as a float: TypeError unless it is a real number, ValueError if NaN or inf."""
    check_type(name, value, (int, float), "a finite number")
    if not math.isfinite(value):
        raise wrong_value(name, "a finite number", value)
    return float(value)


def positive_number(name: str, value: Any, unit: str = "seconds", minimum: float = 0.0) -> float:
    """``value`` as a float: a real number (not a bool), finite, above 0 and at least
    ``minimum`` (in ``unit``)."""
    expected = f"a positive finite number of {unit}"
    if minimum > 0:
        expected += f" (at least {minimum:g})"
    check_type(name, value, (int, float), expected)
    if not (math.isfinite(value) and value > 0 and value >= minimum):
        raise wrong_value(name, expected, value)
    return float(value)


def one_of(name: str, value: Any, choices: Collection[str]) -> str:
    """``value``, a string among ``choices``."""
    expected = f"one of {tuple(choices)}"
    if not isinstance(value, str):
        raise wrong_type(name, expected, value)
    if value not in choices:
        raise wrong_value(name, expected, value)
    return value


def non_empty_str(name: str, value: Any, forbidden: str = "") -> str:
    """``value``, a non-empty string holding none of the characters of ``forbidden``."""
    expected = "a non-empty string" + (f" without {forbidden!r}" if forbidden else "")
    if not isinstance(value, str):
        raise wrong_type(name, expected, value)
    if not value or any(c in value for c in forbidden):
        raise wrong_value(name, expected, value)
    return value
