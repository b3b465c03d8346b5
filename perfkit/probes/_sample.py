"""One reading of one device (or of the host) by one probe, and the probe error types."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

NAN = math.nan

# Unit of a numeric field, from the suffix of its name.
_UNITS = (("_bytes", "B"), ("_pct", "%"), ("_w", "W"), ("_c", "C"), ("_j", "J"))


def _unit(field_name: str) -> str:
    for suffix, unit in _UNITS:
        if field_name.endswith(suffix):
            return unit
    raise AssertionError(f"DeviceSample field {field_name!r} has no unit suffix")


@dataclass(frozen=True)
class DeviceSample:
    """What one probe read from one device at one moment.

    ``device`` is a stable id: ``"nvml:0"`` (the first CUDA-visible GPU), ``"cuda:0"`` (torch
    allocator), ``"host"``, or ``"<tool>:<index>"`` for a vendor tool. Every number carries its
    unit in its name and is NaN when the device or tool did not report it. Memory is in bytes
    (``memory_*``: device memory as the driver sees it, all processes; for the host probe,
    system RAM), utilisation in percent, power in watts, temperature in degrees Celsius and
    ``energy_j`` is a cumulative counter in joules (NVML's total energy since driver load).
    ``allocated_*`` / ``reserved_*`` are this process's torch caching allocator figures, and
    ``process_rss_bytes`` (this process), ``process_tree_unique_bytes`` (it and its
    descendants, every page once) / ``process_tree_rss_bytes`` (their resident sets summed),
    other ranks left out, and
    ``cpu_utilization_pct`` come from the host probe (CPU: whole machine, percent of all
    cores).
    """

    probe: str
    device: str
    device_name: str = ""
    memory_used_bytes: float = NAN
    memory_total_bytes: float = NAN
    utilization_pct: float = NAN
    power_w: float = NAN
    temperature_c: float = NAN
    energy_j: float = NAN
    allocated_bytes: float = NAN
    allocated_peak_bytes: float = NAN
    reserved_bytes: float = NAN
    reserved_peak_bytes: float = NAN
    process_rss_bytes: float = NAN
    process_tree_rss_bytes: float = NAN
    process_tree_unique_bytes: float = NAN
    cpu_utilization_pct: float = NAN

    def metrics(self) -> list[tuple[str, float, str]]:
        """``(field name, value, unit)`` for every numeric field that is not NaN; units are
        ``"B"``, ``"%"``, ``"W"``, ``"C"`` and ``"J"``."""
        out = []
        for f in _NUMERIC_FIELDS:
            value = getattr(self, f)
            if not math.isnan(value):
                out.append((f, value, _unit(f)))
        return out


_NUMERIC_FIELDS = tuple(f.name for f in dataclasses.fields(DeviceSample) if f.type == "float")


class ProbeError(RuntimeError):
    """A probe could not read its devices (tool missing or failed, library error, timeout)."""


class ProbeParseError(ValueError):
    """A monitoring tool printed something its parser does not know.

    ``line_number`` counts from 1 in the text given to :func:`perfkit.probes.parse`.
    """

    def __init__(self, tool: str, line_number: int, line: str, reason: str) -> None:
        self.tool = tool
        self.line_number = line_number
        self.line = line
        self.reason = reason
        super().__init__(f"{tool} output, line {line_number}: {reason}: {line.strip()!r}")
