"""Finding run directories: the runs a path names, in natural order.

Nothing is read here but directory listings.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from perfkit.records import META_FILE, RecordError

PathArg = str | os.PathLike[str]


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
