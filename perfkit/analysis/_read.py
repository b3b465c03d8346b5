"""Reading run directories: finding runs, metadata, summaries, records, phase and step tables.

Files are parsed with ``json.loads`` only; nothing in a run directory is evaluated or unpickled.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perfkit.records import (
    META_FILE,
    PHASE_NAMES,
    RECORD_FIELDS,
    STEP_NAMES,
    SUMMARY_FILE,
    RecordError,
    read_json,
    read_records,
)
from perfkit.summary import PHASE_KINDS

if TYPE_CHECKING:
    import pandas as pd

PathArg = str | os.PathLike[str]

#: Metadata fields copied onto every record row by :func:`load`.
META_COLUMNS = ("name", "device", "device_name", "layout", "world_size", "host")


def find_runs(paths: PathArg | Iterable[PathArg]) -> list[Path]:
    """Run directories named by ``paths``: run directories themselves, or folders holding runs
    at any depth. Raises FileNotFoundError for a missing path and RecordError when a path holds
    no perfkit run."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    runs: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"no such run directory or folder: {str(path)!r}")
        if _is_run_dir(path):
            runs.append(path)
            continue
        found = sorted(
            {p.parent for p in path.rglob("records*.jsonl")}
            | {p.parent for p in path.rglob(META_FILE)}
        )
        if not found:
            raise RecordError(
                f"{str(path)!r} holds no perfkit run (a folder with records.jsonl / meta.json)"
            )
        runs.extend(found)
    return runs


def find_run(path: PathArg) -> Path:
    """The one run directory ``path`` names; ValueError when it holds several runs."""
    runs = find_runs(path)
    if len(runs) != 1:
        raise ValueError(
            f"{str(path)!r} holds {len(runs)} runs; give one run directory "
            f"(for example {str(runs[0])!r})"
        )
    return runs[0]


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and ((path / META_FILE).is_file() or any(path.glob("records*.jsonl")))


def run_status(run_dir: Path) -> str:
    """ "ok" or "failed" from summary.json; "partial" when the run has no summary (killed)."""
    summary = read_summary(run_dir)
    return "partial" if summary is None else str(summary.get("status", "unknown"))


def read_meta(run_dir: Path) -> dict[str, Any]:
    """The run's metadata (meta.json), {} when the file is missing."""
    return _read_object(run_dir / META_FILE, "metadata file") or {}


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """The run's summary (summary.json), None when the run has none (a killed process)."""
    return _read_object(run_dir / SUMMARY_FILE, "summary")


def _read_object(path: Path, what: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise RecordError(f"{path} is not a perfkit {what} (expected a JSON object)")
    return obj


@dataclass(frozen=True)
class RunData:
    """Everything read from one run directory: metadata, summary (None for a partial run),
    status and every record of every rank as a DataFrame with the columns of RECORD_FIELDS."""

    run_dir: Path
    meta: dict[str, Any]
    summary: dict[str, Any] | None
    status: str
    records: pd.DataFrame

    @property
    def label(self) -> str:
        """The run's name in tables: its directory name (the run id)."""
        return self.run_dir.name

    @property
    def run_id(self) -> str:
        """The run id from the metadata, else the directory name."""
        return str(self.meta.get("run_id") or self.run_dir.name)

    @property
    def config(self) -> dict[str, Any]:
        """The run's config (Run(config=...)), {} when none was given."""
        config = self.meta.get("config")
        return config if isinstance(config, dict) else {}


def read_run(run_dir: Path) -> RunData:
    """Read one run directory (see :class:`RunData`)."""
    import pandas as pd

    summary = read_summary(run_dir)
    rows = [r for f in sorted(run_dir.glob("records*.jsonl")) for r in read_records(f)]
    records = pd.DataFrame.from_records(rows, columns=list(RECORD_FIELDS))
    records["value"] = pd.to_numeric(records["value"], errors="coerce").astype(float)
    records["t"] = records["t"].astype(float)
    return RunData(
        run_dir=run_dir,
        meta=read_meta(run_dir),
        summary=summary,
        status="partial" if summary is None else str(summary.get("status", "unknown")),
        records=records,
    )


def read_runs(paths: PathArg | Iterable[PathArg]) -> list[RunData]:
    """:func:`read_run` for every run under ``paths`` (see :func:`find_runs`)."""
    return [read_run(run_dir) for run_dir in find_runs(paths)]


def load(paths: PathArg | Iterable[PathArg]) -> pd.DataFrame:
    """Tidy DataFrame of every record of every run under ``paths``.

    Columns: the record fields (run_id, rank, phase, step, name, value, unit, t, device, note),
    then run_dir, status ("ok", "failed" or "partial"), the metadata columns of
    :data:`META_COLUMNS` prefixed ``run_`` and the run's config as ``config.<key>``.
    Values are in base units (``unit``: seconds, bytes, samples); ``t`` is seconds since run
    start.
    """
    import pandas as pd

    frames = []
    for run in read_runs(paths):
        frame = run.records.copy()
        frame["run_dir"] = str(run.run_dir)
        frame["status"] = run.status
        for key in META_COLUMNS:
            frame[f"run_{key}"] = run.meta.get(key)
        for key, value in run.config.items():
            frame[f"config.{key}"] = value if not isinstance(value, (list, dict)) else str(value)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


# -------------------------------------------------------------------------------- tables


def phase_table(run: RunData) -> pd.DataFrame:
    """One row per phase per rank, in time order: rank, phase (name), kind, index (the n-th
    phase of that name on that rank, from 0), start_t, end_t (s since run start), wall_s, io_s,
    compute_s (s), samples, steps, complete, energy_j (J, NaN without an energy counter),
    warmup_steps, warmup_samples, warmup_s (the phase's warm-up steps, which wall_s, io_s,
    compute_s, samples and steps leave out; 0 without warm-up).

    Finished phases come from their phase_* records; a phase a killed process left open is
    rebuilt from its step records (start = first step's start, end = last step's end;
    complete = False). ``kind`` comes from the phase records (schema 2), else from
    summary.json's phases when the run has one, else it is the phase name when that names a
    kind (train, val, infer), else None.
    """
    import pandas as pd

    records = run.records
    done = _wide(records, PHASE_NAMES, ["rank", "phase", "t", "kind"]).rename(
        columns={
            "t": "end_t",
            "phase_wall": "wall_s",
            "phase_io": "io_s",
            "phase_compute": "compute_s",
            "phase_samples": "samples",
            "phase_steps": "steps",
            "phase_energy": "energy_j",
            "phase_warmup_steps": "warmup_steps",
            "phase_warmup_samples": "warmup_samples",
            "phase_warmup": "warmup_s",
        }
    )
    # Schema 1 wrote no phase_start: the start is then the end less the wall time.
    done["start_t"] = done.pop("phase_start").fillna(done["end_t"] - done["wall_s"])
    done["complete"] = True
    steps = _step_rows(records)
    last_end = done.groupby("rank")["end_t"].max()
    after = steps["t"] > steps["rank"].map(last_end).fillna(-float("inf"))
    open_steps = steps[after]
    started = open_steps.assign(start=open_steps["t"] - open_steps["step_time"])
    open_phases = (
        started.groupby(["rank", "phase"])
        .agg(
            start_t=("start", "min"),
            end_t=("t", "max"),
            io_s=("io_time", "sum"),
            compute_s=("compute_time", "sum"),
            samples=("samples", "sum"),
            steps=("step", "count"),
        )
        .reset_index()
    )
    open_phases["wall_s"] = open_phases["end_t"] - open_phases["start_t"]
    open_phases["complete"] = False
    frames = [f for f in (done, open_phases) if not f.empty]
    columns = ["rank", "phase", "start_t", "end_t", "wall_s", "io_s", "compute_s"]
    table = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=[*columns, "samples", "steps", "complete"])
    )
    table = table.sort_values(["rank", "end_t"], kind="stable").reset_index(drop=True)
    table = table.astype(
        {c: float for c in columns[2:]} | {"rank": int, "samples": int, "steps": int}
    )
    table["index"] = table.groupby(["rank", "phase"]).cumcount()
    recorded = table["kind"] if "kind" in table else pd.Series(None, index=table.index)
    table["kind"] = recorded.where(recorded.notna(), pd.Series(_phase_kinds(run, table)))
    if "energy_j" not in table:
        table["energy_j"] = float("nan")
    warmup = ["warmup_steps", "warmup_samples", "warmup_s"]
    for column in warmup:  # 0 without warm-up (and for a phase a killed process left open)
        table[column] = table[column].fillna(0) if column in table else 0
    table = table.astype({"warmup_steps": int, "warmup_samples": int, "warmup_s": float})
    return table[
        [
            *columns[:2],
            "kind",
            "index",
            *columns[2:],
            "samples",
            "steps",
            "complete",
            "energy_j",
            *warmup,
        ]
    ].reset_index(drop=True)


def _phase_kinds(run: RunData, table: pd.DataFrame) -> list[str | None]:
    """Each phase's kind: by position from summary.json's phases (every rank runs the same
    phases in the same order), else the phase name when it names a kind."""
    listed = (run.summary or {}).get("phases") or []
    kinds: list[str | None] = []
    position: dict[int, int] = {}
    for rank, name in zip(table["rank"], table["phase"], strict=True):
        at = position.get(rank, 0)
        position[rank] = at + 1
        if at < len(listed) and listed[at].get("name") == name:
            kinds.append(listed[at].get("kind"))
        else:
            kinds.append(name if name in PHASE_KINDS else None)
    return kinds


def _step_rows(records: pd.DataFrame) -> pd.DataFrame:
    """One row per finished step: rank, phase, step, t (its end, s since run start),
    step_time, io_time, compute_time (s) and samples."""
    wide = _wide(records, STEP_NAMES, ["rank", "phase", "step", "t"])
    wide = wide.sort_values(["rank", "t"], kind="stable").reset_index(drop=True)
    wide["rank"] = wide["rank"].astype(int)
    wide["step"] = wide["step"].astype(int)
    wide["samples"] = wide["samples"].fillna(0).astype(int)
    return wide


def step_table(run: RunData, phases: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per finished step of ``run``: rank, phase, kind, index (of the phase instance,
    as in :func:`phase_table`), step, start_t and t (start and end, s since run start),
    step_time, io_time, compute_time (s), samples."""
    import pandas as pd

    if phases is None:
        phases = phase_table(run)
    steps = _step_rows(run.records)
    columns = ["rank", "phase", "kind", "index", "step", "start_t", "t", *STEP_NAMES]
    if steps.empty:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in columns})
    keys = phases[["rank", "phase", "kind", "index", "end_t"]].sort_values("end_t")
    merged = pd.merge_asof(
        steps.sort_values("t"),
        keys,
        left_on="t",
        right_on="end_t",
        by=["rank", "phase"],
        direction="forward",
    )
    merged["start_t"] = merged["t"] - merged["step_time"]
    merged = merged[columns]
    return merged.sort_values(["rank", "t"], kind="stable").reset_index(drop=True)


def row_dicts(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of ``frame`` as dicts, column -> value."""
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict(orient="records")]


def _wide(records: pd.DataFrame, names: tuple[str, ...], keys: list[str]) -> pd.DataFrame:
    """The records named ``names``, one row per ``keys`` with a column per name."""
    import pandas as pd

    rows = records[records["name"].isin(names)]
    if rows.empty:
        return pd.DataFrame({column: pd.Series(dtype=float) for column in [*keys, *names]})
    wide = (
        rows.groupby([*keys, "name"], dropna=False)["value"]
        .first()
        .unstack("name")
        .reindex(columns=list(names))
        .reset_index()
    )
    wide.columns.name = None
    return wide
