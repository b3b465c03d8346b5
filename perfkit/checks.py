"""Argument checks shared by the public API: each raises with the argument's name and the
expected form ("Expected argument `x` to be ... but got ..."): TypeError for a wrong type,
ValueError for a wrong value."""

from __future__ import annotations

import math
from typing import Any


def _got(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def check_type(name: str, value: Any, types: type | tuple[type, ...], expected: str) -> None:
    """TypeError unless ``value`` is an instance of ``types`` (a bool never counts as a number)."""
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise TypeError(f"Expected argument `{name}` to be {expected} but got {_got(value)}")
    if not isinstance(value, types):
        raise TypeError(f"Expected argument `{name}` to be {expected} but got {_got(value)}")


def check_callable(name: str, value: Any, expected: str) -> None:
    """TypeError unless ``value`` is callable."""
    if not callable(value):
        raise TypeError(f"Expected argument `{name}` to be {expected} but got {_got(value)}")


def check_finite(name: str, value: Any) -> float:
    """``value`` as a float: TypeError unless it is a real number, ValueError if NaN or inf."""
    check_type(name, value, (int, float), "a finite number")
    if not math.isfinite(value):
        raise ValueError(f"Expected argument `{name}` to be a finite number but got {value!r}")
    return float(value)


def check_finite_positive(name: str, value: Any, unit: str = "", minimum: float = 0.0) -> float:
    """``value`` as a float: TypeError unless a real number, ValueError unless finite and
    greater than 0 (or at least ``minimum`` when given), ``unit`` naming its unit."""
    suffix = f" {unit}" if unit else ""
    check_type(name, value, (int, float), f"a finite positive number{suffix}")
    if not (math.isfinite(value) and value > 0 and value >= minimum):
        least = f" of at least {minimum:g}{suffix}" if minimum > 0 else f"{suffix}"
        raise ValueError(
            f"Expected argument `{name}` to be a finite positive number{least} but got {value!r}"
        )
    return float(value)
