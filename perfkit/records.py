"""The record schema (file names, record names, units, versions) and the JSON Lines writer.

A run directory holds:

- ``meta.json``     run metadata, written atomically when the run starts (so a killed run keeps
  it; rewritten when ``set_flops`` is called later);
- ``records.jsonl`` events, one flat JSON record a line, appended as the run goes: phase starts
  and ends, logged values, probe samples and errors, timed regions (``records-rank<N>.jsonl``
  for rank N > 0);
- ``steps.bin``     one fixed-width binary row per finished step (:mod:`perfkit.steplog`,
  columns :data:`STEP_COLUMNS`; ``steps-rank<N>.bin``);
- ``requests.jsonl`` generation / serving runs only: one JSON line per finished request
  (:data:`REQUEST_FIELDS`; ``requests-rank<N>.jsonl``), the inputs of :mod:`perfkit.serving`;
- ``summary.json``  the summary, written atomically when the run ends (also when it fails).

Every event has the fields of :data:`RECORD_FIELDS`; :func:`json_schema` (the package's
``record.schema.json``) is the JSON Schema of one line. Values are in base units only (seconds,
bytes, FLOPs, samples, joules); ``unit`` names the unit. ``value`` is a float or ``null`` (a
value the device could not report, or a text-only event such as a probe error, whose text is in
``note``). ``t`` is seconds since the run started on the run's host clock. The names and units
are in :data:`RECORD_NAMES`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import secrets
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perfkit._messages import logger
from perfkit.appendlog import AppendLog
from perfkit.figures import PHASE_TOTALS
from perfkit.rundir import NOFOLLOW

if TYPE_CHECKING:
    from perfkit.rundir import RunDirectory

#: Version of the files a run writes, and the one the readers read: steps in steps.bin,
#: phase_start at the phase's start, kind on phase records.
SCHEMA_VERSION = 2
RECORDS_FILE = "records.jsonl"
STEPS_FILE = "steps.bin"
SUMMARY_FILE = "summary.json"
META_FILE = "meta.json"
#: Per-request timings of generation / serving runs (``requests-rank<N>.jsonl`` for rank N > 0).
REQUESTS_FILE = "requests.jsonl"

#: Field order of every record line.
RECORD_FIELDS = (
    "run_id", "rank", "phase", "step", "name", "value", "unit", "t", "device", "note", "kind",
)  # fmt: skip
#: Fields a line may leave out (null when absent).
OPTIONAL_FIELDS = ("device", "note", "kind")

#: Columns of a steps.bin row (all float64) and their units: the phase's position among this
#: rank's phases (from 0, the order of its phase_start records), the step's index in the phase,
#: its end (s since run start), its wall, IO and compute seconds, its samples and its tokens
#: (0 where none were counted). A step spans from ``t - step_time`` to ``t``.
STEP_COLUMNS = (
    ("phase", ""),
    ("step", ""),
    ("t", "s"),
    ("step_time", "s"),
    ("io_time", "s"),
    ("compute_time", "s"),
    ("samples", "samples"),
    ("tokens", "tokens"),
)
#: Columns a step log may lack (written by perfkit before they existed): read as 0.
OPTIONAL_STEP_COLUMNS = ("tokens",)
#: The per-step quantities of a steps.bin row (analysis's step columns; load(long=True) names
#: its step rows after them, so run.log refuses them too).
STEP_NAMES = ("step_time", "io_time", "compute_time", "samples")
#: Fields of a requests.jsonl line, one line per finished request (:mod:`perfkit.serving`): the
#: request's index on its rank (from 0), the active phase, status "ok" or "failed", its send,
#: first-token and end times (s since run start; first_token_t null without a token), prompt
#: tokens (null: not known), output tokens, each token (or chunk) arrival time and the error.
REQUEST_FIELDS = (
    "run_id", "rank", "request", "phase", "status", "send_t", "first_token_t", "end_t",
    "prompt_tokens", "output_tokens", "token_t", "error",
)  # fmt: skip
#: Prefix of the records ``perfkit.timed`` writes (``region/<label>``, seconds).
REGION_PREFIX = "region/"

#: Every record name perfkit writes, with its unit and meaning. Besides these: ``region/<label>``
#: (s), the probe quantities (``memory_used_bytes`` ... in B, %, W, C or J, see
#: :class:`perfkit.probes.DeviceSample`) and the values given to ``run.log`` (unit "").
RECORD_NAMES: dict[str, tuple[str, str]] = {
    "phase_start": ("s", "a phase started; value = t = its start"),
    # when a phase ends (t = its end), as the figure table says
    **{total.record: (total.unit, total.about) for total in PHASE_TOTALS},
    "phase_device_samples": ("samples", "one device's power samples in the phase (device)"),
    "phase_device_power_avg": ("W", "one device's average power over the phase"),
    "phase_device_power_max": ("W", "one device's maximum power over the phase"),
    "phase_device_temperature_avg": ("C", "one device's average temperature over the phase"),
    "phase_device_temperature_max": ("C", "one device's maximum temperature over the phase"),
    "phase_device_energy": (
        "J",
        "one device's energy over the phase; note: counter, or integrated (sampled power)",
    ),
    "phase_tokens_from": (
        "",
        "how the phase counts its tokens (note: attention_mask, input_ids, given, callable); "
        "once a phase, when known",
    ),
    "probe_error": ("", "a probe failed and was disabled; the text is in note"),
    "step_backlog_full": ("", "steps outran the disk; the loop's thread wrote them (note)"),
}


@functools.cache
def reserved_names() -> frozenset[str]:
    """Every record name perfkit writes itself: :data:`RECORD_NAMES`, the step quantities
    (:data:`STEP_NAMES`) and the probe quantities (with ``region/<label>``,
    :data:`REGION_PREFIX`). :meth:`perfkit.Run.log` refuses them, and
    the summary's own keys (:data:`perfkit.figures.RESERVED_KEYS`): analysis would take a
    logged value of one of these names for perfkit's own."""
    from perfkit.probes._sample import DeviceSample

    probe = {f.name for f in dataclasses.fields(DeviceSample) if f.type == "float"}
    return frozenset(RECORD_NAMES) | frozenset(STEP_NAMES) | frozenset(probe)


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

    def __init__(
        self,
        path: Path,
        on_recreated: Callable[[str], None] | None = None,
        directory: RunDirectory | None = None,
    ) -> None:
        self.path = path
        self._file = AppendLog(path, on_recreated=on_recreated, directory=directory)
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

    def detach(self) -> None:
        """In a forked child: drop what is queued, take a new lock (the parent's threads may
        have held the old one at the fork) and close the file without writing to it."""
        self._lock = threading.Lock()
        self._lines = []
        self._file.detach()

    def close(self) -> None:
        """Flush and close (never raises: records that could not be written are named in
        :attr:`error`); later writes are ignored silently (the run ended)."""
        self.flush()
        with self._lock:
            self._file.close()


def write_json_atomic(path: Path, obj: Any, directory: RunDirectory | None = None) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (temp file + rename in the same folder; in
    ``directory``, by name, when given: never through a symbolic link put in its place); the
    file gets mode 0666 less the umask, as the records do. NaN / inf are refused (ValueError)."""
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False, default=str) + "\n"
    dir_fd = directory.fd() if directory is not None else None
    where = path.name if dir_fd is not None else path
    tmp = f".{path.name}.{secrets.token_hex(4)}.tmp"
    tmp_path = tmp if dir_fd is not None else path.parent / tmp
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | NOFOLLOW
    fd = os.open(tmp_path, flags, 0o666, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp_path, where, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_path, dir_fd=dir_fd)
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


#: Largest JSON file (meta.json, summary.json) the readers read, bytes.
MAX_JSON_BYTES = 64 * 2**20
#: Longest line of a records file the readers parse, bytes; a longer line is a bad line, skipped
#: without being held in memory (a sparse or corrupted file).
MAX_LINE_BYTES = 2**20
#: Bad lines of one records file kept as messages (the others are counted only).
MAX_BAD_LINES_KEPT = 100


def open_regular(path: Path) -> tuple[int, int]:
    """(fd, size in bytes) of the regular file ``path``, opened for reading; a
    :class:`RecordError` for anything else: a symbolic link (not followed), a FIFO (opened
    without blocking, so it never hangs the reader), a device."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_NOFOLLOW", 0))
    except OSError as err:
        if os.path.islink(path):
            raise RecordError(
                f"{path} is a symbolic link; perfkit reads regular files only"
            ) from None
        raise err
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise RecordError(f"{path} is not a regular file")
    return fd, info.st_size


def read_bytes(path: Path, limit: int = MAX_JSON_BYTES) -> bytes:
    """The bytes of the regular file ``path`` (see :func:`open_regular`), at most ``limit``
    (a :class:`RecordError` for a larger file)."""
    fd, size = open_regular(path)
    with os.fdopen(fd, "rb") as handle:
        if size > limit:
            raise RecordError(f"{path} holds {size} bytes, more than perfkit reads ({limit})")
        data = handle.read(limit + 1)
    if len(data) > limit:  # grew since the fstat
        raise RecordError(f"{path} holds more than {limit} bytes, more than perfkit reads")
    return data


def read_json(path: Path) -> Any:
    """Read a JSON file (at most :data:`MAX_JSON_BYTES`); a clear :class:`RecordError` naming
    it if it is not JSON."""
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


def _request_problem(line: Any) -> str | None:
    """Why ``line`` is not a requests.jsonl line, None when it is one."""
    if not isinstance(line, dict) or not set(REQUEST_FIELDS) - {"phase", "error"} <= line.keys():
        return f"not a perfkit request (expected the fields {REQUEST_FIELDS})"
    if line["status"] not in ("ok", "failed"):
        return f"status is {line['status']!r:.40}, not 'ok' or 'failed'"
    times = [line["send_t"], line["end_t"], line["first_token_t"], *(line["token_t"] or [])]
    counts = [line["output_tokens"], line["prompt_tokens"], line["request"], line["rank"]]
    if not isinstance(line["token_t"], list) or any(
        isinstance(v, bool) or not isinstance(v, (int, float)) for v in times if v is not None
    ):
        return "a time is not a number"
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in counts if v is not None):
        return "a count is not a non-negative int"
    if line["send_t"] is None or line["end_t"] is None or line["output_tokens"] is None:
        return "send_t, end_t and output_tokens must not be null"
    return None


def read_requests(path: Path, bad_lines: list[str] | None = None) -> Iterator[Record]:
    """Yield the lines of one ``requests.jsonl`` (:data:`REQUEST_FIELDS`), read and checked
    as :func:`read_records` reads records."""
    return read_records(path, bad_lines, check=_request_problem, fields=REQUEST_FIELDS)


def read_records(
    path: Path,
    bad_lines: list[str] | None = None,
    *,
    check: Callable[[Any], str | None] = _record_problem,
    fields: tuple[str, ...] = RECORD_FIELDS,
) -> Iterator[Record]:
    """Yield the records of one ``records.jsonl``, every field of :data:`RECORD_FIELDS` present.

    A truncated last line (a process killed mid-write) is skipped silently; any other line that
    is not a perfkit record is skipped, appended to ``bad_lines`` ("<file>:<line>: why"; the
    first :data:`MAX_BAD_LINES_KEPT`) and counted in one warning (logger "perfkit"); a file with
    no record but bad lines raises :class:`RecordError` naming the file and line. The file is
    read a line at a time: memory is bounded by :data:`MAX_LINE_BYTES` (a longer line is a bad
    line) whatever the file's size. Lines are parsed with ``json.loads`` only: nothing in a
    file is evaluated or unpickled.
    """
    bad: list[str] = []
    bad_count = good = 0
    for number, raw, last in _lines(path):
        if raw is not None and not raw.strip():
            continue
        try:
            if raw is None:
                raise ValueError(f"longer than {MAX_LINE_BYTES} bytes")
            record = _loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            if last:
                break  # the last write of a killed process
            problem = f"{path}:{number} is not a JSON record: {err}"
        else:
            why = check(record)
            if why is None:
                for field in fields:
                    record.setdefault(field, None)
                good += 1
                yield record
                continue
            problem = f"{path}:{number} is not a perfkit record: {why}"
        bad_count += 1
        if len(bad) < MAX_BAD_LINES_KEPT:
            bad.append(problem)
    if bad and not good:
        raise RecordError(bad[0])
    if bad:
        logger.warning("skipped %d bad line(s) of %s; the first: %s", bad_count, path, bad[0])
        if bad_lines is not None:
            bad_lines.extend(bad)


def _lines(path: Path) -> Iterator[tuple[int, bytes | None, bool]]:
    """(line number, the line - None when longer than :data:`MAX_LINE_BYTES` -, whether it
    is the part after the file's last newline) of the regular file ``path``."""
    fd, _size = open_regular(path)
    with os.fdopen(fd, "rb") as handle:
        number = 0
        while chunk := handle.readline(MAX_LINE_BYTES + 1):
            number += 1
            if len(chunk) <= MAX_LINE_BYTES or chunk.endswith(b"\n"):
                yield number, chunk, not chunk.endswith(b"\n")
                continue
            while chunk and not chunk.endswith(b"\n"):  # too long: skip to its end
                chunk = handle.readline(MAX_LINE_BYTES)
            yield number, None, not chunk
