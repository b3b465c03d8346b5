"""Run summaries, FlagPerf-style seed tables, run comparison, step times and IO share."""

from __future__ import annotations

import json
import math
import numbers
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perfkit.analysis._discover import PathArg, find_run, find_runs
from perfkit.analysis._format import significant
from perfkit.analysis._frames import phase_table, step_table
from perfkit.analysis._names import named_metrics
from perfkit.analysis._read import RunData, read_run, read_runs
from perfkit.analysis._rebuild import rebuild_summary
from perfkit.analysis._validate import reading
from perfkit.figures import FIGURE_OF, report_columns

if TYPE_CHECKING:
    import pandas as pd

#: The logged accuracies each seed table shows, before its memory column.
SEED_ACCURACIES = {"train": ("mAP", "acc"), "infer": ("acc", "mAP"), "none": (), "llm": ()}
#: Columns of the seed tables ("performance metrics" of the FlagPerf case READMEs), per kind of
#: run ("train" for runs with a training phase, "infer" for the others, "llm" for a training
#: that counted tokens: FlagPerf's LLM table, token/p/s and MFU per token): the run's identity,
#: the figures the figure table puts in that report, the accuracies before ``mem``, status.
SEED_COLUMNS: dict[str, tuple[str, ...]] = {
    report: (
        "run", "config", "precision", "fix_hp",
        *(c for c in report_columns(report) if c != "mem"),
        *accuracies, "mem", "status",
    )
    for report, accuracies in SEED_ACCURACIES.items()
}  # fmt: skip
#: Seed-table columns left out when no run in the table has a value for them.
OPTIONAL_COLUMNS = ("MFU", "mAP", "acc")
#: What an MFU cell says after the number when its peak is neither the vendor's datasheet
#: figure nor one the user gave.
PEAK_LABELS = {"measured": " (measured peak)", "flagperf-config": " (FlagPerf's peak)"}
#: How a missing value prints (the seeds leave the cell blank).
MISSING = "/"
#: Column prefixes of throughputs (samples/s, tokens/s).
_RATES = ("p_", "tps_")
#: Descriptive (text) rows at the top of :func:`compare`.
DESCRIPTIVE_ROWS = ("status", "layout", "device_name", "precision", "fix_hp", "mem")
#: Metrics listed first by :func:`compare`, in this order (the seed tables' numeric figures,
#: then the accuracies); the rest follow in summary order.
LEADING_METRICS = (
    *(key for key, figure in FIGURE_OF.items() if figure.report and figure.unit != "text"),
    "mAP", "acc", "acc_val", "acc_infer",
)  # fmt: skip
#: Metadata fields that :func:`summaries` copies into each row.
_META_FIELDS = ("layout", "world_size", "device", "device_name", "host", "started_at")
#: Columns of :func:`summaries` that identify a run rather than measure it.
_IDENTITY = (
    "run",
    "run_dir",
    "run_id",
    "name",
    "status",
    *_META_FIELDS,
    "precision",
    "bs",
    "fix_hp",
)


def fix_hp(config: Mapping[str, Any]) -> str | None:
    """The seeds' fix_hp cell: ``config["fix_hp"]`` if given, else ``"bs=8,lr=0.04"`` from the
    config's bs and lr (whichever are present), else None."""
    if "fix_hp" in config:
        return str(config["fix_hp"])
    parts = [f"{key}={config[key]}" for key in ("bs", "lr") if key in config]
    return ",".join(parts) or None


def summaries(paths: PathArg | Iterable[PathArg]) -> pd.DataFrame:
    """One row per run under ``paths``: run (label: the directory name), run_dir, run_id, name,
    status ("ok", "failed" or "partial"), layout (nodes x cards, "1x8"), world_size, device,
    device_name, host, started_at, precision, bs, fix_hp, ``config.<key>`` for every config
    entry, then every summary metric in base units (seconds, samples/s, bytes; MFU, mAP and
    accuracies as fractions). Dict and list values (mem_per_device, probe_errors) are JSON text.

    A partial run (no summary.json: the process was killed) gets metrics rebuilt from its
    records: per phase kind samples, steps, wall / IO / compute seconds, io_fraction and
    throughputs (p_train, p_core, ...), p_whole, mem, the logged values, and e2e_time as the
    last record's time (a lower bound).
    """
    import pandas as pd

    return pd.DataFrame.from_records(summary_rows(paths))


def summary_rows(paths: PathArg | Iterable[PathArg]) -> list[dict[str, Any]]:
    """The rows of :func:`summaries` as dicts (a finished run's needs its summary.json only,
    and no pandas); a run label two runs share becomes their run_dir."""
    rows = []
    for run in read_runs(paths):
        with reading(run.run_dir):
            rows.append(_summary_row(run))
    labels = Counter(row["run"] for row in rows)
    for row in rows:
        if labels[row["run"]] > 1:
            row["run"] = row["run_dir"]
    return rows


def _summary_row(run: RunData) -> dict[str, Any]:
    meta, config = run.meta, run.config
    row: dict[str, Any] = {
        "run": run.label,
        "run_dir": str(run.run_dir),
        "run_id": run.run_id,
        "name": meta.get("name"),
        "status": run.status,
        **{key: meta.get(key) for key in _META_FIELDS},
        "precision": config.get("precision"),
        "bs": config.get("bs"),
        "fix_hp": fix_hp(config),
    }
    for key, value in config.items():
        row[f"config.{key}"] = _scalar(value)
    metrics = run.summary if run.summary is not None else rebuild_summary(run)
    for key, value in metrics.items():
        if key not in row and key not in ("phases", "meta"):
            row[key] = _scalar(value)
    for key, value in named_metrics(metrics, config).items():  # val_acc as acc_val, ...
        row.setdefault(key, _scalar(value))
    if run.summary is None and run.bad_lines:  # a finished run's records are not read
        row["bad_lines"] = len(run.bad_lines)
    return row


def _scalar(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


# -------------------------------------------------------------------------------- seed tables


def seed_tables(paths: PathArg | Iterable[PathArg]) -> dict[str, pd.DataFrame]:
    """The seeds' "performance metrics" tables: {"train": ..., "infer": ..., "none": ...}, one
    table per kind of run present (a run with a training phase is "train", also when it failed
    in it; one with val / infer phases only "infer"; one that ended before any phase "none"),
    columns of :data:`SEED_COLUMNS`,
    every cell text: config as nodes x cards ("1x8"), e2e_time in s and throughputs in
    samples/s with 1 decimal, mAP with 4 decimals, MFU in percent ("16.8%"; "16.8% (measured
    peak)" or "16.8% (FlagPerf's peak)" by its ``mfu_peak_source``), acc as top-1
    percent ("76.2/76.2" = infer/val), mem as "used/total" GiB, "/" where a value is missing,
    status "ok", "failed" or "partial". MFU, mAP and acc columns no run has are left out."""
    import pandas as pd

    return {kind: pd.DataFrame(rows) for kind, rows in seed_rows(paths).items()}


def seed_rows(
    paths: PathArg | Iterable[PathArg],
    numbers: bool = False,
    rows: list[dict[str, Any]] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """The rows of :func:`seed_tables` as dicts of text cells, without pandas. ``numbers``:
    cells as JSON values instead (:func:`_seed_value`). ``rows``: :func:`summary_rows` of
    ``paths`` when already read."""
    runs = summary_rows(paths) if rows is None else rows
    tables: dict[str, list[dict[str, Any]]] = {}
    for kind in SEED_COLUMNS:
        of_kind = [row for row in runs if _run_kind(row) == kind]
        if not of_kind:
            continue
        columns = [
            c
            for c in SEED_COLUMNS[kind]
            if c not in OPTIONAL_COLUMNS or any(_seed_cell(c, row) != MISSING for row in of_kind)
        ]
        cell = _seed_value if numbers else _seed_cell
        tables[kind] = [{c: cell(c, row) for c in columns} for row in of_kind]
    return tables


def _run_kind(row: Mapping[str, Any]) -> str:
    """ "llm" for a run whose train phases counted tokens, "train" for another run with a
    training phase (also one that failed in it), "infer" for one with a val or infer phase
    only, "none" for a run that ended before any phase."""
    if _present(row.get("train_tokens")):
        return "llm"
    if _present(row.get("train_wall_s")) or _present(row.get("train_samples")):
        return "train"
    if any(_present(row.get(f"{kind}_wall_s")) for kind in ("val", "infer")):
        return "infer"
    return "none"


def _seed_value(column: str, row: Mapping[str, Any]) -> Any:
    """A seed-table cell as a JSON value: e2e_time, throughputs, MFU and mAP as numbers in
    the summary's units (s, samples/s, fractions), acc as {"infer": top-1, "val": top-1}
    fractions, the rest as text; None where missing."""
    if column == "acc":
        infer = row.get("acc_infer") if _present(row.get("acc_infer")) else row.get("acc")
        values: dict[str, Any] = {"infer": infer, "val": row.get("acc_val")}
        found = {k: float(v) for k, v in values.items() if _finite(v)}
        return found or None
    if column in ("MFU", "mAP", "e2e_time") or column.startswith(_RATES):
        value: Any = row.get(column)
        return float(value) if _finite(value) else None
    text = _seed_cell(column, row)
    return None if text == MISSING else text


def _seed_cell(column: str, row: Mapping[str, Any]) -> str:
    if column == "config":
        return _text(row.get("layout"))
    if column == "acc":
        parts: list[Any] = [
            row.get("acc_infer") if _present(row.get("acc_infer")) else row.get("acc"),
            row.get("acc_val"),
        ]
        shown = [f"{100 * float(v):.1f}" for v in parts if _finite(v)]
        return "/".join(shown) or MISSING
    value: Any = row.get(column)
    if not _present(value):
        return MISSING
    if column in ("MFU", "mAP", "e2e_time") or column.startswith(_RATES):
        if not _finite(value):
            return MISSING  # a malformed summary's text or out-of-range number
        value = float(value)
    if column == "MFU":
        label = PEAK_LABELS.get(str(row.get("mfu_peak_source")), "")
        return f"{100 * value:.1f}%{label}"
    if column == "mAP":
        return f"{value:.4f}"
    if column == "e2e_time" or column.startswith(_RATES):
        return significant(value)
    return str(value)


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    """A real number that is finite as a float (a 400-digit int is not)."""
    if not _is_number(value):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _text(value: Any) -> str:
    return str(value) if _present(value) else MISSING


# -------------------------------------------------------------------------------- comparison


def compare(baseline: PathArg, *others: PathArg) -> pd.DataFrame:
    """Runs side by side: a row per metric, a column per run (the baseline first), then one
    ``<run>/baseline`` column per other run with the ratio run value / baseline value (NaN where
    either is missing or not a number, or the baseline is 0). ``baseline`` is one run
    directory; each of ``others`` a run directory or a folder of runs. Text rows
    (:data:`DESCRIPTIVE_ROWS`) come first, then the seed metrics, then every other numeric
    summary metric. Units are the summary's (s, samples/s, bytes, fractions)."""
    import pandas as pd

    if not others:
        raise ValueError("compare(baseline, *others) needs at least one run besides the baseline")
    runs = [find_run(baseline), *(run for other in others for run in find_runs(other))]
    seen: set[Path] = set()
    for run in runs:
        if run.resolve() in seen:
            raise ValueError(f"compare: run {str(run)!r} is given twice; compare distinct runs")
        seen.add(run.resolve())
    table = summaries(runs).set_index("run")
    labels = list(table.index)
    numeric = [
        c
        for c in table.columns
        if c not in _IDENTITY and all(_finite(v) for v in table[c] if _present(v))
    ]
    ordered = [m for m in LEADING_METRICS if m in numeric]
    ordered += [m for m in numeric if m not in ordered]
    text_rows = [r for r in DESCRIPTIVE_ROWS if r in table.columns]
    frame = table[text_rows + ordered].T.astype(object)
    frame.index.name = "metric"
    base = pd.to_numeric(table.loc[labels[0], ordered], errors="coerce").astype(float)
    base = base.where(base != 0)
    for label in labels[1:]:
        values = pd.to_numeric(table.loc[label, ordered], errors="coerce").astype(float)
        frame[f"{label}/baseline"] = (values / base).reindex(frame.index)
    return frame


# -------------------------------------------------------------------------------- distributions


def step_times(paths: PathArg | Iterable[PathArg]) -> pd.DataFrame:
    """One row per finished step of every run under ``paths``: run, rank, phase, kind, index
    (n-th phase of that name, from 0: the epoch), step, start_t and t (s since run start),
    step_time, io_time, compute_time (s) and samples. For distributions, e.g.
    ``step_times(p).groupby(["run", "phase"])["step_time"].describe()``."""
    return _per_run(paths, step_table)


def io_share(paths: PathArg | Iterable[PathArg]) -> pd.DataFrame:
    """One row per phase per rank of every run under ``paths``: run, rank, phase, kind, index,
    start_t, end_t, wall_s, io_s, compute_s (s), samples, steps, complete, and io_share = IO
    seconds / wall seconds of the phase (NaN for a phase of zero wall time)."""
    frame = _per_run(paths, phase_table)
    frame["io_share"] = frame["io_s"] / frame["wall_s"].where(frame["wall_s"] > 0)
    return frame


def _per_run(
    paths: PathArg | Iterable[PathArg], table: Callable[[RunData], pd.DataFrame]
) -> pd.DataFrame:
    import pandas as pd

    frames = []
    for run_dir in find_runs(paths):
        frame = table(read_run(run_dir))
        frame.insert(0, "run", run_dir.name)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
