"""Reading one run directory: its metadata, summary, events and steps (:class:`RunData`).

Files are parsed with ``json.loads`` only; nothing in a run directory is evaluated or unpickled.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perfkit.analysis._discover import PathArg, find_runs, natural_key
from perfkit.analysis._validate import read_meta, read_summary, reading
from perfkit.records import (
    RECORD_FIELDS,
    REQUESTS_FILE,
    SCHEMA_VERSION,
    STEP_NAMES,
    RecordError,
    read_records,
    read_requests,
)
from perfkit.steplog import read_step_log

if TYPE_CHECKING:
    import pandas as pd


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
        version = self.meta.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise RecordError(
                f"{run_dir} has records of schema_version {version!r}; this perfkit reads "
                f"schema_version {SCHEMA_VERSION} only"
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
    """Read one run directory (see :class:`RunData`)."""
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
    frames = [_binary_steps(path, records) for path in sorted(run_dir.glob("steps*.bin"))]
    frames = [f for f in frames if not f.empty]
    steps = pd.concat(frames, ignore_index=True) if frames else _empty_steps()
    steps = steps.sort_values(["rank", "t"], kind="stable").reset_index(drop=True)
    return records, steps, tuple(bad_lines)


#: Columns of RunData.steps: rank, phase (name), ordinal (the phase's position among its
#: rank's phases, from 0), step, t (the step's end, s since run start), step_time, io_time,
#: compute_time (s), samples, tokens (0 where none were counted or the log predates them).
STEP_TABLE_COLUMNS = ("rank", "phase", "ordinal", "step", "t", *STEP_NAMES, "tokens")


def _empty_steps() -> pd.DataFrame:
    import pandas as pd

    types = {"rank": int, "phase": object, "ordinal": int, "step": int, "samples": int}
    types["tokens"] = int
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
            "tokens": column.get("tokens", np.zeros(len(rows))).astype(np.int64),
        }
    )


def read_runs(paths: PathArg | Iterable[PathArg]) -> list[RunData]:
    """:func:`read_run` for every run under ``paths`` (see :func:`find_runs`)."""
    return [read_run(run_dir) for run_dir in find_runs(paths)]
