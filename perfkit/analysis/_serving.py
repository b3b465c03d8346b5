"""The serving tables of generation runs (runs with requests): latency percentiles and
throughputs, as ``perfkit report`` prints them; and the per-request table."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from perfkit.analysis._format import significant
from perfkit.analysis._read import PathArg, find_runs, read_run, reading
from perfkit.figures import LATENCIES, SLO_KEYS, STATISTICS
from perfkit.serving import from_record

if TYPE_CHECKING:
    import pandas as pd

MISSING = "/"
#: Row labels of the latency table, per latency.
LATENCY_LABELS = {"ttft_s": "TTFT", "tpot_s": "TPOT", "itl_s": "ITL", "e2el_s": "E2EL"}
#: Columns of the throughput table: (header, summary figure).
THROUGHPUT_COLUMNS = (
    ("requests", "requests_completed"),
    ("failed", "requests_failed"),
    ("duration (s)", "serving_duration_s"),
    ("requests/s", "requests_per_s"),
    ("output tokens/s", "output_tps"),
    ("total tokens/s", "total_tps"),
    ("goodput requests/s", "goodput_requests_per_s"),
)


def has_requests(row: Mapping[str, Any]) -> bool:
    """Whether a summary row (:func:`perfkit.analysis.summaries`) is a generation run's."""
    return _number(row.get("requests_completed")) or _number(row.get("requests_failed"))


def _number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _ms(value: Any) -> str:
    return significant(1000.0 * float(value)) if _number(value) else MISSING


def _slo(row: Mapping[str, Any]) -> str:
    given = [
        f"{key[:-2].upper()} <= {significant(float(row[f'slo_{key}']))} s"
        for key in SLO_KEYS
        if _number(row.get(f"slo_{key}"))
    ]
    return ", ".join(given) or MISSING


def latency_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """One text row per run and latency: run, latency, then mean / p50 / p90 / p99 in ms."""
    out = []
    for row in rows:
        for latency in LATENCIES:
            cells = {"run": str(row["run"]), "latency": LATENCY_LABELS[latency]}
            cells.update({f"{stat} (ms)": _ms(row.get(f"{latency}_{stat}")) for stat in STATISTICS})
            out.append(cells)
    return out


def throughput_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """One text row per run: requests, failed, duration, requests/s, output and total
    tokens/s, goodput requests/s and the SLO it used."""
    out = []
    for row in rows:
        cells = {"run": str(row["run"])}
        for header, name in THROUGHPUT_COLUMNS:
            value: Any = row.get(name)
            if not _number(value):
                cells[header] = MISSING
            elif name in ("requests_completed", "requests_failed"):
                cells[header] = str(int(value))
            else:
                cells[header] = significant(float(value))
        cells["SLO"] = _slo(row)
        out.append(cells)
    return out


def requests(paths: PathArg | Iterable[PathArg]) -> pd.DataFrame:
    """One row per finished request of every run under ``paths``: run, rank, request, phase,
    status ("ok" or "failed"), send_t, first_token_t, end_t (s since run start),
    prompt_tokens, output_tokens, ttft_s, tpot_s (NaN under 2 output tokens), e2el_s (s),
    token_t (the arrival times, a list) and error - the inputs of every serving figure."""
    import pandas as pd

    rows = []
    for run_dir in find_runs(paths):
        with reading(run_dir):
            lines = read_run(run_dir).requests
        for line in lines:
            timing = from_record(line)
            rows.append(
                {
                    "run": run_dir.name,
                    **{k: line[k] for k in ("rank", "request", "phase", "status")},
                    **{k: line[k] for k in ("send_t", "first_token_t", "end_t")},
                    "prompt_tokens": line["prompt_tokens"],
                    "output_tokens": line["output_tokens"],
                    "ttft_s": timing.ttft_s,
                    "tpot_s": timing.tpot_s,
                    "e2el_s": timing.e2el_s,
                    "token_t": list(timing.token_t),
                    "error": line.get("error"),
                }
            )
    columns = [
        "run", "rank", "request", "phase", "status", "send_t", "first_token_t", "end_t",
        "prompt_tokens", "output_tokens", "ttft_s", "tpot_s", "e2el_s", "token_t", "error",
    ]  # fmt: skip
    frame = pd.DataFrame.from_records(rows, columns=columns)
    for column in ("first_token_t", "ttft_s", "tpot_s"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame
