"""Reading run directories: finding runs, metadata, summaries, records, phase and step tables.

Files are parsed with ``json.loads`` only; nothing in a run directory is evaluated or unpickled.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perfkit.records import (
    META_FILE,
    PHASE_NAMES,
    READABLE_SCHEMA_VERSIONS,
    RECORD_FIELDS,
    REQUESTS_FILE,
    STEP_NAMES,
    SUMMARY_FILE,
    RecordError,
    read_json,
    read_records,
    read_requests,
)
from perfkit.steplog import read_step_log
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
        found = sorted(_run_dirs_under(path), key=natural_key)
        if not found:
            raise RecordError(
                f"{str(path)!r} holds no perfkit run (a folder with records.jsonl / meta.json)"
            )
        runs.extend(found)
    return runs


def _run_dirs_under(folder: Path) -> Iterator[Path]:
    """Every folder under ``folder`` (itself included, symlinks not followed) holding a
    records*.jsonl, a steps*.bin or a meta.json: one walk of the tree."""
    for top, _dirs, files in os.walk(folder):
        if any(
            name == META_FILE
            or (name.startswith("records") and name.endswith(".jsonl"))
            or (name.startswith("steps") and name.endswith(".bin"))
            for name in files
        ):
            yield Path(top)


def natural_key(path: Path) -> tuple[tuple[int, int | str], ...]:
    """Sort key of ``path`` in natural order: digit runs compare as numbers (r2 before r10)."""
    parts = re.split(r"([0-9]+)", path.as_posix())  # odd indices: the digit runs
    key = tuple((0, int(part)) if i % 2 else (1, part) for i, part in enumerate(parts) if part)
    return (*key, (2, path.as_posix()))  # r01 and r1: decided by the text


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


#: Metadata fields analysis relies on, and the types they must have; a field of another type
#: (a malformed meta.json) is left out, as if missing.
_META_TYPES: dict[str, tuple[type, ...]] = {
    "run_id": (str,),
    "name": (str,),
    "started_at": (str,),
    "device": (str,),
    "device_name": (str,),
    "layout": (str,),
    "host": (str,),
    "e2e_from": (str,),
    "sync": (str,),
    "rank": (int,),
    "world_size": (int,),
    "config": (dict,),
    "flops": (dict,),
}
#: The most ranks a run directory may name (a larger world_size is malformed).
MAX_WORLD_SIZE = 1 << 16


def read_meta(run_dir: Path) -> dict[str, Any]:
    """The run's metadata (meta.json), {} when the file is missing; fields of the wrong type
    are left out."""
    meta = _read_object(run_dir / META_FILE, "metadata file") or {}
    for key, types in _META_TYPES.items():
        if key in meta and (isinstance(meta[key], bool) or not isinstance(meta[key], types)):
            del meta[key]
    if not 1 <= meta.get("world_size", 1) <= MAX_WORLD_SIZE:
        del meta["world_size"]
    return meta


@contextlib.contextmanager
def reading(what: PathArg) -> Iterator[None]:
    """Turn an error from a malformed run (a value of the wrong type, a field out of range)
    into a :class:`RecordError` naming ``what`` (the run directory)."""
    try:
        yield
    except RecordError:
        raise
    except (
        TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError, RecursionError
    ) as err:  # fmt: skip
        raise RecordError(
            f"{str(what)!r} is not a readable perfkit run: {type(err).__name__}: {err}"
        ) from err


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """The run's summary (summary.json), None when the run has none (a killed process); its
    ``phases`` keeps only the entries that are objects."""
    summary = _read_object(run_dir / SUMMARY_FILE, "summary")
    if summary is not None and "phases" in summary:
        phases = summary["phases"]
        summary["phases"] = (
            [p for p in phases if isinstance(p, dict)] if isinstance(phases, list) else []
        )
    return summary


def _read_object(path: Path, what: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise RecordError(f"{path} is not a perfkit {what} (expected a JSON object)")
    return obj


class RunData:
    """Everything read from one run directory: metadata, summary (None for a partial run),
    status, every event of every rank (``records``: the columns of RECORD_FIELDS) and every
    finished step of every rank (``steps``: the columns of :data:`STEP_TABLE_COLUMNS`).
    meta.json and summary.json are read at once; the records and steps when first used (a
    finished run's table needs only its summary)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.meta = read_meta(run_dir)
        self.summary = read_summary(run_dir)
        self.status = (
            "partial" if self.summary is None else str(self.summary.get("status", "unknown"))
        )
        version = self.meta.get("schema_version", 1)
        if version not in READABLE_SCHEMA_VERSIONS:
            raise RecordError(
                f"{run_dir} has records of schema_version {version!r}; this perfkit reads "
                f"{READABLE_SCHEMA_VERSIONS}: upgrade perfkit to read it"
            )

    @functools.cached_property
    def _tables(self) -> tuple[pd.DataFrame, pd.DataFrame, tuple[str, ...]]:
        with reading(self.run_dir):
            return _read_tables(self.run_dir)

    @property
    def records(self) -> pd.DataFrame:
        """Every event of every rank (records*.jsonl), the columns of RECORD_FIELDS."""
        return self._tables[0]

    @property
    def steps(self) -> pd.DataFrame:
        """Every finished step of every rank, the columns of STEP_TABLE_COLUMNS."""
        return self._tables[1]

    @property
    def bad_lines(self) -> tuple[str, ...]:
        """Lines of the records files that were not records, skipped ("<file>:<line> ...")."""
        return self._tables[2]

    @functools.cached_property
    def requests(self) -> list[dict[str, Any]]:
        """Every finished request of every rank (requests*.jsonl lines, the fields of
        :data:`perfkit.records.REQUEST_FIELDS`), rank by rank; [] for a run without requests."""
        stem = REQUESTS_FILE.partition(".")[0]
        with reading(self.run_dir):
            return [
                line
                for path in sorted(self.run_dir.glob(f"{stem}*.jsonl"), key=natural_key)
                for line in read_requests(path)
            ]

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
    """Read one run directory (see :class:`RunData`); schema-1 runs (steps as JSON records)
    and schema-2 runs (steps in steps.bin) alike."""
    with reading(run_dir):
        return RunData(run_dir)


def _read_tables(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, tuple[str, ...]]:
    """(events, steps, skipped bad lines) of every rank of a run."""
    import pandas as pd

    bad_lines: list[str] = []
    rows = [r for f in sorted(run_dir.glob("records*.jsonl")) for r in read_records(f, bad_lines)]
    records = pd.DataFrame.from_records(rows, columns=list(RECORD_FIELDS))
    records["value"] = pd.to_numeric(records["value"], errors="coerce").astype(float)
    records["t"] = records["t"].astype(float)
    legacy = records["name"].isin(STEP_NAMES) & records["step"].notna()
    frames = [_binary_steps(path, records) for path in sorted(run_dir.glob("steps*.bin"))]
    if legacy.any():
        frames.append(_legacy_steps(records[legacy]))
    records = records[~legacy].reset_index(drop=True)
    frames = [f for f in frames if not f.empty]
    steps = pd.concat(frames, ignore_index=True) if frames else _empty_steps()
    steps = steps.sort_values(["rank", "t"], kind="stable").reset_index(drop=True)
    return records, steps, tuple(bad_lines)


#: Columns of RunData.steps: rank, phase (name), ordinal (the phase's position among its
#: rank's phases, from 0; -1 where a schema-1 run does not say), step, t (the step's end, s
#: since run start), step_time, io_time, compute_time (s), samples.
STEP_TABLE_COLUMNS = ("rank", "phase", "ordinal", "step", "t", *STEP_NAMES)


def _empty_steps() -> pd.DataFrame:
    import pandas as pd

    types = {"rank": int, "phase": object, "ordinal": int, "step": int, "samples": int}
    return pd.DataFrame({c: pd.Series(dtype=types.get(c, float)) for c in STEP_TABLE_COLUMNS})


def _binary_steps(path: Path, records: pd.DataFrame) -> pd.DataFrame:
    """The rows of one steps.bin, phase names from its rank's phase_start records."""
    import numpy as np
    import pandas as pd

    header, rows = read_step_log(path)
    rank = int(header.get("rank", 0))
    column = {name: rows[:, i] for i, name in enumerate(header["columns"])}
    starts = records[(records["name"] == "phase_start") & (records["rank"] == rank)]
    names = np.asarray([*starts["phase"], None], dtype=object)  # None: a start not on disk
    ordinal = column["phase"].astype(np.int64)
    known = np.where((ordinal >= 0) & (ordinal < len(names) - 1), ordinal, len(names) - 1)
    return pd.DataFrame(
        {
            "rank": np.full(len(rows), rank, dtype=np.int64),
            "phase": names[known],
            "ordinal": ordinal,
            "step": column["step"].astype(np.int64),
            "t": column["t"],
            "step_time": column["step_time"],
            "io_time": column["io_time"],
            "compute_time": column["compute_time"],
            "samples": column["samples"].astype(np.int64),
        }
    )


def _legacy_steps(records: pd.DataFrame) -> pd.DataFrame:
    """Schema 1: the four JSON records of each step, one row per step (ordinal -1)."""
    wide = _wide(records, STEP_NAMES, ["rank", "phase", "step", "t"])
    wide["rank"] = wide["rank"].astype(int)
    wide["step"] = wide["step"].astype(int)
    wide["samples"] = wide["samples"].fillna(0).astype(int)
    wide["ordinal"] = -1
    return wide[list(STEP_TABLE_COLUMNS)]


def read_runs(paths: PathArg | Iterable[PathArg]) -> list[RunData]:
    """:func:`read_run` for every run under ``paths`` (see :func:`find_runs`)."""
    return [read_run(run_dir) for run_dir in find_runs(paths)]


# -------------------------------------------------------------------------------- tables


def phase_table(run: RunData) -> pd.DataFrame:
    """One row per phase per rank, in time order: rank, phase (name), ordinal (its position
    among the rank's phases, from 0), kind, index (the n-th phase of that name on that rank,
    from 0), start_t, end_t (s since run start), wall_s, io_s, compute_s (s), samples, steps,
    complete, energy_j (J, NaN without an energy counter), warmup_steps, warmup_samples,
    warmup_s (the phase's warm-up steps, which wall_s, io_s, compute_s, samples and steps leave
    out; 0 without warm-up).

    Finished phases come from their phase_* records; a phase a killed process left open is
    rebuilt from its steps (end = last step's end; complete = False). ``kind`` comes from the
    phase records (schema 2), else from summary.json's phases when the run has one, else it is
    the phase name when that names a kind (train, val, infer), else None.
    """
    import pandas as pd

    records, steps = run.records, _with_ordinals(run)
    ends = _phase_ends(records)
    starts = records.loc[records["name"] == "phase_start", ["rank", "phase", "value", "kind"]]
    starts = starts.rename(columns={"value": "start_t"})
    starts["ordinal"] = starts.groupby("rank").cumcount()
    if starts.empty:  # schema 1: a phase's records are written when it ends
        table = ends.assign(start_t=ends["end_t"] - ends["wall_s"], complete=True)
    else:
        # The n-th start of a name with its n-th end: a phase run inside another (pausing
        # it) ends first, so the end records' order is not the start records'.
        nth = ["rank", "phase", "nth"]
        starts["nth"] = starts.groupby(["rank", "phase"]).cumcount()
        named_ends = ends.assign(nth=ends.groupby(["rank", "phase"]).cumcount())
        table = starts.merge(named_ends.drop(columns=["kind", "ordinal"]), on=nth, how="left").drop(
            columns=["nth"]
        )
        table["complete"] = table["end_t"].notna()
    done = table[table["complete"]]
    open_steps = steps[
        ~steps.set_index(["rank", "ordinal"]).index.isin(done.set_index(["rank", "ordinal"]).index)
    ]
    if not open_steps.empty:
        rebuilt = (
            open_steps.assign(start=open_steps["t"] - open_steps["step_time"])
            .groupby(["rank", "ordinal"])
            .agg(
                phase=("phase", "first"),
                first_start=("start", "min"),
                end_t=("t", "max"),
                io_s=("io_time", "sum"),
                compute_s=("compute_time", "sum"),
                samples=("samples", "sum"),
                steps=("step", "count"),
            )
            .reset_index()
        )
        known = table[~table["complete"]].drop(
            columns=["end_t", "io_s", "compute_s", "samples", "steps"], errors="ignore"
        )
        merged = rebuilt.merge(known.drop(columns=["phase"]), on=["rank", "ordinal"], how="left")
        merged["start_t"] = merged["start_t"].fillna(merged["first_start"])
        merged["complete"] = False
        merged = merged.drop(columns=["first_start"])
        table = pd.concat([done, merged], ignore_index=True)
    else:
        table = table[table["complete"]]
    columns = ["rank", "phase", "ordinal", "start_t", "end_t", "wall_s", "io_s", "compute_s"]
    if table.empty:
        table = pd.DataFrame(columns=[*columns, "samples", "steps", "complete", "kind"])
    table["wall_s"] = (
        table["end_t"] - table["start_t"]
        if "wall_s" not in table
        else (table["wall_s"].fillna(table["end_t"] - table["start_t"] - _paused_s(table)))
    )
    if "energy_j" not in table:
        table["energy_j"] = float("nan")
    if "kind" not in table:
        table["kind"] = None
    table = table.sort_values(["rank", "ordinal"], kind="stable").reset_index(drop=True)
    table = table.astype(
        {c: float for c in columns[3:]}
        | {"rank": int, "ordinal": int, "samples": int, "steps": int, "complete": bool}
    )
    table["index"] = table.groupby(["rank", "phase"]).cumcount()
    recorded = table["kind"]
    table["kind"] = recorded.where(recorded.notna(), pd.Series(_phase_kinds(run, table)))
    warmup = ["warmup_steps", "warmup_samples", "warmup_s"]
    for column in warmup:  # 0 without warm-up (and for a phase a killed process left open)
        table[column] = table[column].fillna(0) if column in table else 0
    table = table.astype({"warmup_steps": int, "warmup_samples": int, "warmup_s": float})
    return table[
        [
            *columns[:3],
            "kind",
            "index",
            *columns[3:],
            "samples",
            "steps",
            "complete",
            "energy_j",
            *warmup,
        ]
    ].reset_index(drop=True)


def _paused_s(table: pd.DataFrame) -> pd.Series:
    """Seconds (s) each open phase (no wall_s: a killed process left it open) was paused by
    the ended phases run inside it - a phase of another kind pauses it, and the live run
    leaves that time out of its wall time (Phase.paused_s). Nested inner phases count once."""
    import pandas as pd

    done = table[table["complete"]]
    paused = pd.Series(0.0, index=table.index)
    for row in table[table["wall_s"].isna()].itertuples():
        inside = done[
            (done["rank"] == row.rank)
            & (done["ordinal"] > row.ordinal)
            & (done["start_t"] >= row.start_t)
            & (done["end_t"] <= row.end_t)
        ]
        reached = row.start_t
        for start, end in sorted(zip(inside["start_t"], inside["end_t"], strict=True)):
            paused[row.Index] += max(end - max(start, reached), 0.0)
            reached = max(reached, end)
    return paused


#: The phase_* records written when a phase ends.
_END_NAMES = tuple(name for name in PHASE_NAMES if name != "phase_start")


def _phase_ends(records: pd.DataFrame) -> pd.DataFrame:
    """One row per ended phase per rank (rank, phase, kind, ordinal, end_t and its figures)."""
    ends = _wide(records, _END_NAMES, ["rank", "phase", "t", "kind"]).rename(
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
    ends = ends.sort_values(["rank", "end_t"], kind="stable").reset_index(drop=True)
    ends["ordinal"] = ends.groupby("rank").cumcount()
    return ends


def _with_ordinals(run: RunData) -> pd.DataFrame:
    """run.steps with every step's phase ordinal: schema 1 steps (ordinal -1) belong to the
    first phase of their name ending at or after them, else to the phase left open."""
    import pandas as pd

    steps = run.steps
    legacy = steps["ordinal"] < 0
    if not legacy.any():
        return steps
    ends = _phase_ends(run.records)[["rank", "phase", "end_t", "ordinal"]]
    after = ends.groupby("rank")["ordinal"].max().add(1)
    old = steps[legacy].drop(columns=["ordinal"]).sort_values("t")
    if ends.empty:
        old["ordinal"] = 0
    else:
        old = pd.merge_asof(
            old,
            ends.sort_values("end_t").astype({"end_t": float}),
            left_on="t",
            right_on="end_t",
            by=["rank", "phase"],
            direction="forward",
        ).drop(columns=["end_t"])
        old["ordinal"] = old["ordinal"].fillna(old["rank"].map(after)).fillna(0)
    old["ordinal"] = old["ordinal"].astype(int)
    merged = pd.concat([steps[~legacy], old[list(STEP_TABLE_COLUMNS)]], ignore_index=True)
    return merged.sort_values(["rank", "t"], kind="stable").reset_index(drop=True)


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


def step_table(run: RunData, phases: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per finished step of ``run``: rank, phase, kind, index (of the phase instance,
    as in :func:`phase_table`), step, start_t and t (start and end, s since run start),
    step_time, io_time, compute_time (s), samples."""
    if phases is None:
        phases = phase_table(run)
    steps = _with_ordinals(run)
    keys = phases[["rank", "ordinal", "kind", "index"]]
    merged = steps.merge(keys, on=["rank", "ordinal"], how="left")
    merged["start_t"] = merged["t"] - merged["step_time"]
    columns = ["rank", "phase", "kind", "index", "step", "start_t", "t", *STEP_NAMES]
    return merged[columns].sort_values(["rank", "t"], kind="stable").reset_index(drop=True)


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
