"""The background sampler, the memory tracker, DeviceSample and the probe registry."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator

import pytest

from perfkit.probes import (
    DeviceSample,
    MemoryTracker,
    Probe,
    Sampler,
    format_mem,
    merge_memory_summaries,
    register_probe,
    registered_probes,
    resolve_probes,
)

GIB = 2.0**30


class FakeProbe(Probe):
    """Reports one device whose memory_used_bytes counts the calls; ``fail_on`` makes that call
    raise, ``hang_on`` makes that call block until ``release`` is set."""

    kind = "device"

    def __init__(self, name: str, fail_on: int | None = None, hang_on: int | None = None) -> None:
        self.name = name  # type: ignore[misc]
        self.fail_on, self.hang_on = fail_on, hang_on
        self.calls = 0
        self.opened = self.closed = False
        self.release = threading.Event()

    def is_available(self) -> bool:
        return True

    def open(self) -> None:
        self.opened = True

    def sample(self) -> list[DeviceSample]:
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("boom")
        if self.calls == self.hang_on:
            self.release.wait(60)
        return [DeviceSample(self.name, f"{self.name}:0", memory_used_bytes=float(self.calls))]

    def close(self) -> None:
        self.closed = True


class Recorder:
    def __init__(self) -> None:
        self.samples: list[DeviceSample] = []
        self.errors: list[tuple[str, str]] = []

    def on_sample(self, sample: DeviceSample) -> None:
        self.samples.append(sample)

    def on_error(self, probe: str, message: str) -> None:
        self.errors.append((probe, message))

    def from_probe(self, name: str) -> list[DeviceSample]:
        return [s for s in self.samples if s.probe == name]


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


def sampler(probes: list[Probe], rec: Recorder, interval_s: float = 60.0) -> Sampler:
    return Sampler(probes, interval_s, rec.on_sample, rec.on_error)


def test_one_sample_at_start_and_one_at_stop(rec: Recorder) -> None:
    probe = FakeProbe("ok")
    with sampler([probe], rec):
        pass  # the 60 s interval never elapses
    assert [s.memory_used_bytes for s in rec.samples] == [1.0, 2.0]
    assert probe.opened and probe.closed and rec.errors == []


def test_samples_every_interval(rec: Recorder) -> None:
    probe = FakeProbe("ok")
    s = sampler([probe], rec, interval_s=0.01).start()
    deadline = time.monotonic() + 10
    while len(rec.samples) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    s.stop()
    assert len(rec.samples) >= 5


def test_failing_probe_is_reported_once_closed_and_the_others_go_on(rec: Recorder) -> None:
    good, bad = FakeProbe("good"), FakeProbe("bad", fail_on=1)
    with sampler([bad, good], rec):
        pass
    assert rec.errors == [("bad", "sample() failed: RuntimeError: boom; probe disabled")]
    assert bad.closed and bad.calls == 1  # not asked again at stop
    assert len(rec.from_probe("good")) == 2


def test_failing_open_is_reported(rec: Recorder) -> None:
    class NoDriver(FakeProbe):
        def open(self) -> None:
            raise OSError("driver not loaded")

    broken = NoDriver("nodriver")
    with sampler([broken, FakeProbe("ok")], rec):
        pass
    assert rec.errors == [("nodriver", "open() failed: OSError: driver not loaded; probe disabled")]
    assert broken.calls == 0 and len(rec.from_probe("ok")) == 2


def test_hanging_probe_does_not_hang_stop(rec: Recorder) -> None:
    ok, stuck = FakeProbe("ok"), FakeProbe("stuck", hang_on=1)
    s = sampler([ok, stuck], rec).start()
    try:
        while stuck.calls == 0:  # wait until the thread is inside the hanging call
            time.sleep(0.005)
        start = time.monotonic()
        s.stop(timeout_s=0.5)
        assert time.monotonic() - start < 5.0  # generous bound: stop waited ~0.5 s
        assert rec.errors == [("stuck", "sample() did not return within 0.5 s; probe abandoned")]
        assert ok.closed and not stuck.closed
        seen = len(rec.samples)
    finally:
        stuck.release.set()
    time.sleep(0.05)  # the abandoned thread wakes up and must not call back
    assert len(rec.samples) == seen and len(rec.errors) == 1


def test_callback_failure_is_reported_and_ends_sampling() -> None:
    errors: list[tuple[str, str]] = []
    probe = FakeProbe("ok")

    def bad_callback(sample: DeviceSample) -> None:
        raise KeyError("records closed")

    with Sampler([probe], 60.0, bad_callback, lambda p, m: errors.append((p, m))):
        pass
    assert len(errors) == 1 and errors[0][0] == "sampler" and "records closed" in errors[0][1]
    assert probe.closed


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf])
def test_interval_must_be_positive_and_finite(bad: float, rec: Recorder) -> None:
    with pytest.raises(ValueError, match="sample_interval"):
        sampler([], rec, interval_s=bad)


@pytest.mark.parametrize("bad", ["0.5", None, True])
def test_interval_must_be_a_number(bad: object, rec: Recorder) -> None:
    with pytest.raises(TypeError, match="sample_interval"):
        Sampler([], bad, rec.on_sample, rec.on_error)  # type: ignore[arg-type]


def test_stop_before_start_and_twice(rec: Recorder) -> None:
    s = sampler([FakeProbe("ok")], rec)
    s.stop()
    s.start()
    s.stop()
    s.stop()
    with pytest.raises(RuntimeError, match="twice"):
        s.start()


# --- DeviceSample ------------------------------------------------------------------------------


def test_metrics_list_only_reported_fields_with_units() -> None:
    s = DeviceSample("nvml", "nvml:0", "H100", memory_used_bytes=1.0, power_w=70.0, energy_j=5.0)
    assert s.metrics() == [
        ("memory_used_bytes", 1.0, "B"),
        ("power_w", 70.0, "W"),
        ("energy_j", 5.0, "J"),
    ]
    host = DeviceSample("host", "host", process_rss_bytes=2.0, cpu_utilization_pct=50.0)
    assert host.metrics() == [("process_rss_bytes", 2.0, "B"), ("cpu_utilization_pct", 50.0, "%")]
    assert DeviceSample("x", "x:0", temperature_c=40.0).metrics() == [("temperature_c", 40.0, "C")]


# --- MemoryTracker -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("used_gib", "total_gib", "text"),
    # the seeds' mem column: RetinaNet R300 18.7/32.0; ResNet-50 inference 19.7/40.0,
    # 28.86/40.0, 9.42/40.0, 8.02/32.0
    [(18.7, 32, "18.7/32.0"), (19.7, 40, "19.7/40.0"), (28.86, 40, "28.86/40.0"),
     (9.42, 40, "9.42/40.0"), (8.02, 32, "8.02/32.0")],
)  # fmt: skip
def test_mem_written_as_the_seeds_write_it(used_gib: float, total_gib: float, text: str) -> None:
    assert format_mem(used_gib * GIB, total_gib * GIB) == text


def gpu(device: str, used_gib: float, total_gib: float = 32.0, **kw: float) -> DeviceSample:
    return DeviceSample("nvml", device, memory_used_bytes=used_gib * GIB,
                        memory_total_bytes=total_gib * GIB, **kw)  # fmt: skip


def test_tracker_peak_over_time_and_devices() -> None:
    t = MemoryTracker()
    assert t.summary() == {}  # no data: no keys, not zeros
    for sample in [
        gpu("nvml:0", 10.0),
        gpu("nvml:1", 12.5),
        gpu("nvml:0", 18.7),
        gpu("nvml:0", 3.0),
    ]:
        t.update(sample)
    # system RAM from the host probe is not device memory
    t.update(DeviceSample("host", "host", memory_used_bytes=500 * GIB, memory_total_bytes=1e15))
    assert t.summary() == {
        "mem": "18.7/32.0",
        "mem_source": "device memory used (all processes) / capacity",
        "mem_per_device": {"nvml:0": "18.7/32.0", "nvml:1": "12.5/32.0"},
        "mem_peak_bytes": 18.7 * GIB,
        "mem_total_bytes": 32 * GIB,
    }


def test_tracker_allocator_peaks() -> None:
    t = MemoryTracker()
    t.update(DeviceSample("torch", "cuda:0", allocated_bytes=5.0, allocated_peak_bytes=9.0,
                          reserved_bytes=20.0, reserved_peak_bytes=16.0))  # fmt: skip
    t.update(DeviceSample("torch", "cuda:1", allocated_bytes=1.0, allocated_peak_bytes=11.0))
    assert t.summary() == {
        "allocator_peak_allocated_bytes": 11.0,
        "allocator_peak_reserved_bytes": 20.0,
    }


def test_tracker_energy_window() -> None:
    t = MemoryTracker()
    assert t.energy_delta_j() is None  # no mark yet
    t.mark()  # before any reading: each device counts from its first reading after the mark
    t.update(gpu("nvml:0", 1.0, energy_j=1000.0))
    t.update(gpu("nvml:1", 1.0, energy_j=50.0))
    t.update(gpu("nvml:0", 1.0, energy_j=1150.0))
    t.update(gpu("nvml:1", 1.0, energy_j=80.0))
    assert t.energy_delta_j() == pytest.approx(150.0 + 30.0)
    t.mark()
    assert t.energy_delta_j() == 0.0
    t.update(gpu("nvml:0", 1.0, energy_j=1160.0))
    assert t.energy_delta_j() == pytest.approx(10.0)


def test_tracker_energy_none_without_counter() -> None:
    t = MemoryTracker()
    t.mark()
    t.update(gpu("nvml:0", 1.0))
    assert t.energy_delta_j() is None


def test_merge_summaries_over_ranks() -> None:
    node0, node1 = MemoryTracker(), MemoryTracker()
    node0.update(gpu("nvml:0", 10.0))
    node1.update(gpu("nvml:0", 20.0, total_gib=40.0))
    cpu_rank = {"allocator_peak_allocated_bytes": 3.0}
    merged = merge_memory_summaries([node0.summary(), cpu_rank, node1.summary()])
    assert merged == {
        "mem": "20.0/40.0",
        "mem_source": "device memory used (all processes) / capacity",
        "mem_per_device": {"nvml:0@rank0": "10.0/32.0", "nvml:0@rank2": "20.0/40.0"},
        "mem_peak_bytes": 20 * GIB,
        "mem_total_bytes": 40 * GIB,
        "allocator_peak_allocated_bytes": 3.0,
    }
    assert merge_memory_summaries([node0.summary()]) == node0.summary()


# --- registry ----------------------------------------------------------------------------------


@pytest.fixture
def temp_registration() -> Iterator[None]:
    from perfkit.probes import _base

    saved = dict(_base._REGISTRY)
    yield
    _base._REGISTRY.clear()
    _base._REGISTRY.update(saved)


def test_register_refuses_duplicates(temp_registration: None) -> None:
    class Host2(Probe):
        name = "host"

    with pytest.raises(ValueError, match="duplicate probe name 'host'"):
        register_probe(Host2)


def test_resolve_none_and_instances() -> None:
    assert resolve_probes(None) == resolve_probes("none") == resolve_probes([]) == []
    fake = FakeProbe("mine")
    assert resolve_probes([fake]) == [fake]


def test_resolve_unknown_name_lists_known() -> None:
    with pytest.raises(ValueError, match=r"probes: unknown probe 'nvm'; known probes: ") as err:
        resolve_probes(["nvm"])
    assert "nvml" in str(err.value) and "nvidia-smi" in str(err.value) and "host" in str(err.value)


def test_resolve_duplicate() -> None:
    with pytest.raises(ValueError, match=r"probes: probe\(s\) host given more than once"):
        resolve_probes(["host", "host"])


def test_auto_on_this_machine_is_host_only_without_gpu() -> None:
    names = [p.name for p in resolve_probes("auto")]
    assert names[-1] == "host"
    assert "nvml" in registered_probes() and "cnmon" in registered_probes()
