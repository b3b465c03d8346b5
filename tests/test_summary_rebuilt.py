"""The summary rebuilt from a run's records equals the live summary, key for key.

Both come from perfkit.summary.build_summary; these runs check that the records carry every
figure the live summary uses (phase figures and kinds, rank 0's step times, probe samples,
energy, logged values, FLOPs settings, probe errors). Two-rank runs: tests/test_distributed.py.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import perfkit
from perfkit.probes import DeviceSample
from perfkit.records import read_records
from tests.conftest import FakeClock, assert_rebuilt_equals_live, timed_batches
from tests.test_run_metrics import run_epochs
from tests.test_run_probes import BrokenProbe, CardProbe


def batch(n: int) -> np.ndarray:
    return np.zeros((n, 3))


def test_train_and_val(tmp_path, clock: FakeClock) -> None:
    with perfkit.Run("trainval", out_dir=tmp_path, clock=clock, device="cpu", probes=None) as run:
        run_epochs(run, clock)  # 2 epochs of train + val
        run.log(acc=0.75, loss=1.25)
    live = assert_rebuilt_equals_live(run.run_dir)
    assert live["p_whole"] > 0 and "train_step_time_p99_s" in live and live["acc"] == 0.75


def test_warmup_steps_of_train_and_val(tmp_path, clock: FakeClock) -> None:
    # Every train epoch's first 2 steps and the val pass's first are warm-up: the records must
    # carry them (phase_warmup_*), and the rebuilt percentiles must leave those steps out.
    with perfkit.Run(
        "warmup",
        out_dir=tmp_path,
        clock=clock,
        device="cpu",
        probes=None,
        warmup_steps={"train": 2, "val": 1},
    ) as run:
        for _epoch in range(2):
            with run.phase("train") as train:
                for i, _ in enumerate(train.iterate(timed_batches(clock, [batch(8)] * 5, 0.5))):
                    clock.advance(9.0 if i == 0 else 1.5)
            with run.phase("val") as val:
                for _ in val.iterate(timed_batches(clock, [batch(4)] * 3, io_s=0.25)):
                    clock.advance(0.3)
    live = assert_rebuilt_equals_live(run.run_dir)
    assert live["train_warmup_steps"] == 4 and live["val_warmup_steps"] == 2
    # steady train steps all take 2.0 s: 6 of them, 48 samples in 12 s
    assert live["train_step_time_p99_s"] == pytest.approx(2.0)
    assert live["p_train"] == pytest.approx(48 / 12.0)


def test_inference_with_compute_windows_and_mfu(tmp_path, clock: FakeClock) -> None:
    with perfkit.Run(
        "infer",
        out_dir=tmp_path,
        clock=clock,
        device="cpu",
        probes=None,
        flops_per_sample=4e9,
        peak_flops=1e12,
    ) as run:
        with run.phase("infer") as infer:
            for n in infer.iterate(timed_batches(clock, [batch(2), batch(3)] * 5, io_s=0.1)):
                clock.advance(0.05)
                with infer.compute():
                    clock.advance(0.2 + 0.01 * len(n))
    live = assert_rebuilt_equals_live(run.run_dir)
    assert live["MFU"] > 0 and "p_infer_core" in live


def test_named_phases_of_every_kind_flops_set_late_and_a_left_loop(tmp_path, clock) -> None:
    with perfkit.Run("multi", out_dir=tmp_path, clock=clock, device="cpu", probes=None) as run:
        run.set_flops(1e9, dtype="fp32", peak_flops=2e12, mfu_convention="flagperf")
        for epoch in range(3):
            with run.phase("train", name=f"epoch{epoch}") as train:
                for i, _ in enumerate(
                    train.iterate(timed_batches(clock, [batch(4)] * 6, io_s=0.05))
                ):
                    clock.advance(0.1 * (i + 1))
                    if epoch == 1 and i == 3:
                        break
            with run.phase("val", name="eval") as val:
                for _ in val.iterate(timed_batches(clock, [batch(2)] * 2, io_s=0.2)):
                    clock.advance(0.1)
            run.log(step=None, acc=0.5 + epoch / 10)
        clock.advance(2.0)
        with run.phase("infer", name="export-check") as infer:
            for _ in infer.iterate([batch(1)] * 3):
                clock.advance(0.01)
    live = assert_rebuilt_equals_live(run.run_dir)
    assert [p["index"] for p in live["phases"]] == [0, 0, 1, 1, 2, 2, 0]
    assert live["acc"] == pytest.approx(0.7)


def test_probes_on_a_cpu_run_mem_energy_and_a_probe_error(tmp_path) -> None:
    card = CardProbe()
    with perfkit.Run(
        "probed",
        out_dir=tmp_path,
        device="cpu",
        probes=[card, BrokenProbe(), "host"],
        sample_interval_s=0.01,
    ) as run:
        time.sleep(0.05)
        with run.phase("train") as train:
            for _ in train.iterate([batch(5)] * 4):
                time.sleep(0.01)
                card.used += 2**30
            card.energy += 500.0
            time.sleep(0.05)
        with run.phase("val") as val:
            for _ in val.iterate([batch(5)] * 2):
                time.sleep(0.01)
    live = assert_rebuilt_equals_live(run.run_dir)
    # on the CPU the device memory is the host's RAM as well as the card's
    assert live["mem"] and "host" in live["mem_per_device"] and "card:0" in live["mem_per_device"]
    assert live["train_energy_j"] > 0 and live["probe_errors"]


class HotCardProbe(CardProbe):
    """A card whose tool reports power and temperature but has no energy counter."""

    def __init__(self) -> None:
        super().__init__()
        self.watts = 100.0

    def sample(self) -> list[DeviceSample]:
        self.watts += 10.0  # rising with every reading: average < maximum
        return [
            DeviceSample("test-card", "card:0", "Test Card", power_w=self.watts, temperature_c=40.0)
        ]


def test_phase_power_and_temperature_per_device_with_integrated_energy(tmp_path) -> None:
    with perfkit.Run(
        "hot", out_dir=tmp_path, device="cpu", probes=[HotCardProbe()], sample_interval_s=0.01
    ) as run:
        time.sleep(0.05)
        with run.phase("train") as train:
            for _ in train.iterate([batch(5)] * 4):
                time.sleep(0.02)
    live = assert_rebuilt_equals_live(run.run_dir)
    (phase,) = live["phases"]
    (card,) = phase["devices"]
    # Independent reference: the power samples recorded inside the phase, integrated with
    # numpy's trapezoid rule.
    power = [
        (r["t"], r["value"])
        for r in read_records(run.run_dir / "records.jsonl")
        if r["name"] == "power_w" and phase["start_t"] <= r["t"] <= phase["end_t"]
    ]
    times, watts = np.array(power).T
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2: trapz
    assert card["device"] == "card:0" and card["samples"] == len(power) >= 2
    assert card["energy_source"] == "integrated"
    assert card["energy_j"] == pytest.approx(float(trapezoid(watts, times)))
    assert card["avg_power_w"] == pytest.approx(watts.mean())
    assert card["max_power_w"] == watts.max() > card["avg_power_w"]
    assert card["avg_temperature_c"] == card["max_temperature_c"] == 40.0
