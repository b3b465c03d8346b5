"""Power, energy and temperature of one phase per device, from timestamped samples (pure).

Energy comes from the device's cumulative counter where it has one (NVML's ``energy_j``: the
difference between the phase's last and first reading) and is otherwise integrated from sampled
power, marked ``energy_source="integrated"``: the trapezoid rule over the sample timestamps,
``sum((t[i+1] - t[i]) * (p[i] + p[i+1]) / 2)``, skipping intervals with a NaN end (a reading the
tool printed as NA). The trapezoid covers only the time between the first and last sample; with
fewer than two power readings there is no energy (None). FlagPerf reports each phase's average
and maximum power and temperature per card; ``phase_power`` gives those too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from perfkit.probes._sample import DeviceSample

#: A sample with the host-clock time (seconds) it was taken at.
Timed = tuple[float, DeviceSample]
EnergySource = Literal["counter", "integrated"]


@dataclass(frozen=True)
class DevicePower:
    """One device over one phase. Watts, degrees Celsius, joules; None where not sampled."""

    device: str
    samples: int
    avg_power_w: float | None
    max_power_w: float | None
    avg_temperature_c: float | None
    max_temperature_c: float | None
    energy_j: float | None
    energy_source: EnergySource | None


def integrate_power_j(times_s: Sequence[float], power_w: Sequence[float]) -> float | None:
    """Energy in joules by the trapezoid rule over ``(time s, power W)`` readings in time order;
    intervals with a NaN end are skipped; None when no interval has two readings."""
    if len(times_s) != len(power_w):
        raise ValueError(
            f"Expected arguments `times_s` and `power_w` to have the same length but got "
            f"{len(times_s)} and {len(power_w)}"
        )
    total, intervals = 0.0, 0
    for i in range(len(times_s) - 1):
        t0, t1, p0, p1 = times_s[i], times_s[i + 1], power_w[i], power_w[i + 1]
        if t1 < t0:
            raise ValueError(
                f"Expected argument `times_s` to be in time order but got {t0} then {t1}"
            )
        if math.isnan(p0) or math.isnan(p1):
            continue
        total += (t1 - t0) * (p0 + p1) / 2
        intervals += 1
    return total if intervals else None


def _mean_max(values: list[float]) -> tuple[float | None, float | None]:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return None, None
    return math.fsum(finite) / len(finite), max(finite)


def _energy(timed: list[Timed]) -> tuple[float | None, EnergySource | None]:
    counter = [s.energy_j for _, s in timed if not math.isnan(s.energy_j)]
    if len(counter) >= 2:
        return counter[-1] - counter[0], "counter"
    integrated = integrate_power_j([t for t, _ in timed], [s.power_w for _, s in timed])
    return (integrated, "integrated") if integrated is not None else (None, None)


def phase_power(samples: Iterable[Timed], start_s: float, end_s: float) -> list[DevicePower]:
    """Per device (first-seen order), the samples taken in ``[start_s, end_s]``: average and
    maximum power and temperature, and energy (counter, else integrated power)."""
    by_device: dict[str, list[Timed]] = {}
    for t, sample in samples:
        if start_s <= t <= end_s:
            by_device.setdefault(sample.device, []).append((t, sample))
    out = []
    for device, timed in by_device.items():
        timed.sort(key=lambda item: item[0])
        avg_w, max_w = _mean_max([s.power_w for _, s in timed])
        avg_c, max_c = _mean_max([s.temperature_c for _, s in timed])
        energy, source = _energy(timed)
        out.append(DevicePower(device, len(timed), avg_w, max_w, avg_c, max_c, energy, source))
    return out
