"""The record schema and the JSON Lines writer.

A run directory holds:

- ``meta.json``    run metadata, written atomically when the run starts (so a killed run keeps it);
- ``records.jsonl`` one flat long-format record a line, appended and flushed as the run goes;
- ``summary.json`` the summary, written atomically when the run ends (also when it fails).

Every record has the fields of :data:`RECORD_FIELDS`. Values are in base units only (seconds,
bytes, FLOPs, samples, joules); ``unit`` names the unit. ``value`` is a float or ``null`` (a value
the device could not report, or a text-only event such as a probe error, whose text is in
``note``). ``t`` is seconds since the run started on the run's host clock.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

SCHEMA_VERSION = 1
RECORDS_FILE = "records.jsonl"
SUMMARY_FILE = "summary.json"
META_FILE = "meta.json"

#: Field order of every record line.
RECORD_FIELDS = (
    "run_id", "rank", "phase", "step", "name", "value", "unit", "t", "device", "note", "kind",
)  # fmt: skip
#: Fields a line may leave out (null when absent); step lines omit them to stay short.
#: ``kind`` (the phase's kind) is on the phase_* records.
OPTIONAL_FIELDS = ("device", "note", "kind")

#: Names of the four records a finished step writes.
STEP_NAMES = ("step_time", "io_time", "compute_time", "samples")
#: Names of the records a finished phase writes (t = the phase's end); phase_energy only when
#: a probe measured energy, phase_warmup_* (steps, samples, seconds) only after warm-up steps.
PHASE_NAMES = (
    "phase_start",
    "phase_wall",
    "phase_io",
    "phase_compute",
    "phase_samples",
    "phase_steps",
    "phase_energy",
    "phase_warmup_steps",
    "phase_warmup_samples",
    "phase_warmup",
)

Record = dict[str, Any]


class RecordError(ValueError):
    """A file or line that is not a perfkit record."""


def make_record(
    run_id: str,
    rank: int,
    name: str,
    value: float | None,
    unit: str,
    t: float,
    *,
    phase: str | None = None,
    step: int | None = None,
    device: str | None = None,
    note: str | None = None,
    kind: str | None = None,
) -> Record:
    """Build one record with every schema field present."""
    return {
        "run_id": run_id,
        "rank": rank,
        "phase": phase,
        "step": step,
        "name": name,
        "value": _finite_or_none(value),
        "unit": unit,
        "t": t,
        "device": device,
        "note": note,
        "kind": kind,
    }


def step_lines_template(run_id: str, rank: int, phase: str) -> str:
    """Template of one step's four JSON lines (step_time, io_time, compute_time, samples).

    Filled by ``str.format(step, t, wall, io, compute, samples)``, so each number is formatted
    once, as ``repr`` writes it (a float read back is the float written); the optional fields
    are left out (readers fill them with null).
    """
    prefix = json.dumps({"run_id": run_id, "rank": rank, "phase": phase}, separators=(",", ":"))
    head = prefix[:-1].replace("{", "{{").replace("}", "}}") + ',"step":{0},"name":'
    tail = ',"t":{1!r}}}'
    return "\n".join(
        [
            f'{head}"step_time","value":{{2!r}},"unit":"s"{tail}',
            f'{head}"io_time","value":{{3!r}},"unit":"s"{tail}',
            f'{head}"compute_time","value":{{4!r}},"unit":"s"{tail}',
            f'{head}"samples","value":{{5}},"unit":"samples"{tail}',
        ]
    )


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class RecordWriter:
    """Appends records to ``records.jsonl``; thread-safe (the probe sampler writes too).

    Records are buffered in memory and written by :meth:`flush`; ``Run`` flushes at phase end and
    at least every ``flush_interval_s`` seconds, so a killed process keeps what it had.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO | None = open(path, "a", encoding="utf-8")  # noqa: SIM115
        self._lines: list[str] = []
        self._lock = threading.Lock()

    def write(self, record: Record) -> None:
        """Queue one record (see :func:`make_record`)."""
        line = json.dumps(record, allow_nan=False, separators=(",", ":"))
        with self._lock:
            self._lines.append(line)

    def write_lines(self, lines: Iterable[str]) -> None:
        """Queue records already encoded as JSON lines (no trailing newline)."""
        with self._lock:
            self._lines.extend(lines)

    def flush(self) -> None:
        """Write queued records to disk and flush the OS buffer."""
        with self._lock:
            if self._file is None or not self._lines:
                return
            self._file.write("\n".join(self._lines) + "\n")
            self._lines.clear()
            self._file.flush()

    def close(self) -> None:
        """Flush and close; later writes are ignored silently only after close (run ended)."""
        self.flush()
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (temp file + rename in the same folder)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(obj, handle, indent=2, sort_keys=True, allow_nan=False, default=str)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    """Read a JSON file; a clear :class:`RecordError` if it is not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RecordError(f"{path} is not a perfkit JSON file: {err}") from err


def read_records(path: Path) -> Iterator[Record]:
    """Yield the records of one ``records.jsonl``, every field of :data:`RECORD_FIELDS` present.

    A truncated last line (a process killed mid-write) is skipped; any other line that is not a
    perfkit record raises :class:`RecordError` naming the file and line number. Lines are parsed
    with ``json.loads`` only: nothing in a file is evaluated or unpickled.
    """
    with open(path, encoding="utf-8") as handle:
        lines = handle.readlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines) and not line.endswith("\n"):
                return  # the last write of a killed process
            raise RecordError(f"{path}:{number} is not a JSON record: {err}") from err
        if not isinstance(record, dict) or not {"name", "value", "t"} <= record.keys():
            raise RecordError(
                f"{path}:{number} is not a perfkit record (expected the fields {RECORD_FIELDS})"
            )
        for field in OPTIONAL_FIELDS:
            record.setdefault(field, None)
        yield record
