"""Per-phase power, temperature and energy of each sampled device, for the phase records.

The run keeps the samples that carry power, temperature or an energy counter (taken in the
sampler thread) and, when a phase ends, :func:`perfkit.probes.power.phase_power` folds the ones
taken inside it. Each device's figures become ``phase_device_*`` records (t = the phase end,
tagged with the phase and the device; the energy record's note says "counter" or
"integrated"), which is also where the rebuilt summary reads them from.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence

from perfkit.probes._sample import DeviceSample
from perfkit.probes.power import DevicePower, EnergySource, Timed, phase_power

#: record name -> (DevicePower field, unit).
DEVICE_RECORDS: dict[str, tuple[str, str]] = {
    "phase_device_samples": ("samples", "samples"),
    "phase_device_power_avg": ("avg_power_w", "W"),
    "phase_device_power_max": ("max_power_w", "W"),
    "phase_device_temperature_avg": ("avg_temperature_c", "C"),
    "phase_device_temperature_max": ("max_temperature_c", "C"),
    "phase_device_energy": ("energy_j", "J"),
}


def _carries_power(sample: DeviceSample) -> bool:
    return not all(math.isnan(v) for v in (sample.power_w, sample.temperature_c, sample.energy_j))


class PowerLog:
    """The power-carrying samples of the phase running now (thread-safe: the sampler adds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samples: list[Timed] = []

    def add(self, t: float, sample: DeviceSample) -> None:
        """Keep ``sample`` taken at ``t`` (s since run start) if it has power, temperature or
        energy."""
        if _carries_power(sample):
            with self._lock:
                self._samples.append((t, sample))

    def phase_end(self, start_t: float, end_t: float, keep: bool = False) -> list[DevicePower]:
        """Each device's figures over ``[start_t, end_t]``; the samples kept so far are dropped,
        unless ``keep`` (the phase ran inside another, which still needs them)."""
        with self._lock:
            samples = self._samples
            if not keep:
                self._samples = []
        return phase_power(samples, start_t, end_t)


def device_records(
    devices: Sequence[DevicePower],
) -> Iterator[tuple[str, float, str, str, EnergySource | None]]:
    """``(name, value, unit, device, note)`` of each device's figures that were measured."""
    for power in devices:
        for name, (field, unit) in DEVICE_RECORDS.items():
            value = getattr(power, field)
            if value is not None:
                note = power.energy_source if field == "energy_j" else None
                yield name, float(value), unit, power.device, note


def from_records(rows: Sequence[dict[str, object]]) -> list[DevicePower]:
    """The DevicePower of each device (first-seen order) from its ``phase_device_*`` records
    (dicts with name, value, device, note): the inverse of :func:`device_records`."""
    fields: dict[str, dict[str, object]] = {}
    for row in rows:
        field, _ = DEVICE_RECORDS[str(row["name"])]
        entry = fields.setdefault(str(row["device"]), {})
        entry[field] = row["value"]
        if field == "energy_j":
            entry["energy_source"] = row["note"]
    return [
        DevicePower(
            device=device,
            samples=int(entry.get("samples", 0)),  # type: ignore[call-overload]
            avg_power_w=_number(entry.get("avg_power_w")),
            max_power_w=_number(entry.get("max_power_w")),
            avg_temperature_c=_number(entry.get("avg_temperature_c")),
            max_temperature_c=_number(entry.get("max_temperature_c")),
            energy_j=_number(entry.get("energy_j")),
            energy_source=entry.get("energy_source"),  # type: ignore[arg-type]
        )
        for device, entry in fields.items()
    ]


def _number(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
