"""Repeated runs of one configuration: mean, spread and a 95 % confidence interval per metric,
and the comparison of two groups of runs that a CI job can fail on (``--fail-if-slower``)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from perfkit.analysis._discover import PathArg, find_runs
from perfkit.analysis._student import t_ppf, welch
from perfkit.analysis._tables import summaries
from perfkit.checks import check_type, wrong_value
from perfkit.figures import FIGURE_OF

if TYPE_CHECKING:
    import pandas as pd

#: Default significance level of the regression gate (one-sided Welch t-test).
ALPHA = 0.05
#: Columns of :func:`repeat_stats` per metric.
STAT_COLUMNS = ("n", "mean", "std", "ci_low", "ci_high")
#: Summary metrics that describe runs rather than measure them, left out of the statistics.
_NOT_MEASURED = ("world_size", "bs")


class MetricStats(NamedTuple):
    """One metric over repeated runs: n values, their mean, sample standard deviation
    (n - 1 in the denominator) and the 95 % confidence interval of the mean,
    mean +- t(0.975, n - 1) * std / sqrt(n) (the exact Student's t quantile). std and the
    interval are NaN for n < 2."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


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
    half = t_ppf(0.975, n - 1) * std / math.sqrt(n)
    return MetricStats(n, mean, std, mean - half, mean + half)


def better(metric: str) -> int | None:
    """+1 when a higher value of ``metric`` is better, -1 when lower is better, None for the
    rest: as the figure table says for perfkit's figures (throughputs, MFU, request and token
    rates +1; e2e_time, seconds and serving latencies -1; counts, fractions, spreads None); for
    other names (logged values), +1 for ``p_*`` and ``*throughput*``, -1 for
    seconds ``*_s``, else None."""
    figure = FIGURE_OF.get(metric)
    if figure is not None:
        return figure.better
    if metric.startswith("p_") or "throughput" in metric:
        return 1
    if metric.endswith("_s"):
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
    return _stats(summaries(paths))


def _stats(table: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

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


class Verdict(NamedTuple):
    """The gate on one metric: the two means, ``worse_pct`` (how much worse new is than base,
    in percent of the base mean: lower for a throughput, higher for a time; negative when
    better), Welch's t, its degrees of freedom and the one-sided p-value that new is worse by
    more than the gate's percentage (NaN when a side has fewer than 2 runs), and ``slower``,
    the gate's decision."""

    base_mean: float
    new_mean: float
    worse_pct: float
    t: float
    df: float
    p: float
    slower: bool


def slower_test(
    metric: str,
    base: Iterable[float],
    new: Iterable[float],
    pct: float = 0.0,
    alpha: float = ALPHA,
) -> Verdict | None:
    """Whether the runs ``new`` are slower than the runs ``base`` on ``metric`` (values in the
    metric's unit, NaN left out) by more than ``pct`` percent, as a one-sided Welch t-test
    (unequal variances) at level ``alpha``: for a throughput, of H0 mean(new) >= (1 - pct/100)
    mean(base) against mean(new) below it (the base values scaled by 1 - pct/100); for a time
    the mirror image, with 1 + pct/100. So a true slowdown of at most ``pct`` fails at most
    ``alpha`` of the time. A side with one run has no variance: there the observed
    difference alone is compared with ``pct``. None when the metric has no better direction
    (:func:`better`) or a side has no value."""
    direction = better(metric)
    b = [float(v) for v in base if not math.isnan(float(v))]
    n = [float(v) for v in new if not math.isnan(float(v))]
    if direction is None or not b or not n:
        return None
    b_mean, n_mean = math.fsum(b) / len(b), math.fsum(n) / len(n)
    worse_pct = 100.0 * direction * (b_mean - n_mean) / abs(b_mean) if b_mean else math.nan
    margin = 1.0 - direction * pct / 100.0
    test = welch([x * margin for x in b], n)
    if test is None:
        nan = math.nan
        return Verdict(b_mean, n_mean, worse_pct, nan, nan, nan, bool(worse_pct > pct))
    p = test.p_greater if direction < 0 else 1.0 - test.p_greater
    return Verdict(b_mean, n_mean, worse_pct, test.t, test.df, p, bool(p < alpha))


def _check_gate(pct: float, alpha: float) -> None:
    check_type("pct", pct, (int, float), "a number >= 0")
    if not pct >= 0:
        raise wrong_value("pct", "a number >= 0", pct)
    check_type("alpha", alpha, (int, float), "a number in (0, 1)")
    if not 0 < alpha < 1:
        raise wrong_value("alpha", "a number in (0, 1)", alpha)


def compare_groups(baseline: PathArg, *others: PathArg, alpha: float = ALPHA) -> pd.DataFrame:
    """Groups of repeated runs side by side: ``baseline`` (its runs are one group) and each of
    ``others`` (a folder of runs, or one run) as a group. A row per metric of the baseline;
    columns ``<group> <stat>`` for each :data:`STAT_COLUMNS` stat of each group (the label is
    the argument's directory name, the baseline's ``baseline``), then per other group
    ``<group>/baseline`` (ratio of means), ``<group> p`` (the one-sided Welch p-value that the
    group is worse, :func:`slower_test` at 0 %) and ``<group> slower`` (that p < ``alpha``:
    True / False, None for metrics without a better direction)."""
    import pandas as pd

    if not others:
        raise ValueError("compare_groups(baseline, *others) needs at least one group to compare")
    _check_gate(0.0, alpha)
    base_table = summaries(find_runs(baseline))
    base = _stats(base_table)
    parts = [base.add_prefix("baseline ")]
    for other in others:
        label = Path(other).name
        table = summaries(find_runs(other))
        stats = _stats(table).reindex(base.index)
        parts.append(stats.add_prefix(f"{label} "))
        ratio = stats["mean"] / base["mean"].where(base["mean"] != 0)
        verdicts = [
            slower_test(m, _values(base_table, m), _values(table, m), 0.0, alpha)
            for m in base.index
        ]
        parts.append(
            pd.DataFrame(
                {
                    f"{label}/baseline": ratio,
                    f"{label} p": [math.nan if v is None else v.p for v in verdicts],
                    f"{label} slower": [None if v is None else v.slower for v in verdicts],
                },
                index=base.index,
            )
        )
    frame = pd.concat(parts, axis=1)
    frame.index.name = "metric"
    return frame


def _values(table: pd.DataFrame, metric: str) -> list[float]:
    return list(table[metric].astype(float)) if metric in table.columns else []


def regressions(
    baseline: PathArg | Iterable[PathArg],
    new: PathArg | Iterable[PathArg],
    pct: float,
    metrics: Sequence[str] | None = None,
    alpha: float = ALPHA,
) -> dict[str, Verdict]:
    """Metrics on which the runs ``new`` are slower than the runs ``baseline`` by more than
    ``pct`` percent at significance level ``alpha`` (:func:`slower_test`):
    {metric: :class:`Verdict`}. ``metrics``: the metrics to check (default: every throughput
    and time both groups have)."""
    _check_gate(pct, alpha)
    base_table, new_table = summaries(find_runs(baseline)), summaries(find_runs(new))
    base, stats = _stats(base_table), _stats(new_table)
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
        verdict = slower_test(
            metric, _values(base_table, metric), _values(new_table, metric), pct, alpha
        )
        if verdict is not None and verdict.slower:
            found[metric] = verdict
    return found
