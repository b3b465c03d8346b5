"""The host probe: this process's RSS and its process tree's, system memory and whole-machine
CPU utilisation (psutil)."""

from __future__ import annotations

import importlib.util
import os
import platform
from typing import TYPE_CHECKING, Any

from perfkit.probes._base import Probe, register_probe
from perfkit.probes._sample import NAN, DeviceSample, ProbeError

if TYPE_CHECKING:
    import psutil

HOST_DEVICE = "host"


def _busy_and_total(times: Any) -> tuple[float, float]:
    """(busy, total) CPU seconds from ``psutil.cpu_times()``; idle and iowait are not busy, and
    Linux's guest times are already inside user/nice."""
    fields = times._asdict()
    total = sum(fields.values()) - fields.get("guest", 0.0) - fields.get("guest_nice", 0.0)
    idle = fields.get("idle", 0.0) + fields.get("iowait", 0.0)
    return total - idle, total


def _children_rss(process: psutil.Process) -> int:
    """Sum of the resident sets of ``process``'s descendants (bytes); a child that exits or
    hides while being read counts 0."""
    import psutil

    total = 0
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            continue
    return total


@register_probe
class HostProbe(Probe):
    """Host memory and CPU through psutil. Device id ``"host"``.

    ``memory_used_bytes`` is system RAM not available to new processes (total - available),
    ``memory_total_bytes`` the installed RAM, ``process_rss_bytes`` this process's resident
    set, ``process_tree_rss_bytes`` the sum of the resident sets of this process and all its
    descendants (DataLoader workers; pages shared between them count once per process: RSS,
    not PSS, see docs/probes.md), ``cpu_utilization_pct`` the whole machine's busy share (all
    cores, 0-100) since the previous sample (since ``open`` for the first one). Kept apart from
    its own counters, so other users of ``psutil.cpu_percent`` do not disturb it.
    """

    name = "host"
    kind = "host"

    def __init__(self) -> None:
        self._psutil: Any = None
        self._process: psutil.Process | None = None
        self._last_cpu: tuple[float, float] = (NAN, NAN)

    def is_available(self) -> bool:
        return importlib.util.find_spec("psutil") is not None

    def open(self) -> None:
        import psutil

        self._psutil = psutil
        self._process = psutil.Process(os.getpid())
        self._last_cpu = _busy_and_total(psutil.cpu_times())

    def sample(self) -> list[DeviceSample]:
        if self._process is None:
            raise ProbeError("host probe sampled before open()")
        psutil = self._psutil
        memory = psutil.virtual_memory()
        rss = self._process.memory_info().rss
        busy, total = _busy_and_total(psutil.cpu_times())
        last_busy, last_total = self._last_cpu
        self._last_cpu = (busy, total)
        elapsed = total - last_total
        cpu_pct = NAN
        if elapsed > 0:  # else both readings fell in one clock tick
            cpu_pct = min(100.0, max(0.0, 100.0 * (busy - last_busy) / elapsed))
        return [
            DeviceSample(
                probe=self.name,
                device=HOST_DEVICE,
                device_name=platform.node(),
                memory_used_bytes=float(memory.total - memory.available),
                memory_total_bytes=float(memory.total),
                process_rss_bytes=float(rss),
                process_tree_rss_bytes=float(rss + _children_rss(self._process)),
                cpu_utilization_pct=cpu_pct,
            )
        ]

    def close(self) -> None:
        self._process = None
