"""``load()``: every record of many runs as one DataFrame, built column-wise - each run's
events and steps go into shared Python lists and numpy arrays, and pandas builds the frame
once, so a run's fixed cost is its file reads (benchmarks/many_runs.py)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perfkit.analysis._read import (
    META_COLUMNS,
    PathArg,
    RunData,
    read_runs,
    reading,
)
from perfkit.records import RECORD_FIELDS, STEP_NAMES, read_records
from perfkit.steplog import read_step_log

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

#: The ``name`` of load()'s step rows (one row per step, its quantities in the STEP_NAMES
#: columns).
STEP_ROW_NAME = "step"
#: Record fields that load() gives as categoricals.
_TEXT_FIELDS = ("run_id", "phase", "name", "unit", "device", "note", "kind")
_LONG_UNITS = ("s", "s", "s", "samples")  # the units of STEP_NAMES


def load(paths: PathArg | Iterable[PathArg], *, long: bool = False) -> pd.DataFrame:
    """DataFrame of every record of every run under ``paths``: one row per event and one row
    per step.

    Columns: the record fields (run_id, rank, phase, step, name, value, unit, t, device, note,
    kind), then the step columns of :data:`STEP_NAMES` (step_time, io_time, compute_time in s,
    samples: set on the step rows, whose ``name`` is "step"; NaN on the events), then run_dir,
    status ("ok", "failed" or "partial"), the metadata columns of :data:`META_COLUMNS` prefixed
    ``run_`` and the run's config as ``config.<key>``. ``long=True`` gives the tidy long form
    instead: each step as four records named step_time, io_time, compute_time and samples
    (``value`` and ``unit``), without the step columns. Values are in base units (``unit``:
    seconds, bytes, samples); ``t`` is seconds since run start. Text columns are categoricals.
    Rows are in run order, each run's events before its steps.
    """
    return load_runs(read_runs(paths), long=long)


def load_runs(runs: Iterable[RunData], long: bool = False) -> pd.DataFrame:
    """:func:`load` of runs already read."""
    columns = _Columns(long)
    for run in runs:
        with reading(run.run_dir):
            columns.add(run)
    return columns.frame()


class _Codes:
    """A categorical column built in pieces: its categories in order of first appearance and
    the pieces' codes (-1 for missing)."""

    def __init__(self) -> None:
        self.index: dict[Any, int] = {}
        self.pieces: list[np.ndarray] = []

    def code(self, value: Any) -> int:
        if value is None:
            return -1
        return self.index.setdefault(value, len(self.index))

    def add_values(self, values: list[Any]) -> None:
        import numpy as np

        self.pieces.append(np.fromiter(map(self.code, values), np.int64, len(values)))

    def add_coded(self, codes: np.ndarray, categories: list[Any]) -> None:
        """Codes into ``categories`` (-1 missing), recoded into this column's categories."""
        import numpy as np

        remap = np.asarray([*map(self.code, categories), -1], dtype=np.int64)
        self.pieces.append(remap[codes])

    def categorical(self) -> pd.Categorical:
        import numpy as np
        import pandas as pd

        codes = np.concatenate(self.pieces) if self.pieces else np.zeros(0, np.int64)
        categories = pd.Index(list(self.index))
        return pd.Categorical.from_codes(codes, dtype=pd.CategoricalDtype(categories))


class _Columns:
    """load()'s columns, one run appended at a time."""

    def __init__(self, long: bool) -> None:
        self.long = long
        self.per = len(STEP_NAMES) if long else 1  # rows per step
        self.text = {field: _Codes() for field in _TEXT_FIELDS}
        self.numbers: dict[str, list[np.ndarray]] = {
            f: [] for f in ("rank", "step", "t", "value", *([] if long else STEP_NAMES))
        }
        self.constants: dict[str, list[Any]] = {}  # per column: its value in each run
        self.rows: list[int] = []  # rows of each run

    def add(self, run: RunData) -> None:
        import numpy as np

        events, steps = events_and_steps(run)
        n_events, n = len(events), len(steps["t"])
        per = self.per
        for field in _TEXT_FIELDS:
            self.text[field].add_values([e[field] for e in events])
        text = self.text
        text["run_id"].add_coded(np.zeros(per * n, np.int64), [run.run_id])
        text["phase"].add_coded(np.repeat(steps["phase_codes"], per), steps["phase_names"])
        missing = np.full(per * n, -1, np.int64)
        if self.long:
            kinds = np.tile(np.arange(per), n)
            text["name"].add_coded(kinds, list(STEP_NAMES))
            text["unit"].add_coded(kinds, list(_LONG_UNITS))
        else:
            text["name"].add_coded(np.zeros(n, np.int64), [STEP_ROW_NAME])
            text["unit"].add_coded(missing, [])
        for field in ("device", "note", "kind"):
            text[field].add_coded(missing, [])
        numbers = self.numbers
        for field in ("rank", "step", "t"):
            event_part = np.asarray([e[field] for e in events], dtype=float)  # None: NaN
            numbers[field].append(event_part)
            numbers[field].append(np.repeat(steps[field].astype(float), per))
        numbers["value"].append(np.asarray([e["value"] for e in events], dtype=float))
        if self.long:
            quantities = np.column_stack([steps[c] for c in STEP_NAMES]).ravel()
            numbers["value"].append(quantities.astype(float))
        else:
            numbers["value"].append(np.full(n, np.nan))
            for name in STEP_NAMES:
                numbers[name].append(np.full(n_events, np.nan))
                numbers[name].append(steps[name].astype(float))
        run_index = len(self.rows)
        self.rows.append(n_events + per * n)
        values: dict[str, Any] = {"run_dir": str(run.run_dir), "status": run.status}
        values |= {f"run_{key}": run.meta.get(key) for key in META_COLUMNS}
        values |= {
            f"config.{key}": value if not isinstance(value, (list, dict)) else str(value)
            for key, value in run.config.items()
        }
        for column, value in values.items():
            self.constants.setdefault(column, [_ABSENT] * run_index).append(value)
        for per_run in self.constants.values():
            if len(per_run) == run_index:
                per_run.append(_ABSENT)  # a column earlier runs have and this one lacks

    def frame(self) -> pd.DataFrame:
        import numpy as np
        import pandas as pd

        columns: dict[str, Any] = {}
        for field in (*RECORD_FIELDS, *([] if self.long else STEP_NAMES)):
            if field in self.text:
                columns[field] = self.text[field].categorical()
            else:
                parts = self.numbers[field]
                columns[field] = np.concatenate(parts) if parts else np.zeros(0)
        columns["rank"] = columns["rank"].astype(np.int64)
        counts = np.asarray(self.rows, dtype=np.int64)
        for column, per_run in self.constants.items():
            columns[column] = _constant(per_run, counts)
        return pd.DataFrame(columns)


class _Absent:
    """A run without this column (a config key only some runs have)."""


_ABSENT = _Absent()


def _constant(per_run: list[Any], counts: np.ndarray) -> Any:
    """A column holding one value per run, ``counts`` rows each: text (and mixed) values as a
    categorical; numbers as int64 when every run has an int, float64 (NaN where absent) when
    every present value is a number, bool when every run has a bool."""
    import numpy as np

    present = [v for v in per_run if v is not _ABSENT and v is not None]
    complete = len(present) == len(per_run)
    if present and complete and all(isinstance(v, bool) for v in present):
        return np.repeat(np.asarray(present, dtype=bool), counts)
    numeric = [isinstance(v, (int, float)) and not isinstance(v, bool) for v in present]
    if present and all(numeric):
        if complete and all(isinstance(v, int) for v in present):
            return np.repeat(np.asarray(present, dtype=np.int64), counts)
        floats = [float(v) if v is not _ABSENT and v is not None else np.nan for v in per_run]
        return np.repeat(np.asarray(floats, dtype=float), counts)
    codes = _Codes()
    run_codes = np.asarray([-1 if v is _ABSENT else codes.code(v) for v in per_run], np.int64)
    codes.pieces.append(np.repeat(run_codes, counts))
    return codes.categorical()


def events_and_steps(run: RunData) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(events, steps) of every rank of ``run``: the event records as dicts (read_records'
    order, files sorted), the steps as arrays rank, ordinal, step, t, the STEP_NAMES and
    phase_codes into phase_names, sorted by (rank, t) (stable)."""
    import numpy as np

    files = sorted(os.listdir(run.run_dir))  # one listing for both globs below
    events = [
        r for f in _matching(files, "records", ".jsonl") for r in read_records(run.run_dir / f)
    ]
    names: dict[str, int] = {}  # phase name -> code, over every rank's steps file
    parts = [_step_file(run.run_dir / f, events, names) for f in _matching(files, "steps", ".bin")]
    fields = ("rank", "ordinal", "step", "t", *STEP_NAMES, "phase_codes")
    steps = {f: np.concatenate([p[f] for p in parts]) if parts else np.zeros(0) for f in fields}
    steps["phase_codes"] = steps["phase_codes"].astype(np.int64)
    if len(parts) > 1 or np.any(np.diff(steps["t"]) < 0):  # one rank's file is in time order
        order = np.lexsort((steps["t"], steps["rank"]))  # stable: equal keys keep file order
        steps = {f: values[order] for f, values in steps.items()}
    return events, steps | {"phase_names": list(names)}


def _matching(files: list[str], prefix: str, suffix: str) -> list[str]:
    """The names of ``files`` that the glob ``<prefix>*<suffix>`` matches."""
    return [f for f in files if f.startswith(prefix) and f.endswith(suffix)]


def _step_file(path: Path, events: list[dict[str, Any]], codes: dict[str, int]) -> dict[str, Any]:
    """One steps.bin as arrays; its steps' phases as codes into ``codes`` (phase name ->
    code, extended here), from its rank's phase_start records in order (-1 for an ordinal
    whose start is not on disk)."""
    import numpy as np

    header, rows = read_step_log(path)
    rank = int(header.get("rank", 0))
    column = {name: rows[:, i] for i, name in enumerate(header["columns"])}
    names = [e["phase"] for e in events if e["name"] == "phase_start" and e["rank"] == rank]
    remap = [-1 if n is None else codes.setdefault(n, len(codes)) for n in names]
    ordinal = column["phase"].astype(np.int64)
    known = np.where((ordinal >= 0) & (ordinal < len(names)), ordinal, len(names))
    return {
        "rank": np.full(len(rows), rank, dtype=np.int64),
        "phase_codes": np.asarray([*remap, -1], dtype=np.int64)[known],
        "ordinal": ordinal,
        "step": column["step"].astype(np.int64),
        "t": column["t"],
        **{name: column[name] for name in STEP_NAMES},
    }
