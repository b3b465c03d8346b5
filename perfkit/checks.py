"""Argument checks with one message style: a wrong type raises TypeError, a wrong value
ValueError, both as "Expected argument `x` to be <the expected form> but got <what came>"."""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection
from typing import Any


def _got(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def wrong_type(name: str, expected: str, value: Any) -> TypeError:
    """The TypeError for argument ``name``."""
    return TypeError(f"Expected argument `{name}` to be {expected} but got {_got(value)}")


def wrong_value(name: str, expected: str, value: Any) -> ValueError:
    """The ValueError for argument ``name``."""
    return ValueError(f"Expected argument `{name}` to be {expected} but got {_got(value)}")


def positive_number(name: str, value: Any, unit: str = "seconds") -> float:
    """``value`` as a float: a real number (not a bool), finite and above 0."""
    expected = f"a positive finite number of {unit}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise wrong_type(name, expected, value)
    if not (math.isfinite(value) and value > 0):
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


def renamed(old: str, new: str, old_value: Any, new_value: Any, default: Any) -> Any:
    """The value of an argument renamed from ``old`` to ``new``: ``old_value`` (with a
    DeprecationWarning) when only the old name was given, else ``new_value``."""
    if old_value is None:
        return new_value
    if new_value != default:
        raise TypeError(f"give `{new}` only; `{old}` is its old name")
    warnings.warn(f"argument `{old}` is deprecated: use `{new}`", DeprecationWarning, stacklevel=3)
    return old_value
