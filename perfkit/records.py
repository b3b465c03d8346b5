"""The record schema (file names, record names, units, versions) and the JSON Lines writer.

A run directory holds:

- ``meta.json``     run metadata, written atomically when the run starts (so a killed run keeps
  it; rewritten when ``set_flops`` is called later);
- ``records.jsonl`` events, one flat JSON record a line, appended as the run goes: phase starts
  and ends, logged values, probe samples and errors, timed regions (``records-rank<N>.jsonl``
  for rank N > 0);
- ``steps.bin``     one fixed-width binary row per finished step (:mod:`perfkit.steplog`,
  columns :data:`STEP_COLUMNS`; ``steps-rank<N>.bin``) - schema 2; schema 1 wrote four JSON
  records per step (:data:`STEP_NAMES`) into records.jsonl instead;
- ``summary.json``  the summary, written atomically when the run ends (also when it fails).

Every event has the fields of :data:`RECORD_FIELDS`; :func:`json_schema` (the package's
``record.schema.json``) is the JSON Schema of one line. Values are in base units only (seconds,
bytes, FLOPs, samples, joules); ``unit`` names the unit. ``value`` is a float or ``null`` (a
value the device could not report, or a text-only event such as a probe error, whose text is in
``note``). ``t`` is seconds since the run started on the run's host clock. The names and units
are in :data:`RECORD_NAMES`.
"""

from __future__ import annotations

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

from perfkit.appendlog import AppendLog

#: Version of the files a run writes; readers read every version of READABLE_SCHEMA_VERSIONS.
#: 2: steps in steps.bin, phase_start at the phase's start, kind on phase records.
SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)
RECORDS_FILE = "records.jsonl"
STEPS_FILE = "steps.bin"
SUMMARY_FILE = "summary.json"
META_FILE = "meta.json"

#: Field order of every record line.
RECORD_FIELDS = (
    "run_id", "rank", "phase", "step", "name", "value", "unit", "t", "device", "note", "kind",
)  # fmt: skip
#: Fields a line may leave out (null when absent).
OPTIONAL_FIELDS = ("device", "note", "kind")

#: Columns of a steps.bin row (all float64) and their units: the phase's position among this
#: rank's phases (from 0, the order of its phase_start records), the step's index in the phase,
#: its end (s since run start), its wall, IO and compute seconds and its samples. A step spans
#: from ``t - step_time`` to ``t``.
STEP_COLUMNS = (
    ("phase", ""),
    ("step", ""),
    ("t", "s"),
    ("step_time", "s"),
    ("io_time", "s"),
    ("compute_time", "s"),
    ("samples", "samples"),
)
#: The per-step quantities (schema 1: one JSON record each, per step).
STEP_NAMES = ("step_time", "io_time", "compute_time", "samples")
#: Names of the records a phase writes: phase_start when it starts (t = value = its start),
#: the others when it ends (t = its end); phase_energy only when a probe measured energy,
#: phase_warmup_* (steps, samples, seconds) only after warm-up steps.
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
#: Prefix of the records ``perfkit.timed`` writes (``region/<label>``, seconds).
REGION_PREFIX = "region/"

#: Every record name perfkit writes, with its unit and meaning. Besides these: ``region/<label>``
#: (s), the probe quantities (``memory_used_bytes`` ... in B, %, W, C or J, see
#: :class:`perfkit.probes.DeviceSample`) and the values given to ``run.log`` (unit "").
RECORD_NAMES: dict[str, tuple[str, str]] = {
    "phase_start": ("s", "a phase started; value = t = its start"),
    "phase_wall": ("s", "the phase's wall time"),
    "phase_io": ("s", "the phase's IO time"),
    "phase_compute": ("s", "the phase's compute time"),
    "phase_samples": ("samples", "samples the phase processed"),
    "phase_steps": ("steps", "steps the phase finished"),
    "phase_energy": ("J", "device energy over the phase"),
    "phase_device_samples": ("samples", "one device's power samples in the phase (device)"),
    "phase_device_power_avg": ("W", "one device's average power over the phase"),
    "phase_device_power_max": ("W", "one device's maximum power over the phase"),
    "phase_device_temperature_avg": ("C", "one device's average temperature over the phase"),
    "phase_device_temperature_max": ("C", "one device's maximum temperature over the phase"),
    "phase_device_energy": (
        "J",
        "one device's energy over the phase; note: counter, or integrated (sampled power)",
    ),
    "probe_error": ("", "a probe failed and was disabled; the text is in note"),
    "step_backlog_full": ("", "steps outran the disk; the loop's thread wrote them (note)"),
    "step_time": ("s", "schema 1 only: a step's wall time"),
    "io_time": ("s", "schema 1 only: a step's IO time"),
    "compute_time": ("s", "schema 1 only: a step's compute time"),
    "samples": ("samples", "schema 1 only: a step's samples"),
}


def json_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of one records.jsonl line, with the steps.bin header in
    ``$defs.steps_header``: the ``record.schema.json`` shipped inside the package, read through
    importlib.resources (so it is found in a wheel, a zip or a source tree alike)."""
    from importlib.resources import files

    return dict(json.loads(files("perfkit").joinpath("record.schema.json").read_text("utf-8")))


def rank_file(name: str, rank: int) -> str:
    """The file ``name`` (records.jsonl, steps.bin) of ``rank``: ``records-rank1.jsonl``."""
    stem, dot, suffix = name.partition(".")
    return name if rank == 0 else f"{stem}-rank{rank}{dot}{suffix}"


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


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class RecordWriter:
    """Appends records to ``records.jsonl``; thread-safe (the probe sampler writes too).

    Records are buffered in memory and written by :meth:`flush`; ``Run`` flushes at phase end and
    at least every ``flush_interval_s`` seconds, so a killed process keeps what it had. Writing
    never raises: see :class:`perfkit.appendlog.AppendLog` (a full disk, a deleted file).
    """

    def __init__(self, path: Path, on_recreated: Callable[[str], None] | None = None) -> None:
        self.path = path
        self._file = AppendLog(path, on_recreated=on_recreated)
        self._lines: list[str] = []
        self._lock = threading.Lock()

    @property
    def error(self) -> str | None:
        """The first write failure ("OSError: ... writing <path>"), None when all worked."""
        return self._file.error

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
            if self._lines:
                self._file.add(("\n".join(self._lines) + "\n").encode("utf-8"))
                self._lines.clear()
            return self._file.flush()

    def close(self) -> None:
        """Flush and close (never raises: records that could not be written are named in
        :attr:`error`); later writes are ignored silently (the run ended)."""
        self.flush()
        with self._lock:
            self._file.close()


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
