"""Tables as text: the seed-style report and the run comparison in Markdown, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from perfkit.analysis._discover import PathArg, find_runs
from perfkit.analysis._repeats import ALPHA, compare_groups
from perfkit.analysis._serving import has_requests, latency_rows, throughput_rows
from perfkit.analysis._tables import MISSING, compare, seed_rows, summary_rows
from perfkit.checks import one_of
from perfkit.serving import SERVING_KEYS

if TYPE_CHECKING:
    import pandas as pd

FORMATS = ("md", "csv", "json")
_TITLES = {
    "train": "Training runs",
    "infer": "Inference runs",
    "none": "Runs that ended before any phase",
    "llm": "LLM training runs (tokens: tps_*_per_device is FlagPerf's token/p/s)",
    "serving_latency": "Serving latency (generation runs)",
    "serving_throughput": "Serving throughput (generation runs)",
}


def _check_format(fmt: str) -> None:
    one_of("fmt", fmt, FORMATS)


def report_text(paths: PathArg | Iterable[PathArg], fmt: str = "md") -> str:
    """The seed-style performance tables of the runs under ``paths`` (see
    :func:`perfkit.analysis.seed_tables`) as ``fmt`` ("md", "csv" or "json"); one table per
    kind of run, titled when there are both; then, for runs with requests (generation /
    serving), the serving tables: TTFT / TPOT / ITL / E2EL mean, p50, p90, p99 (ms) and
    requests, throughputs and goodput with its SLO (JSON: key "serving", the figures in the
    summary's units)."""
    _check_format(fmt)
    rows = summary_rows(paths)  # a finished run's table reads its summary.json only: no pandas
    serving = [row for row in rows if has_requests(row)]
    if fmt == "json":  # numbers as JSON numbers, in the summary's units
        tables: dict[str, Any] = seed_rows(paths, numbers=True, rows=rows)
        if serving:
            tables["serving"] = [_serving_numbers(row) for row in serving]
        return json.dumps(tables, indent=2)
    tables = seed_rows(paths, rows=rows)
    if serving:
        tables["serving_latency"] = latency_rows(serving)
        tables["serving_throughput"] = throughput_rows(serving)
    parts = []
    for kind, rows in tables.items():
        header = list(rows[0])
        cells = [[row[c] for c in header] for row in rows]
        text = _markdown(header, cells) if fmt == "md" else _csv(header, cells)
        if len(tables) > 1:
            text = f"{'## ' if fmt == 'md' else '# '}{_TITLES[kind]}\n\n{text}"
        parts.append(text)
    return "\n\n".join(parts)


def _serving_numbers(row: dict[str, Any]) -> dict[str, Any]:
    figures = {key: row[key] for key in SERVING_KEYS if row.get(key) is not None}
    return {"run": row["run"], **figures}


def _csv(header: list[str], rows: list[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([printable(c) for c in header])
    writer.writerows([printable(c) for c in row] for row in rows)
    return out.getvalue().rstrip()


def compare_text(
    baseline: PathArg,
    *others: PathArg,
    fmt: str = "md",
    groups: bool = False,
    alpha: float = ALPHA,
) -> str:
    """:func:`perfkit.analysis.compare` as ``fmt`` ("md", "csv" or "json"); when ``groups`` is
    True or ``baseline`` holds several runs, :func:`perfkit.analysis.compare_groups` (each
    argument a group of repeated runs: mean, std, 95 % interval, Welch p-value and the
    ``slower`` verdict at level ``alpha``)."""
    _check_format(fmt)
    if groups or len(find_runs(baseline)) > 1:
        frame = compare_groups(baseline, *others, alpha=alpha)
    else:
        frame = compare(baseline, *others)
    if fmt == "json":
        return frame.to_json(orient="index", indent=2) or ""
    if fmt == "csv":
        return frame_csv(frame, index=True)
    return markdown(frame.reset_index())


def printable(text: str) -> str:
    """``text`` with control and format characters (newlines, ANSI escapes, bidi overrides)
    written as escapes (``\\n``, ``\\x1b``), so a value from a run cannot forge a table row
    or drive the terminal."""
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char.isprintable() or char == " ":
            out.append(char)
        else:
            out.append(ascii(char)[1:-1] if ord(char) > 0x7F else repr(char)[1:-1])
    return "".join(out)


def frame_csv(frame: pd.DataFrame, index: bool) -> str:
    """``frame`` as CSV, every text cell, column name and index label :func:`printable`."""
    clean = frame.rename(columns=lambda c: printable(str(c)))
    if index:
        clean = clean.rename(index=lambda label: printable(str(label)))
    for column in clean.columns:
        clean[column] = clean[column].map(lambda v: printable(v) if isinstance(v, str) else v)
    return str(clean.to_csv(index=index)).rstrip()


def markdown(frame: pd.DataFrame) -> str:
    """``frame`` as a Markdown table: numbers with 6 significant digits, "/" where missing."""
    return _markdown(
        [str(c) for c in frame.columns],
        [[_cell(v) for v in row] for row in frame.itertuples(index=False)],
    )


def _markdown(header: list[str], body: list[list[str]]) -> str:
    """A Markdown table of raw text cells (made printable, ``|`` escaped)."""
    header = [_md_text(c) for c in header]
    body = [[_md_text(c) for c in row] for row in body]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _md_text(text: str) -> str:
    """A Markdown table cell's text: printable, with ``|`` escaped."""
    return printable(text).replace("|", "\\|")
