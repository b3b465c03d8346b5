"""The probe sampler inside a Run: records, mem, energy per sample, failing probes."""

from __future__ import annotations

import time

import numpy as np
import psutil
import pytest

import perfkit
from perfkit.probes import DeviceSample, MemoryTracker, Probe
from perfkit.records import read_records

GIB = 2**30


class CardProbe(Probe):
    """A stand-in accelerator whose readings the test sets."""

    name = "test-card"
    kind = "device"

    def __init__(self) -> None:
        self.used = 10 * GIB
        self.energy = 1000.0

    def is_available(self) -> bool:
        return True

    def sample(self) -> list[DeviceSample]:
        return [
            DeviceSample(
                "test-card",
                "card:0",
                "Test Card",
                memory_used_bytes=self.used,
                memory_total_bytes=32 * GIB,
                energy_j=self.energy,
                power_w=250.0,
            )
        ]


class BrokenProbe(Probe):
    name = "broken"
    kind = "device"

    def is_available(self) -> bool:
        return True

    def sample(self) -> list[DeviceSample]:
        raise OSError("device lost")


def wait_for_samples() -> None:
    time.sleep(0.1)  # ten sampling intervals of 0.01 s


def test_run_records_samples_and_reports_mem_and_energy(tmp_path):
    card = CardProbe()
    with perfkit.Run(
        "probed", out_dir=tmp_path, device="cpu", probes=[card], sample_interval_s=0.01
    ) as run:
        wait_for_samples()
        with run.phase("train") as train:
            for _ in train.iterate([np.zeros((5, 1))] * 4):
                card.used = 18.7 * GIB  # the peak
            card.energy = 1600.0
            wait_for_samples()
        card.used = 12 * GIB
        wait_for_samples()
    s = run.summary()
    # peak 18.7 GiB used of 32 GiB, as the seeds write it
    assert s["mem"] == "18.7/32.0"
    assert s["mem_per_device"] == {"card:0": "18.7/32.0"}
    # 1600 J - 1000 J over the phase's 4 x 5 = 20 samples = 30 J/sample
    assert s["train_energy_j"] == pytest.approx(600.0)
    assert s["train_energy_per_sample_j"] == pytest.approx(30.0)
    assert run.run_dir is not None
    records = list(read_records(run.run_dir / "records.jsonl"))
    power = [r for r in records if r["name"] == "power_w"]
    assert power and {(r["device"], r["unit"], r["value"]) for r in power} == {
        ("card:0", "W", 250.0)
    }
    assert any(r["phase"] == "train" for r in power)  # samples carry the phase they fall in


def test_a_failing_probe_is_recorded_once_and_the_run_goes_on(tmp_path):
    with perfkit.Run(
        "broken",
        out_dir=tmp_path,
        device="cpu",
        probes=[BrokenProbe(), CardProbe()],
        sample_interval_s=0.01,
    ) as run:
        with run.phase("infer") as infer:
            for _ in infer.iterate([np.zeros((2, 1))] * 3):
                wait_for_samples()
    s = run.summary()
    assert s["status"] == "ok" and s["infer_samples"] == 6
    assert len(s["probe_errors"]) == 1 and "broken" in s["probe_errors"][0]
    assert "device lost" in s["probe_errors"][0]
    assert s["mem"] == "10.0/32.0"  # the healthy probe kept sampling
    assert run.run_dir is not None
    errors = [r for r in read_records(run.run_dir / "records.jsonl") if r["name"] == "probe_error"]
    assert len(errors) == 1 and errors[0]["value"] is None and "device lost" in errors[0]["note"]


def test_auto_probes_sample_the_host_here(tmp_path):
    with perfkit.Run("auto", out_dir=tmp_path, device="cpu", sample_interval_s=0.02) as run:
        wait_for_samples()
    assert run.run_dir is not None
    rss = [
        r for r in read_records(run.run_dir / "records.jsonl") if r["name"] == "process_rss_bytes"
    ]
    assert rss and all(r["device"] == "host" and r["unit"] == "B" and r["value"] > 1e6 for r in rss)
    # The run computes on the CPU, so its memory is the host's RAM: mem is the highest figure
    # of this process tree, every page once, the host probe recorded (not the system's RAM
    # used, which other jobs share), over the machine's installed RAM.
    records = list(read_records(run.run_dir / "records.jsonl"))
    used = max(r["value"] for r in records if r["name"] == "process_tree_unique_bytes")
    system = max(r["value"] for r in records if r["name"] == "memory_used_bytes")
    gib = 2**30
    installed = psutil.virtual_memory().total
    summary = run.summary()
    assert summary["mem"] == f"{round(used / gib, 2)}/{round(installed / gib, 2)}"
    assert summary["mem_per_device"] == {"host": summary["mem"]}
    assert summary["mem_source"].startswith("RSS of this process + USS of its descendants")
    tree_rss = max(r["value"] for r in records if r["name"] == "process_tree_rss_bytes")
    assert used <= tree_rss  # shared pages once, against once per process
    assert system > 0


def test_host_ram_is_not_device_memory_on_an_accelerator_run():
    tracker = MemoryTracker()  # what a run on a GPU builds
    tracker.update(DeviceSample("host", "host", memory_used_bytes=8e9, memory_total_bytes=16e9))
    assert "mem" not in tracker.summary()  # absent, not zero and not the host's RAM


def test_bad_probe_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="probes: unknown probe 'nvidia'"):
        perfkit.Run("r", out_dir=tmp_path, device="cpu", probes=["nvidia"]).start()
    with pytest.raises(ValueError, match="sample_interval"):
        perfkit.Run("r", out_dir=tmp_path, device="cpu", sample_interval_s=-1).start()
    assert perfkit.run.active_run() is None
