"""The binary step log: one fixed-width row of float64 columns per finished step.

A file is a header - :data:`MAGIC`, a 4-byte little-endian length, that many bytes of JSON
(schema_version, columns, units, byte order, run_id, rank; padded with spaces so the rows start
on an 8-byte boundary) - then the rows, appended as the run goes. A row is
:data:`perfkit.records.STEP_COLUMNS` as float64s in the header's byte order. A process killed
mid-write leaves a torn last row: readers drop the bytes after the last whole row.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perfkit.appendlog import AppendLog
from perfkit.records import (
    OPTIONAL_STEP_COLUMNS,
    SCHEMA_VERSION,
    STEP_COLUMNS,
    RecordError,
    open_regular,
)

if TYPE_CHECKING:
    import numpy as np

    from perfkit.rundir import RunDirectory

MAGIC = b"PKSTEPS\n"
_LENGTH_BYTES = 4
ROW_BYTES = 8 * len(STEP_COLUMNS)


def header(run_id: str, rank: int) -> dict[str, Any]:
    """The header of a step log written by this process."""
    return {
        "schema_version": SCHEMA_VERSION,
        "columns": [name for name, _unit in STEP_COLUMNS],
        "units": [unit for _name, unit in STEP_COLUMNS],
        "dtype": "float64",
        "byteorder": sys.byteorder,
        "run_id": run_id,
        "rank": rank,
    }


def encode_header(fields: dict[str, Any]) -> bytes:
    """The bytes a step log starts with (rows then start on an 8-byte boundary)."""
    text = json.dumps(fields, separators=(",", ":")).encode()
    pad = -(len(MAGIC) + _LENGTH_BYTES + len(text)) % 8
    text += b" " * pad
    return MAGIC + len(text).to_bytes(_LENGTH_BYTES, "little") + text


class StepLogWriter:
    """Appends rows (raw float64 bytes) to a step log; writes the header into a new file.
    Writing never raises: see :class:`perfkit.appendlog.AppendLog` (a full disk, a deleted
    file); the first failure is :attr:`error`."""

    def __init__(
        self,
        path: Path,
        fields: dict[str, Any],
        on_recreated: Callable[[str], None] | None = None,
        directory: RunDirectory | None = None,
    ) -> None:
        self.path = path
        self._file = AppendLog(path, encode_header(fields), on_recreated, directory)
        self._file.flush()

    @property
    def error(self) -> str | None:
        """The first write failure, None when every write worked."""
        return self._file.error

    def write(self, rows: bytes | memoryview) -> None:
        """Append whole rows (kept to retry when the write fails; ``b""`` only retries)."""
        self._file.write(rows)

    def detach(self) -> None:
        """In a forked child: close the file without writing to it (the parent writes it)."""
        self._file.detach()

    def close(self) -> None:
        """Flush and close; later writes are ignored (the run ended)."""
        self._file.close()


#: Longest step-log header read, bytes.
MAX_HEADER_BYTES = 2**16
#: Largest step log the readers read, bytes (about 38 million steps); a larger file is refused
#: with a RecordError, so a sparse or runaway file cannot exhaust memory.
MAX_STEP_LOG_BYTES = 2 * 2**30


def read_step_log(path: Path) -> tuple[dict[str, Any], np.ndarray]:
    """(header, rows as an (n, columns) float64 array in native byte order) of one step log; a
    torn last row is dropped. Raises :class:`RecordError` for a file that is not a perfkit step
    log: not a regular file (see :func:`perfkit.records.open_regular`), a missing or malformed
    header, more than :data:`MAX_STEP_LOG_BYTES`. Memory: the rows, read once."""
    import numpy as np

    fd, size = open_regular(path)
    with os.fdopen(fd, "rb") as handle:
        start = len(MAGIC) + _LENGTH_BYTES
        head = handle.read(start)
        if len(head) < start or not head.startswith(MAGIC):
            raise RecordError(f"{path} is not a perfkit step log (no {MAGIC!r} header)")
        length = int.from_bytes(head[len(MAGIC) :], "little")
        text = handle.read(min(length, MAX_HEADER_BYTES))
        if length > MAX_HEADER_BYTES or len(text) < length:
            raise RecordError(f"{path}: the step log's header is not valid: {length} bytes long")
        fields, columns, order = _check_header(path, text)
        if size > MAX_STEP_LOG_BYTES:
            raise RecordError(
                f"{path} holds {size} bytes, more than perfkit reads ({MAX_STEP_LOG_BYTES})"
            )
        width = 8 * len(columns)
        rows = np.empty((max(size - start - length, 0) // width, len(columns)), f"{order}f8")
        got = handle.readinto(rows.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
    rows = rows[: (got or 0) // width]
    return fields, rows.astype(np.float64, copy=False)  # native byte order


def _check_header(path: Path, text: bytes) -> tuple[dict[str, Any], list[str], str]:
    """(fields, columns, numpy byte order) of a step log's header; RecordError if malformed."""
    try:
        fields = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise RecordError(f"{path}: the step log's header is not valid: {err}") from None
    columns = fields.get("columns") if isinstance(fields, dict) else None
    order = {"little": "<", "big": ">"}.get(
        fields.get("byteorder", "little") if isinstance(fields, dict) else ""
    )
    needed = [name for name, _unit in STEP_COLUMNS if name not in OPTIONAL_STEP_COLUMNS]
    problem = None
    if not isinstance(fields, dict):
        problem = "not a JSON object"
    elif not (isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
        problem = f"columns must be a list of names, not {columns!r:.60}"
    elif not set(needed) <= set(columns) or len(set(columns)) != len(columns):
        problem = f"columns must name each of {needed} once, not {columns!r:.200}"
    elif order is None:
        problem = f"byteorder must be 'little' or 'big', not {fields.get('byteorder')!r:.40}"
    elif fields.get("dtype", "float64") != "float64":
        problem = f"dtype must be 'float64', not {fields.get('dtype')!r:.40}"
    elif not isinstance(fields.get("rank", 0), int) or fields.get("rank", 0) < 0:
        problem = f"rank must be a non-negative int, not {fields.get('rank')!r:.40}"
    if problem is not None:
        raise RecordError(f"{path}: the step log's header is not valid: {problem}")
    assert isinstance(fields, dict) and isinstance(columns, list) and order is not None
    return fields, columns, order
