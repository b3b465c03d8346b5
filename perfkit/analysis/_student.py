"""Student's t distribution (exact quantiles and tail probabilities, any real degrees of
freedom) and Welch's unequal-variance t-test: scipy's when it is installed, else the regularized
incomplete beta function evaluated here (Lentz's continued fraction), tested against scipy."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from perfkit.checks import check_type, wrong_value

_EPS = 1e-16
_TINY = 1e-300


def _check_df(df: float) -> float:
    check_type("df", df, (int, float), "a number > 0")
    if not df > 0:
        raise wrong_value("df", "a number > 0", df)
    return float(df)


def _check_p(p: float) -> float:
    check_type("p", p, (int, float), "a number in (0, 1)")
    if not 0.0 < p < 1.0:
        raise wrong_value("p", "a number in (0, 1)", p)
    return float(p)


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (Numerical Recipes' betacf, modified Lentz)."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    result = d
    for m in range(1, 10_000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            result *= c * d
        if abs(c * d - 1.0) < _EPS:
            break
    return result


def _incomplete_beta(a: float, b: float, x: float, y: float) -> tuple[float, float]:
    """The regularized incomplete beta function I_x(a, b) and its complement 1 - I_x(a, b),
    for a, b > 0, 0 <= x <= 1 and y = 1 - x given separately (so that neither loses digits
    to a subtraction): each of the pair is exact to a few ulps of the smaller one."""
    if x <= 0.0:
        return 0.0, 1.0
    if y <= 0.0:
        return 1.0, 0.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        value = math.exp(log_front) * _beta_fraction(a, b, x) / a
        return value, 1.0 - value
    complement = math.exp(log_front) * _beta_fraction(b, a, y) / b
    return 1.0 - complement, complement


def _tails(t: float, df: float) -> tuple[float, float]:
    """(P(T > |t|), P(|T| < |t|)) for Student's t with ``df`` degrees of freedom."""
    t2 = t * t
    half_tail, central = _incomplete_beta(df / 2.0, 0.5, df / (df + t2), t2 / (df + t2))
    return 0.5 * half_tail, central


def t_sf_python(t: float, df: float) -> float:
    """P(T > t), Student's t with ``df`` (real, > 0) degrees of freedom, pure Python."""
    df = _check_df(df)
    tail, central = _tails(t, df)
    return tail if t >= 0 else 0.5 + 0.5 * central


def t_ppf_python(p: float, df: float) -> float:
    """The ``p`` quantile (0 < p < 1) of Student's t with ``df`` (real, > 0) degrees of
    freedom, pure Python: |t| found by bisection to float precision, on the upper tail
    P(T > |t|) = min(p, 1 - p) far from the median, on P(|T| < |t|) = |2p - 1| near it."""
    df, p = _check_df(df), _check_p(p)
    if p == 0.5:
        return 0.0
    upper, central = min(p, 1.0 - p), abs(2.0 * p - 1.0)

    def below(t: float) -> bool:  # |t| is still below the quantile's
        tail, inside = _tails(t, df)
        return tail > upper if upper < 0.25 else inside < central

    low, high = 0.0, 1.0
    while below(high):
        low, high = high, high * 2.0
    while high - low > 4 * _EPS * high:
        mid = 0.5 * (low + high)
        if below(mid):
            low = mid
        else:
            high = mid
    t = 0.5 * (low + high)
    return t if p > 0.5 else -t


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom: scipy's ``t.sf`` when scipy is
    installed, else :func:`t_sf_python`."""
    try:
        from scipy import stats
    except ImportError:
        return t_sf_python(t, df)
    return float(stats.t.sf(t, _check_df(df)))


def t_ppf(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom: scipy's ``t.ppf``
    when scipy is installed, else :func:`t_ppf_python`."""
    try:
        from scipy import stats
    except ImportError:
        return t_ppf_python(p, df)
    return float(stats.t.ppf(_check_p(p), _check_df(df)))


class Welch(NamedTuple):
    """Welch's t-test of ``mean(new) - mean(base)``: the t statistic, the Welch-Satterthwaite
    degrees of freedom and the one-sided p-value P(T >= t) (small when new is higher)."""

    t: float
    df: float
    p_greater: float


def welch(base: Sequence[float], new: Sequence[float]) -> Welch | None:
    """Welch's unequal-variance t-test on two samples (at least 2 values each; None for
    fewer). Two samples without spread: t is +-inf (p 0 or 1) if the means differ, else 0."""
    n1, n2 = len(base), len(new)
    if n1 < 2 or n2 < 2:
        return None
    m1, m2 = math.fsum(base) / n1, math.fsum(new) / n2
    v1 = math.fsum((x - m1) ** 2 for x in base) / (n1 - 1) / n1
    v2 = math.fsum((x - m2) ** 2 for x in new) / (n2 - 1) / n2
    se2 = v1 + v2
    if se2 == 0.0:
        diff = m2 - m1
        t = math.copysign(math.inf, diff) if diff else 0.0
        return Welch(t, float(n1 + n2 - 2), 0.0 if t == math.inf else 1.0 if diff else 0.5)
    df = se2**2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))
    t = (m2 - m1) / math.sqrt(se2)
    return Welch(t, df, t_sf(t, df))
