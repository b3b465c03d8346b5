"""The binary step log: one fixed-width row of float64 columns per finished step.

A file is a header - :data:`MAGIC`, a 4-byte little-endian length, that many bytes of JSON
(schema_version, columns, units, byte order, run_id, rank; padded with spaces so the rows start
on an 8-byte boundary) - then the rows, appended as the run goes. A row is
:data:`perfkit.records.STEP_COLUMNS` as float64s in the header's byte order. A process killed
mid-write leaves a torn last row: readers drop the bytes after the last whole row.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perfkit.appendlog import AppendLog
from perfkit.records import SCHEMA_VERSION, STEP_COLUMNS, RecordError

if TYPE_CHECKING:
    import numpy as np

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
    ) -> None:
        self.path = path
        self._file = AppendLog(path, encode_header(fields), on_recreated)
        self._file.flush()

    @property
    def error(self) -> str | None:
        """The first write failure, None when every write worked."""
        return self._file.error

    def write(self, rows: bytes) -> None:
        """Append whole rows (kept to retry when the write fails; ``b""`` only retries)."""
        self._file.add(rows)
        self._file.flush()

    def detach(self) -> None:
        """In a forked child: close the file without writing to it (the parent writes it)."""
        self._file.detach()

    def close(self) -> None:
        """Flush and close; later writes are ignored (the run ended)."""
        self._file.close()


def read_step_log(path: Path) -> tuple[dict[str, Any], np.ndarray]:
    """(header, rows as an (n, columns) float64 array) of one step log; a torn last row is
    dropped. Raises :class:`RecordError` for a file that is not a perfkit step log."""
    import numpy as np

    data = path.read_bytes()
    start = len(MAGIC) + _LENGTH_BYTES
    if not data.startswith(MAGIC) or len(data) < start:
        raise RecordError(f"{path} is not a perfkit step log (no {MAGIC!r} header)")
    length = int.from_bytes(data[len(MAGIC) : start], "little")
    try:
        fields = json.loads(data[start : start + length])
        columns = list(fields["columns"])
        order = "<" if fields.get("byteorder", "little") == "little" else ">"
    except (ValueError, KeyError, TypeError) as err:
        raise RecordError(f"{path}: the step log's header is not valid: {err}") from err
    body = memoryview(data)[start + length :]
    width = 8 * len(columns)
    whole = len(body) - len(body) % width
    rows = np.frombuffer(body[:whole], dtype=f"{order}f8").reshape(-1, len(columns))
    return fields, rows
