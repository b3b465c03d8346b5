"""Reading a run's meta.json and summary.json as their types say (a field of the wrong type
is left out, as if missing), and turning errors from a malformed run into RecordError.

Files are parsed with ``json.loads`` only; nothing in a run directory is evaluated or unpickled.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from perfkit.analysis._discover import PathArg
from perfkit.records import META_FILE, SUMMARY_FILE, RecordError, read_json

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
