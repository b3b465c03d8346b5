"""Records -> pandas: tidy DataFrames, FlagPerf-style tables, run comparison, plots, traces.

pandas and matplotlib are imported when these functions run, not when perfkit is imported.
Files are read with ``json.loads`` only: nothing in a run directory is evaluated or unpickled.
"""

from __future__ import annotations

from perfkit.analysis._format import significant
from perfkit.analysis._mllog import DIVISIONS, HYPERPARAMETER_KEYS, mllog_lines
from perfkit.analysis._plot import plot_run, save_plot
from perfkit.analysis._read import (
    META_COLUMNS,
    PathArg,
    RunData,
    find_run,
    find_runs,
    load,
    read_meta,
    read_run,
    read_summary,
    run_status,
)
from perfkit.analysis._render import FORMATS, compare_text, markdown, report_text
from perfkit.analysis._repeats import (
    T_975,
    MetricStats,
    compare_groups,
    group_stats,
    is_slower,
    metric_stats,
    regressions,
    repeat_stats,
    t_975,
)
from perfkit.analysis._tables import (
    SEED_COLUMNS,
    compare,
    fix_hp,
    io_share,
    rebuild_summary,
    seed_tables,
    step_times,
    summaries,
)
from perfkit.analysis._trace import chrome_trace, write_trace

__all__ = [
    "DIVISIONS",
    "FORMATS",
    "HYPERPARAMETER_KEYS",
    "META_COLUMNS",
    "SEED_COLUMNS",
    "T_975",
    "MetricStats",
    "PathArg",
    "RunData",
    "chrome_trace",
    "compare",
    "compare_groups",
    "compare_text",
    "find_run",
    "find_runs",
    "fix_hp",
    "group_stats",
    "io_share",
    "is_slower",
    "load",
    "markdown",
    "metric_stats",
    "mllog_lines",
    "plot_run",
    "read_meta",
    "read_run",
    "read_summary",
    "rebuild_summary",
    "regressions",
    "repeat_stats",
    "report_text",
    "run_status",
    "save_plot",
    "seed_tables",
    "significant",
    "step_times",
    "summaries",
    "t_975",
    "write_trace",
]
