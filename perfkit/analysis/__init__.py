"""Records -> pandas: tidy DataFrames of one run, many runs, or folders of runs.

pandas is imported when these functions run, not when perfkit is imported.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perfkit.records import (
    META_FILE,
    RECORD_FIELDS,
    SUMMARY_FILE,
    RecordError,
    read_json,
    read_records,
)

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


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and ((path / META_FILE).is_file() or any(path.glob("records*.jsonl")))


def run_status(run_dir: Path) -> str:
    """ "ok" or "failed" from summary.json; "partial" when the run has no summary (killed)."""
    summary_path = run_dir / SUMMARY_FILE
    if not summary_path.is_file():
        return "partial"
    summary = read_json(summary_path)
    if not isinstance(summary, dict):
        raise RecordError(f"{summary_path} is not a perfkit summary")
    return str(summary.get("status", "unknown"))


def read_meta(run_dir: Path) -> dict[str, Any]:
    """The run's metadata (meta.json), {} when the file is missing."""
    meta_path = run_dir / META_FILE
    if not meta_path.is_file():
        return {}
    meta = read_json(meta_path)
    if not isinstance(meta, dict):
        raise RecordError(f"{meta_path} is not a perfkit metadata file")
    return meta


def load(paths: PathArg | Iterable[PathArg]) -> pd.DataFrame:
    """Tidy DataFrame of every record of every run under ``paths``.

    Columns: the record fields (run_id, rank, phase, step, name, value, unit, t, device, note),
    then run_dir, status ("ok", "failed" or "partial"), the metadata columns of
    :data:`META_COLUMNS` prefixed ``run_`` and the run's config as ``config.<key>``.
    """
    import pandas as pd

    frames = []
    for run_dir in find_runs(paths):
        meta = read_meta(run_dir)
        rows = [r for f in sorted(run_dir.glob("records*.jsonl")) for r in read_records(f)]
        frame = pd.DataFrame.from_records(rows, columns=list(RECORD_FIELDS))
        frame["run_dir"] = str(run_dir)
        frame["status"] = run_status(run_dir)
        for key in META_COLUMNS:
            frame[f"run_{key}"] = meta.get(key)
        for key, value in (meta.get("config") or {}).items():
            frame[f"config.{key}"] = value if not isinstance(value, (list, dict)) else str(value)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
