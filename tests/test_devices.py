"""Backends beyond CUDA, through fake backend modules at the seam torch itself offers
(``torch.<device type>`` modules and ``torch.accelerator``): discovery on old and new torch,
timing events, synchronisation, the allocator probe, and CUDA-compatible vendors' names."""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Any

import pytest

from perfkit.devices import auto_device, cuda_vendor, current_accelerator
from perfkit.probes.allocator import TorchAllocatorProbe
from perfkit.timing import EventTimer, device_synchronizer, event_factory


class FakeEvent:
    """A device event whose timestamp is set by the fake backend when recorded (ms)."""

    def __init__(self, backend: FakeBackend, **kwargs: Any) -> None:
        self.backend, self.kwargs, self.time_ms = backend, kwargs, None

    def record(self) -> None:
        self.time_ms = self.backend.now_ms

    def query(self) -> bool:
        return self.backend.synced

    def elapsed_time(self, end: FakeEvent) -> float:
        assert self.time_ms is not None and end.time_ms is not None
        return end.time_ms - self.time_ms


class FakeBackend:
    """What torch_npu / torch_mlu / torch_musa put at torch.npu / torch.mlu / torch.musa."""

    def __init__(self, available: bool = True, with_event: bool = True) -> None:
        self.available, self.now_ms, self.synced, self.syncs = available, 0.0, False, 0
        if with_event:
            self.Event = lambda **kwargs: FakeEvent(self, **kwargs)

    def is_available(self) -> bool:
        return self.available

    def synchronize(self) -> None:
        self.syncs += 1
        self.synced = True

    def device_count(self) -> int:
        return 1

    def memory_stats(self, index: int) -> dict[str, int]:
        keys = ("allocated_bytes", "reserved_bytes")
        return {f"{k}.all.{kind}": 2**20 for k in keys for kind in ("current", "peak")}


def old_torch(**backends: Any) -> SimpleNamespace:
    """A torch before 2.4: no torch.accelerator, no torch.Event."""
    return SimpleNamespace(**backends)


@pytest.mark.parametrize("device_type", ["npu", "mlu", "musa", "xpu"])
def test_old_torch_finds_the_vendor_backend(device_type: str) -> None:
    torch = old_torch(cuda=FakeBackend(available=False), **{device_type: FakeBackend()})
    assert current_accelerator(torch) == device_type


def test_cuda_first_and_none_without_any() -> None:
    assert current_accelerator(old_torch(cuda=FakeBackend(), npu=FakeBackend())) == "cuda"
    assert current_accelerator(old_torch(cuda=FakeBackend(available=False))) is None
    assert current_accelerator(old_torch()) is None


def test_torch_accelerator_names_the_backend_when_present() -> None:
    accelerator = SimpleNamespace(
        is_available=lambda: True, current_accelerator=lambda: SimpleNamespace(type="npu")
    )
    assert current_accelerator(SimpleNamespace(accelerator=accelerator)) == "npu"
    accelerator.is_available = lambda: False
    assert current_accelerator(SimpleNamespace(accelerator=accelerator)) is None


def test_event_from_the_backend_module_then_torch_event() -> None:
    npu = FakeBackend()
    event = event_factory(old_torch(npu=npu), "npu")()
    assert isinstance(event, FakeEvent) and event.kwargs == {"enable_timing": True}
    made: list[dict[str, Any]] = []
    torch = SimpleNamespace(mlu=FakeBackend(with_event=False), Event=lambda **kw: made.append(kw))
    event_factory(torch, "mlu")()
    assert made == [{"device": "mlu", "enable_timing": True}]
    with pytest.raises(RuntimeError, match="no timing event"):
        event_factory(old_torch(musa=FakeBackend(with_event=False)), "musa")


def test_event_timer_on_a_vendor_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    musa = FakeBackend()
    monkeypatch.setitem(sys.modules, "torch", old_torch(musa=musa))
    timer = EventTimer("musa")
    start = timer.mark()
    musa.now_ms = 250.0  # the device ran 250 ms of work between the marks
    end = timer.mark()
    assert not timer.ready(end)  # not reached yet: no blocking, no sync per mark
    assert musa.syncs == 0
    timer.synchronize()
    assert timer.ready(end) and musa.syncs == 1
    assert timer.elapsed_s(start, end) == pytest.approx(0.25)
    timer.release(start)
    assert timer.mark() is start  # pooled


def test_synchronizer_prefers_the_backend_then_torch_accelerator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    npu = FakeBackend()
    monkeypatch.setitem(sys.modules, "torch", old_torch(npu=npu))
    device_synchronizer("npu")()
    assert npu.syncs == 1
    calls: list[int] = []
    accelerator = SimpleNamespace(synchronize=lambda: calls.append(1))
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(accelerator=accelerator))
    device_synchronizer("hpu")()
    assert calls == [1]
    monkeypatch.setitem(sys.modules, "torch", old_torch())
    with pytest.raises(RuntimeError, match="'hpu'"):
        device_synchronizer("hpu")


def test_allocator_probe_on_old_torch_with_torch_npu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", old_torch(npu=FakeBackend()))
    probe = TorchAllocatorProbe()
    assert probe.is_available()
    probe.open()
    (sample,) = probe.sample()
    assert sample.device == "npu:0" and sample.allocated_peak_bytes == 2**20


@pytest.mark.parametrize(
    ("name", "hip", "vendor"),
    [
        ("Iluvatar BI-V150", False, "iluvatar"),
        ("Iluvatar MR-V100", False, "iluvatar"),
        ("MetaX C550", False, "metax"),
        ("MetaX C500", False, "metax"),
        ("MXC500", False, "metax"),
        ("K100_AI", True, "hygon"),
        ("Z100L", True, "hygon"),
        ("AMD Instinct MI300X", True, "amd"),
        ("NVIDIA H100 80GB HBM3", False, "nvidia"),
        ("NVIDIA A100-SXM4-80GB", False, "nvidia"),
    ],
)
def test_cuda_compatible_vendors_keep_their_names(name: str, hip: bool, vendor: str) -> None:
    assert cuda_vendor(name, hip=hip) == vendor


def test_auto_device_finds_a_vendor_backend_on_old_torch() -> None:
    npu = FakeBackend()
    npu.current_device = lambda: 1  # type: ignore[attr-defined]
    assert auto_device(old_torch(cuda=FakeBackend(available=False), npu=npu)) == "npu:1"
    assert auto_device(old_torch(cuda=FakeBackend(available=False))) == "cpu"
    accelerator = SimpleNamespace(
        is_available=lambda: True,
        current_accelerator=lambda: SimpleNamespace(type="xpu"),
        current_device_index=lambda: 2,
    )
    assert auto_device(SimpleNamespace(accelerator=accelerator)) == "xpu:2"
