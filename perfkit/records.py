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

import contextlib
import json
import logging
import math
import os
import secrets
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

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
#: a probe measured energy.
PHASE_NAMES = (
    "phase_start",
    "phase_wall",
    "phase_io",
    "phase_compute",
    "phase_samples",
    "phase_steps",
    "phase_energy",
)

Record = dict[str, Any]

_log = logging.getLogger("perfkit")


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

    A write that fails (a full disk) never raises: the file is cut back to its last whole record,
    the records stay queued and the next flush writes them again (so when space returns nothing
    is lost, torn or written twice). The first failure is kept in :attr:`error` and logged once
    (logger "perfkit"). When the file was deleted under the writer (the run directory removed
    mid-run), the next flush recreates it with everything written so far and calls
    ``on_recreated``.
    """

    def __init__(self, path: Path, on_recreated: Callable[[str], None] | None = None) -> None:
        self.path = path
        self._fd: int | None = _open_records(path)
        self._size = os.fstat(self._fd).st_size  # bytes of whole records on disk
        self._lines: list[str] = []
        self._unwritten = b""  # encoded records not on disk yet (a write failed)
        self._lock = threading.Lock()
        self._on_recreated = on_recreated
        #: The first write failure ("OSError: ... writing <path>"), None when every write worked.
        self.error: str | None = None
        self._failed = False

    def write(self, record: Record) -> None:
        """Queue one record (see :func:`make_record`)."""
        line = json.dumps(record, allow_nan=False, separators=(",", ":"))
        with self._lock:
            self._lines.append(line)

    def write_lines(self, lines: Iterable[str]) -> None:
        """Queue records already encoded as JSON lines (no trailing newline)."""
        with self._lock:
            self._lines.extend(lines)

    def flush(self) -> bool:
        """Write queued records to the file (the OS has them: a killed process keeps them).
        Returns False when a write failed (the records stay queued for the next flush)."""
        with self._lock:
            if self._fd is None:
                return True
            if self._lines:
                self._unwritten += ("\n".join(self._lines) + "\n").encode("utf-8")
                self._lines.clear()
            if not self._unwritten:
                return True
            try:
                self._reopen_if_deleted()
                self._append(self._unwritten)
            except OSError as err:
                self._fail(err)
                return False
            self._unwritten = b""
            if self._failed:
                self._failed = False
                assert self.error is not None
                self.error += "; written later: no record was lost"
                _log.warning("records writing to %s works again", self.path)
            return True

    def _append(self, data: bytes) -> None:
        """Append ``data`` whole or, on failure, leave the file at its last whole record."""
        assert self._fd is not None
        fd = self._fd
        if os.fstat(fd).st_size != self._size:  # a torn tail an earlier cut could not remove
            os.ftruncate(fd, self._size)
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                written += os.write(fd, view[written:])
        except OSError:
            with contextlib.suppress(OSError):  # else cut again before the next write
                os.ftruncate(fd, self._size)
            raise
        self._size += written

    def _reopen_if_deleted(self) -> None:
        """Recreate the file (and its folder) with the records written so far when it was
        deleted under the writer."""
        assert self._fd is not None
        if os.fstat(self._fd).st_nlink > 0:
            return
        written = os.pread(self._fd, self._size, 0)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = _open_records(self.path)
        os.ftruncate(fd, 0)
        os.close(self._fd)
        self._fd, self._size = fd, 0
        self._append(written)
        if self._on_recreated is not None:
            self._on_recreated(
                f"{self.path} was deleted while the run was running (the run directory "
                f"removed?); recreated it with the {len(written)} bytes of records written so far"
            )

    def _fail(self, err: OSError) -> None:
        if self.error is None:
            self.error = f"{type(err).__name__}: {err} (writing {self.path})"
            _log.warning("records not written, kept to retry: %s", self.error)
        self._failed = True

    def close(self) -> None:
        """Flush and close (never raises: records that could not be written are named in
        :attr:`error`); later writes are ignored silently (the run ended)."""
        self.flush()
        with self._lock:
            if self._fd is None:
                return
            try:
                self._reopen_if_deleted()
            except OSError as err:
                self._fail(err)
            if self._unwritten and self.error is not None:
                self.error += f"; {len(self._unwritten)} bytes of records were never written"
            os.close(self._fd)
            self._fd = None


def _open_records(path: Path) -> int:
    """Open ``path`` for appending (created with mode 0666 less the umask)."""
    return os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (temp file + rename in the same folder); the
    file gets mode 0666 less the umask, as the records do. NaN / inf are refused (ValueError)."""
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False, default=str) + "\n"
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _parse_float(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None  # 1e999 in a file reads as null


def _loads(text: str) -> Any:
    """``json.loads``, NaN / Infinity / overflowing numbers read as None; RecursionError (deeply
    nested input) as a ValueError."""
    try:
        return json.loads(text, parse_float=_parse_float, parse_constant=lambda _name: None)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def read_bytes(path: Path) -> bytes:
    """The bytes of the regular file ``path``; a :class:`RecordError` for anything else (a FIFO,
    a device: opened without blocking, so a FIFO never hangs the reader)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RecordError(f"{path} is not a regular file")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_json(path: Path) -> Any:
    """Read a JSON file; a clear :class:`RecordError` naming it if it is not JSON."""
    try:
        return _loads(read_bytes(path).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        if isinstance(err, RecordError):
            raise
        raise RecordError(f"{path} is not a perfkit JSON file: {err}") from err


#: Types each record field may have (None: absent or null); name, value and t must be present.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "run_id": (str,),
    "rank": (int,),
    "phase": (str,),
    "step": (int,),
    "name": (str,),
    "value": (int, float),
    "unit": (str,),
    "t": (int, float),
    "device": (str,),
    "note": (str,),
    "kind": (str,),
}


def _record_problem(record: Any) -> str | None:
    """Why ``record`` is not a perfkit record, None when it is one."""
    if not isinstance(record, dict) or not {"name", "value", "t"} <= record.keys():
        return f"not a perfkit record (expected the fields {RECORD_FIELDS})"
    for field, types in _FIELD_TYPES.items():
        value = record.get(field)
        if value is None:
            if field in ("name", "t", "rank"):
                return f"field {field!r} is missing or null"
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            return f"field {field!r} has a {type(value).__name__}: {value!r:.40}"
        if isinstance(value, int) and not -(2**53) <= value <= 2**53:
            return f"field {field!r} is out of range: {value!r:.40}"
    if record["rank"] < 0 or (record.get("step") is not None and record["step"] < 0):
        return "rank and step must not be negative"
    return None


def read_records(path: Path, bad_lines: list[str] | None = None) -> Iterator[Record]:
    """Yield the records of one ``records.jsonl``, every field of :data:`RECORD_FIELDS` present.

    A truncated last line (a process killed mid-write) is skipped silently; any other line that
    is not a perfkit record is skipped, appended to ``bad_lines`` ("<file>:<line>: why") and
    counted in one warning (logger "perfkit"); a file with no record but bad lines raises
    :class:`RecordError` naming the file and line. Lines are parsed with ``json.loads`` only:
    nothing in a file is evaluated or unpickled.
    """
    lines = read_bytes(path).split(b"\n")
    last = len(lines) - 1  # the part after the last newline ("" when the file ends with one)
    bad: list[str] = []
    good = 0
    for index, raw in enumerate(lines):
        if not raw.strip():
            continue
        number = index + 1
        try:
            record = _loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            if index == last:
                break  # the last write of a killed process
            bad.append(f"{path}:{number} is not a JSON record: {err}")
            continue
        problem = _record_problem(record)
        if problem is not None:
            bad.append(f"{path}:{number} is not a perfkit record: {problem}")
            continue
        for field in RECORD_FIELDS:
            record.setdefault(field, None)
        good += 1
        yield record
    if bad and not good:
        raise RecordError(bad[0])
    if bad:
        _log.warning("skipped %d bad line(s) of %s; the first: %s", len(bad), path, bad[0])
        if bad_lines is not None:
            bad_lines.extend(bad)
