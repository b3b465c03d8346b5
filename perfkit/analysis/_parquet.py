"""``perfkit export RUN... --to parquet DIR``: runs as one Parquet dataset of five tables
(summaries, phases, steps, events, samples), each partitioned by run (``<table>/run=<run
id>/part-0.parquet``), with fixed column types, so pandas, pyarrow, DuckDB and Polars read it
as it is. Needs pyarrow (the ``parquet`` extra)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perfkit.analysis._discover import PathArg
from perfkit.analysis._frames import phase_table
from perfkit.analysis._load import events_and_steps
from perfkit.analysis._read import RunData, read_runs
from perfkit.analysis._tables import summary_rows
from perfkit.analysis._validate import reading
from perfkit.records import RECORD_NAMES

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

#: The dataset's tables, each a folder of ``run=<run id>`` partitions.
TABLES = ("summaries", "phases", "steps", "events", "samples")

#: Column types of each table (Arrow type names), in order; every table also has the partition
#: column ``run`` (the run id, as the folder names it) when read as a dataset.
SCHEMA: dict[str, tuple[tuple[str, str], ...]] = {
    # summaries(): one row per (run, key); a number in `value`, a text in `text`
    "summaries": (("run_id", "string"), ("key", "string"), ("value", "float64"),
                  ("text", "string")),
    "phases": (
        ("run_id", "string"), ("rank", "int64"), ("phase", "string"), ("ordinal", "int64"),
        ("kind", "string"), ("index", "int64"), ("start_t", "float64"), ("end_t", "float64"),
        ("wall_s", "float64"), ("io_s", "float64"), ("compute_s", "float64"),
        ("samples", "int64"), ("steps", "int64"), ("complete", "bool"), ("energy_j", "float64"),
        ("warmup_steps", "int64"), ("warmup_samples", "int64"), ("warmup_s", "float64"),
    ),
    "steps": (
        ("run_id", "string"), ("rank", "int64"), ("phase", "string"), ("ordinal", "int64"),
        ("step", "int64"), ("t", "float64"), ("step_time", "float64"), ("io_time", "float64"),
        ("compute_time", "float64"), ("samples", "int64"),
    ),
    # every record but the steps and the probe samples; `step` is null where a record has none
    "events": (
        ("run_id", "string"), ("rank", "int64"), ("phase", "string"), ("step", "int64"),
        ("name", "string"), ("value", "float64"), ("unit", "string"), ("t", "float64"),
        ("device", "string"), ("note", "string"), ("kind", "string"),
    ),
    # the probes' samples: records with a device that are not per-phase figures
    "samples": (
        ("run_id", "string"), ("rank", "int64"), ("phase", "string"), ("device", "string"),
        ("name", "string"), ("value", "float64"), ("unit", "string"), ("t", "float64"),
    ),
}  # fmt: skip


def export_parquet(paths: PathArg | Iterable[PathArg], out_dir: PathArg) -> list[Path]:
    """Write the runs under ``paths`` into the Parquet dataset ``out_dir`` (created if
    needed): for each of :data:`TABLES`, ``<out_dir>/<table>/run=<run id>/part-0.parquet``
    per run, with the columns of :data:`SCHEMA`. A run exported again replaces its own
    partitions; other runs' stay. Returns the run directories exported. Needs pyarrow."""
    try:
        import pyarrow  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "perfkit export --to parquet needs pyarrow: pip install 'perfkit[parquet]'"
        ) from err
    runs = read_runs(paths)
    tables: dict[str, dict[str, list[Any]]] = {
        table: {name: [] for name, _ in SCHEMA[table]} for table in TABLES
    }
    for run in runs:
        with reading(run.run_dir):
            for table, columns in _run_tables(run).items():
                length = len(next(iter(columns.values())))
                columns["run_id"] = [run.run_id] * length
                for name, values in tables[table].items():
                    values.extend(columns[name])
    for table, columns in tables.items():
        _write(columns, table, Path(out_dir) / table)
    return [run.run_dir for run in runs]


def _run_tables(run: RunData) -> dict[str, dict[str, list[Any]]]:
    """Each table's columns (lists, no run_id) for one run."""
    (summary,) = summary_rows(run.run_dir)
    keys = [k for k in summary if k != "run"]
    number = [_is_number(summary[k]) for k in keys]
    events, steps = events_and_steps(run)
    names = steps.pop("phase_names")
    steps["phase"] = [names[c] if c >= 0 else None for c in steps.pop("phase_codes")]
    sample = [e["device"] is not None and e["name"] not in RECORD_NAMES for e in events]
    return {
        "summaries": {
            "key": keys,
            "value": [summary[k] if n else None for k, n in zip(keys, number, strict=True)],
            "text": [
                None if n or summary[k] is None else str(summary[k])
                for k, n in zip(keys, number, strict=True)
            ],
        },
        "phases": _frame_columns(phase_table(run), "phases"),
        "steps": {name: list(steps[name]) for name, _ in SCHEMA["steps"][1:]},
        "events": _records(events, [not s for s in sample], "events"),
        "samples": _records(events, sample, "samples"),
    }


def _records(events: list[dict[str, Any]], keep: list[bool], table: str) -> dict[str, list[Any]]:
    rows = [e for e, k in zip(events, keep, strict=True) if k]
    return {name: [r[name] for r in rows] for name, _ in SCHEMA[table][1:]}


def _frame_columns(frame: pd.DataFrame, table: str) -> dict[str, list[Any]]:
    """The columns of ``table`` (but run_id) from ``frame`` as lists of Python values (NaN in
    a text or integer column as None)."""
    out: dict[str, list[Any]] = {}
    for name, kind in SCHEMA[table][1:]:
        values = frame[name].tolist()
        if kind != "float64":
            values = [None if _missing(v) else v for v in values]
        out[name] = values
    return out


def _write(columns: dict[str, list[Any]], table: str, folder: Path) -> None:
    """``columns`` as ``table``'s Parquet files under ``folder``, a partition per run;
    the partitions of these runs are replaced, the others kept."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    schema = _arrow_schema(table)
    data = pa.table({f.name: _array(columns[f.name], f.type) for f in schema}, schema)
    data = data.append_column("run", data["run_id"])
    if not data.num_rows:
        return
    partitioning = ds.partitioning(pa.schema([("run", pa.string())]), flavor="hive")
    ds.write_dataset(
        data,
        folder,
        format="parquet",
        partitioning=partitioning,
        basename_template="part-{i}.parquet",
        existing_data_behavior="delete_matching",
    )


def _array(values: list[Any], kind: pa.DataType) -> pa.Array:
    import pyarrow as pa

    if pa.types.is_integer(kind):
        values = [None if _missing(v) else int(v) for v in values]
    return pa.array(values, type=kind)


def _arrow_schema(table: str) -> pa.Schema:
    import pyarrow as pa

    types = {"string": pa.string(), "float64": pa.float64(), "int64": pa.int64(),
             "bool": pa.bool_()}  # fmt: skip
    return pa.schema([(name, types[kind]) for name, kind in SCHEMA[table]])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
