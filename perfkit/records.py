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

Every event has the fields of :data:`RECORD_FIELDS`; ``docs/record.schema.json`` is the JSON
Schema of one line. Values are in base units only (seconds, bytes, FLOPs, samples, joules);
``unit`` names the unit. ``value`` is a float or ``null`` (a value the device could not report,
or a text-only event such as a probe error, whose text is in ``note``). ``t`` is seconds since
the run started on the run's host clock. The names and units are in :data:`RECORD_NAMES`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

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
#: the others when it ends (t = its end); phase_energy only when a probe measured energy.
PHASE_NAMES = (
    "phase_start",
    "phase_wall",
    "phase_io",
    "phase_compute",
    "phase_samples",
    "phase_steps",
    "phase_energy",
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
