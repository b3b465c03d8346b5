"""Records -> pandas: tidy DataFrames, FlagPerf-style tables, run comparison, plots, traces.

The public names are those in ``__all__``, each documented in docs/analysis.md; the modules
behind them (``perfkit.analysis._read`` and the others) are internal.

pandas and matplotlib are imported when these functions run, not when perfkit is imported.
Files are read with ``json.loads`` only: nothing in a run directory is evaluated or unpickled.
"""

from __future__ import annotations

from perfkit.analysis._export import export
from perfkit.analysis._load import load
from perfkit.analysis._mllog import mllog_lines
from perfkit.analysis._plot import plot_run, save_plot
from perfkit.analysis._render import compare_text, report_text
from perfkit.analysis._repeats import compare_groups, group_stats, regressions, repeat_stats
from perfkit.analysis._serving import requests
from perfkit.analysis._tables import compare, io_share, seed_tables, step_times, summaries
from perfkit.analysis._trace import chrome_trace, write_trace

__all__ = [
    "chrome_trace",
    "compare",
    "compare_groups",
    "compare_text",
    "export",
    "group_stats",
    "io_share",
    "load",
    "mllog_lines",
    "plot_run",
    "regressions",
    "repeat_stats",
    "report_text",
    "requests",
    "save_plot",
    "seed_tables",
    "step_times",
    "summaries",
    "write_trace",
]
