"""The torch allocator probe: this process's caching-allocator figures on the torch accelerator
(CUDA and the CUDA-compatible stacks, or the npu / mlu / musa / xpu backend modules, or any backend
torch.accelerator knows)."""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

from perfkit.devices import current_accelerator
from perfkit.probes._base import Probe, register_probe
from perfkit.probes._sample import DeviceSample, ProbeError

_KEYS = (
    "allocated_bytes.all.current",
    "allocated_bytes.all.peak",
    "reserved_bytes.all.current",
    "reserved_bytes.all.peak",
)


def _stat(stats: dict[str, Any], key: str) -> float:
    """One figure of ``memory_stats()``: an empty dict is a device the allocator never touched
    (0 bytes); a dict without the key is a backend this probe does not understand."""
    if not stats:
        return 0.0
    if key not in stats:
        raise ProbeError(f"torch allocator statistics have no {key!r} (keys: {sorted(stats)[:8]})")
    return float(stats[key])


@register_probe
class TorchAllocatorProbe(Probe):
    """Allocated / reserved bytes (current and peak since the last
    ``reset_peak_memory_stats``) of torch's caching allocator, per device of the accelerator
    backend. Device ids ``"<backend>:<n>"`` (``"cuda:0"``). A device this process never used
    reads 0 and is not initialised by the probe.

    Available when torch is already imported by the program being measured and has an
    accelerator: the probe never imports torch itself, so it costs nothing elsewhere.
    """

    name = "torch"
    kind = "allocator"

    def __init__(self) -> None:
        self._backend: str | None = None
        self._stats: Any = None
        self._count = 0

    def is_available(self) -> bool:
        torch = sys.modules.get("torch")
        return torch is not None and current_accelerator(torch) is not None

    def open(self) -> None:
        torch: ModuleType | None = sys.modules.get("torch")
        backend = current_accelerator(torch) if torch is not None else None
        if torch is None or backend is None:
            raise ProbeError("torch allocator probe: torch is not imported or has no accelerator")
        module = getattr(torch, backend, None)
        if module is not None and hasattr(module, "memory_stats"):
            self._stats, self._count = module.memory_stats, module.device_count()
        else:
            self._stats, self._count = (
                torch.accelerator.memory_stats,
                torch.accelerator.device_count(),
            )
        self._backend = backend

    def sample(self) -> list[DeviceSample]:
        out = []
        for i in range(self._count):
            figures = [_stat(self._stats(i), key) for key in _KEYS]
            out.append(
                DeviceSample(
                    probe=self.name,
                    device=f"{self._backend}:{i}",
                    device_name=f"torch {self._backend} allocator",
                    allocated_bytes=figures[0],
                    allocated_peak_bytes=figures[1],
                    reserved_bytes=figures[2],
                    reserved_peak_bytes=figures[3],
                )
            )
        return out

    def close(self) -> None:
        self._stats, self._count = None, 0
