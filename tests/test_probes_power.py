"""perfkit.probes.power: trapezoid energy, counters first, per-phase power and temperature,
against hand-worked figures (arithmetic in the comments)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perfkit.probes import DeviceSample
from perfkit.probes.power import DevicePower, integrate_power_j, phase_power

NAN = math.nan


def npu(power: float, temp: float = NAN, device: str = "npu-smi:0.0") -> DeviceSample:
    return DeviceSample(probe="npu-smi", device=device, power_w=power, temperature_c=temp)


def test_trapezoid_by_hand() -> None:
    # 0-1 s: (100 + 200) / 2 * 1 = 150 J; 1-3 s: (200 + 100) / 2 * 2 = 300 J; total 450 J
    assert integrate_power_j([0.0, 1.0, 3.0], [100.0, 200.0, 100.0]) == pytest.approx(450.0)


def test_na_readings_skip_their_intervals() -> None:
    # 0-1 s: 150 J; 1-2 and 2-3 s touch the NaN and are skipped; 3-4 s: (50 + 150) / 2 = 100 J
    times, power = [0.0, 1.0, 2.0, 3.0, 4.0], [100.0, 200.0, NAN, 50.0, 150.0]
    assert integrate_power_j(times, power) == pytest.approx(250.0)


def test_too_few_readings_give_none_and_bad_input_is_named() -> None:
    assert integrate_power_j([0.0], [100.0]) is None
    assert integrate_power_j([0.0, 1.0], [NAN, 100.0]) is None
    with pytest.raises(ValueError, match="`times_s` and `power_w`"):
        integrate_power_j([0.0, 1.0], [1.0])
    with pytest.raises(ValueError, match="time order"):
        integrate_power_j([1.0, 0.0], [1.0, 1.0])


@given(
    st.floats(0, 1000, allow_nan=False),
    st.lists(st.floats(0.001, 10, allow_nan=False), min_size=1, max_size=20),
)
def test_constant_power_is_power_times_duration(power: float, steps: list[float]) -> None:
    times = [0.0]
    for step in steps:
        times.append(times[-1] + step)
    energy = integrate_power_j(times, [power] * len(times))
    assert energy == pytest.approx(power * times[-1], rel=1e-9, abs=1e-9)


def test_phase_power_per_device_integrated() -> None:
    samples = [
        (0.5, npu(999.0, 99.0)),  # before the phase: ignored
        (1.0, npu(100.0, 40.0)),
        (1.0, npu(NAN, 50.0, device="npu-smi:1.0")),  # Power NA (310P): no power, no energy
        (2.0, npu(300.0, 44.0)),
        (2.0, npu(NAN, 52.0, device="npu-smi:1.0")),
        (3.0, npu(200.0, NAN)),  # temperature NA: not in the temperature figures
        (3.5, npu(999.0, 99.0)),  # after the phase
    ]
    first, second = phase_power(samples, 1.0, 3.0)
    # power 100, 300, 200: mean 200, max 300; temperature 40, 44: mean 42, max 44;
    # energy (100 + 300) / 2 * 1 + (300 + 200) / 2 * 1 = 200 + 250 = 450 J
    assert first == DevicePower("npu-smi:0.0", 3, 200.0, 300.0, 42.0, 44.0, 450.0, "integrated")
    assert second == DevicePower("npu-smi:1.0", 2, None, None, 51.0, 52.0, None, None)


def test_energy_counter_wins_over_integration() -> None:
    samples = [
        (0.0, DeviceSample("nvml", "nvml:0", power_w=100.0, energy_j=5000.0)),
        (1.0, DeviceSample("nvml", "nvml:0", power_w=100.0, energy_j=5120.0)),
        (2.0, DeviceSample("nvml", "nvml:0", power_w=100.0, energy_j=5230.0)),
    ]
    (only,) = phase_power(samples, 0.0, 2.0)
    # counter: 5230 - 5000 = 230 J (integration would give 200 J)
    assert (only.energy_j, only.energy_source) == (230.0, "counter")
