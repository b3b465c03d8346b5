"""Repeated runs of one configuration: mean, spread and a 95 % confidence interval per metric,
and the comparison of two groups of runs that a CI job can fail on (``--fail-if-slower``)."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from perfkit.analysis._read import PathArg, find_runs
from perfkit.analysis._tables import summaries

if TYPE_CHECKING:
    import pandas as pd

#: Two-sided 95 % critical values of Student's t (the 0.975 quantile) by degrees of freedom:
#: NIST/SEMATECH e-Handbook of Statistical Methods, section 1.3.6.7.2 "Critical Values of the
#: Student's t Distribution", column 0.975 (https://www.itl.nist.gov/div898/handbook/eda/section3/
#: eda3672.htm); beyond 100 degrees of freedom the normal quantile 1.960.
T_975: dict[int, float] = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
    10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110,
    18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060,
    26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042, 40: 2.021, 50: 2.009, 60: 2.000,
    80: 1.990, 100: 1.984,
}  # fmt: skip
_NORMAL_975 = 1.960
_TABULATED = sorted(T_975)
#: Columns of :func:`repeat_stats` per metric.
STAT_COLUMNS = ("n", "mean", "std", "ci_low", "ci_high")
#: Summary metrics that describe runs rather than measure them, left out of the statistics.
_NOT_MEASURED = ("world_size", "bs")


class MetricStats(NamedTuple):
    """One metric over repeated runs: n values, their mean, sample standard deviation
    (n - 1 in the denominator) and the 95 % confidence interval of the mean,
    mean +- t(0.975, n - 1) * std / sqrt(n). std and the interval are NaN for n < 2."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


def t_975(df: int) -> float:
    """Student's t 0.975 quantile for ``df`` degrees of freedom from :data:`T_975`; between
    tabulated values the next smaller df's (a wider, conservative interval)."""
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"Expected argument `df` to be an int >= 1 but got {df!r}")
    if df > _TABULATED[-1]:
        return _NORMAL_975
    return T_975[_TABULATED[bisect.bisect_right(_TABULATED, df) - 1]]


def metric_stats(values: Iterable[float]) -> MetricStats:
    """:class:`MetricStats` of ``values`` (NaN values are left out)."""
    data = [float(v) for v in values if not math.isnan(float(v))]
    n = len(data)
    if n == 0:
        return MetricStats(0, math.nan, math.nan, math.nan, math.nan)
    mean = math.fsum(data) / n
    if n == 1:
        return MetricStats(1, mean, math.nan, math.nan, math.nan)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in data) / (n - 1))
    half = t_975(n - 1) * std / math.sqrt(n)
    return MetricStats(n, mean, std, mean - half, mean + half)


def better(metric: str) -> int | None:
    """+1 when a higher value of ``metric`` is better (throughputs ``p_*`` and
    ``*throughput*``, MFU), -1 when lower is better (times: e2e_time and seconds ``*_s``),
    None for the rest (counts, fractions, accuracies, spreads)."""
    if metric.startswith("p_") or "throughput" in metric or metric == "MFU":
        return 1
    if metric == "e2e_time" or metric.endswith("_s"):
        return -1
    return None


def _numeric_metrics(table: pd.DataFrame) -> list[str]:
    import pandas as pd

    from perfkit.analysis._tables import _IDENTITY

    columns = []
    for column in table.columns:
        if column in _IDENTITY or column in _NOT_MEASURED or column.startswith("config."):
            continue
        if pd.api.types.is_numeric_dtype(table[column]) and not pd.api.types.is_bool_dtype(
            table[column]
        ):
            columns.append(column)
    return columns


def group_stats(paths: PathArg | Iterable[PathArg]) -> pd.DataFrame:
    """The runs under ``paths`` taken as repeats of one configuration: a row per numeric
    summary metric (summary units: s, samples/s, bytes, fractions), columns
    :data:`STAT_COLUMNS` (see :class:`MetricStats`)."""
    import pandas as pd

    table = summaries(paths)
    metrics = _numeric_metrics(table)
    frame = pd.DataFrame(
        [metric_stats(table[m].astype(float)) for m in metrics],
        index=pd.Index(metrics, name="metric"),
        columns=list(STAT_COLUMNS),
    )
    return frame.astype({"n": int})


def repeat_stats(
    paths: PathArg | Iterable[PathArg], by: Sequence[str] | None = None
) -> pd.DataFrame:
    """Runs under ``paths`` grouped into configurations, with :func:`group_stats` per group:
    a row per (group, metric), columns :data:`STAT_COLUMNS`. ``by``: the :func:`summaries`
    columns whose values make a configuration; by default the run name, the layout and every
    ``config.<key>`` column. The group label is the values of ``by`` joined by ", "."""
    import pandas as pd

    table = summaries(paths)
    keys = list(by) if by is not None else _default_keys(table)
    missing = [k for k in keys if k not in table.columns]
    if missing:
        raise ValueError(
            f"Expected argument `by` to name summary columns ({', '.join(table.columns)}) "
            f"but got {missing}"
        )
    frames = {}
    for values, rows in table.groupby(keys, dropna=False, sort=False):
        label = ", ".join(str(v) for v in (values if isinstance(values, tuple) else (values,)))
        frames[label] = group_stats(list(rows["run_dir"]))
    return pd.concat(frames, names=["group", "metric"])


def _default_keys(table: pd.DataFrame) -> list[str]:
    return ["name", "layout", *(c for c in table.columns if c.startswith("config."))]


def compare_groups(baseline: PathArg, *others: PathArg) -> pd.DataFrame:
    """Groups of repeated runs side by side: ``baseline`` (its runs are one group) and each of
    ``others`` (a folder of runs, or one run) as a group. A row per metric of the baseline;
    columns ``<group> <stat>`` for each :data:`STAT_COLUMNS` stat of each group (the label is
    the argument's directory name, the baseline's ``baseline``), then per other group
    ``<group>/baseline`` (ratio of means) and ``<group> slower`` (:func:`is_slower` at 0 %:
    True / False, None for metrics without a better direction)."""
    import pandas as pd

    if not others:
        raise ValueError("compare_groups(baseline, *others) needs at least one group to compare")
    base = group_stats(find_runs(baseline))
    parts = [base.add_prefix("baseline ")]
    for other in others:
        label = Path(other).name
        stats = group_stats(find_runs(other)).reindex(base.index)
        parts.append(stats.add_prefix(f"{label} "))
        ratio = stats["mean"] / base["mean"].where(base["mean"] != 0)
        slower = [
            is_slower(metric, _row(base, metric), _row(stats, metric), pct=0.0)
            for metric in base.index
        ]
        parts.append(
            pd.DataFrame({f"{label}/baseline": ratio, f"{label} slower": slower}, index=base.index)
        )
    frame = pd.concat(parts, axis=1)
    frame.index.name = "metric"
    return frame


def is_slower(metric: str, base: MetricStats, new: MetricStats, pct: float) -> bool | None:
    """Whether ``new`` is slower than ``base`` on ``metric`` beyond ``pct`` percent and
    beyond the confidence intervals: for a throughput (higher is better) the new mean is below
    base mean x (1 - pct/100) and the new interval lies wholly below the base interval; for a
    time (lower is better) the mirror image. A group of one run has no interval: its value
    stands for it, so only ``pct`` applies. None when the metric has no better direction or a
    side has no value."""
    direction = better(metric)
    if direction is None:
        return None
    b_mean, b_low, b_high = _bounds(base)
    n_mean, n_low, n_high = _bounds(new)
    if math.isnan(b_mean) or math.isnan(n_mean):
        return None
    factor = pct / 100.0
    if direction > 0:
        return bool(n_mean < b_mean * (1.0 - factor) and n_high < b_low)
    return bool(n_mean > b_mean * (1.0 + factor) and n_low > b_high)


def _bounds(stats: MetricStats) -> tuple[float, float, float]:
    low, high = stats.ci_low, stats.ci_high
    if math.isnan(low) or math.isnan(high):
        low = high = stats.mean
    return stats.mean, low, high


def _row(frame: pd.DataFrame, metric: str) -> MetricStats:
    row = frame.loc[metric]
    n = row["n"]
    return MetricStats(int(n) if n == n else 0, *(float(row[c]) for c in STAT_COLUMNS[1:]))


def regressions(
    baseline: PathArg | Iterable[PathArg],
    new: PathArg | Iterable[PathArg],
    pct: float,
    metrics: Sequence[str] | None = None,
) -> dict[str, tuple[float, float]]:
    """Metrics on which the runs ``new`` are slower than the runs ``baseline`` beyond ``pct``
    percent and beyond the 95 % intervals (:func:`is_slower`): {metric: (baseline mean, new
    mean)}. ``metrics``: the metrics to check (default: every throughput and time both groups
    have)."""
    if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not pct >= 0:
        raise ValueError(f"Expected argument `pct` to be a number >= 0 but got {pct!r}")
    base = group_stats(find_runs(baseline))
    stats = group_stats(find_runs(new))
    names = list(metrics) if metrics is not None else [m for m in base.index if better(m)]
    unknown = [m for m in names if better(m) is None]
    if unknown:
        raise ValueError(
            "Expected argument `metrics` to name throughputs (p_*) or times (e2e_time, *_s) "
            f"but got {unknown}"
        )
    missing = [m for m in names if m not in base.index or m not in stats.index]
    if metrics is not None and missing:
        raise ValueError(f"metrics {missing} are missing from the baseline or the new runs")
    found = {}
    for metric in (m for m in names if m not in missing):
        b, n = _row(base, metric), _row(stats, metric)
        if is_slower(metric, b, n, pct):
            found[metric] = (b.mean, n.mean)
    return found
