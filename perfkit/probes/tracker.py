"""Peak device memory (the seeds' ``mem``), the allocator's peaks and energy over a window."""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from perfkit.probes._sample import NAN, DeviceSample
from perfkit.probes.host import HOST_DEVICE

GIB = 2.0**30
#: What ``mem`` measures (the summary's ``mem_source``), by where its device's figures came from.
MEM_SOURCE_DEVICE = "device memory used (all processes) / capacity"
MEM_SOURCE_PROCESS_TREE_UNIQUE = (
    "RSS of this process + USS of its descendants, every page once (other ranks left out) / "
    "installed RAM"
)
MEM_SOURCE_PROCESS_TREE = (
    "RSS of this process and its descendants (other ranks left out; shared pages counted once "
    "per process) / installed RAM"
)
MEM_SOURCE_SYSTEM = "system RAM used (all processes) / installed RAM"


def format_mem(used_bytes: float, total_bytes: float) -> str:
    """``"18.7/32.0"``: used / capacity in GiB, each rounded to 2 decimals and written as
    Python writes the rounded float - the seeds' convention (18.7/32.0, 28.86/40.0, 9.42/40.0)."""
    return f"{round(used_bytes / GIB, 2)}/{round(total_bytes / GIB, 2)}"


class MemoryTracker:
    """Folds DeviceSamples into peaks and energy counters; thread-safe (``update`` runs on the
    sampler thread, the rest anywhere). State is a few numbers per device, whatever the run's
    length. The host is not a device and is left out - unless ``include_host``: a run that
    computes on the CPU, whose memory is then this process tree's pages counted once (the
    host probe's ``process_tree_unique_bytes``; its RSS, then system RAM used, where a sample
    lacks it) of the installed RAM, so that other jobs on the machine, and other ranks of
    this job, do not count.

    Energy: ``mark()`` starts a window, ``energy_delta_j()`` is the energy all devices with an
    energy counter used since then (J), from the newest samples - so each end of the window is
    as old as one sampling interval at most. Divide by the samples processed in the window for
    J/sample.
    """

    def __init__(self, *, include_host: bool = False) -> None:
        self.include_host = include_host
        self._lock = threading.Lock()
        self._peak_used: dict[str, float] = {}
        self._total: dict[str, float] = {}
        self._source: dict[str, str] = {}
        self._allocated_peak: float | None = None
        self._reserved_peak: float | None = None
        self._energy: dict[str, float] = {}  # newest counter reading per device
        self._energy_mark: dict[str, float] | None = None

    def update(self, sample: DeviceSample) -> None:
        """Fold one sample in."""
        device = sample.device
        with self._lock:
            if device != HOST_DEVICE or self.include_host:
                used, total = sample.memory_used_bytes, sample.memory_total_bytes
                source = MEM_SOURCE_DEVICE
                if device == HOST_DEVICE:
                    used, source = _host_used(sample)
                    if source != MEM_SOURCE_PROCESS_TREE_UNIQUE and self._source.get(device) == (
                        MEM_SOURCE_PROCESS_TREE_UNIQUE
                    ):
                        used = NAN  # a sample between two USS reads: not mixed with RSS
                if not math.isnan(used):
                    self._peak_used[device] = max(used, self._peak_used.get(device, used))
                    self._source[device] = source
                if not math.isnan(total):
                    self._total[device] = total
            self._allocated_peak = _max(
                self._allocated_peak, sample.allocated_bytes, sample.allocated_peak_bytes
            )
            self._reserved_peak = _max(
                self._reserved_peak, sample.reserved_bytes, sample.reserved_peak_bytes
            )
            if not math.isnan(sample.energy_j):
                self._energy[device] = sample.energy_j
                if self._energy_mark is not None:
                    # A device first read after mark() counts from that first reading.
                    self._energy_mark.setdefault(device, sample.energy_j)

    def mark(self) -> None:
        """Start an energy window at the newest readings."""
        with self._lock:
            self._energy_mark = dict(self._energy)

    def energy_delta_j(self) -> float | None:
        """Joules used since ``mark()`` over every device with an energy counter; None before
        any ``mark()`` or when no device has reported energy since."""
        with self._lock:
            if self._energy_mark is None:
                return None
            deltas = [
                self._energy[d] - start
                for d, start in self._energy_mark.items()
                if d in self._energy
            ]
        return sum(deltas) if deltas else None

    def summary(self) -> dict[str, Any]:
        """``mem`` (``"18.7/32.0"``, the device with the highest peak), ``mem_source`` (what it
        measures: one of the ``MEM_SOURCE_*`` texts), ``mem_per_device`` ({device: "x/y"}),
        ``mem_peak_bytes`` / ``mem_total_bytes`` (that device),
        ``allocator_peak_allocated_bytes`` and ``allocator_peak_reserved_bytes`` (the highest
        over devices). Only devices that reported both used and total memory count for ``mem``;
        a key without data is absent, never 0."""
        with self._lock:
            devices = {
                d: (p, self._total[d]) for d, p in self._peak_used.items() if d in self._total
            }
            allocated, reserved = self._allocated_peak, self._reserved_peak
            sources = dict(self._source)
        out: dict[str, Any] = {}
        if devices:
            peak_device = max(devices, key=lambda d: devices[d][0])
            peak, total = devices[peak_device]
            out["mem"] = format_mem(peak, total)
            out["mem_source"] = sources[peak_device]
            out["mem_per_device"] = {d: format_mem(p, t) for d, (p, t) in devices.items()}
            out["mem_peak_bytes"] = peak
            out["mem_total_bytes"] = total
        if allocated is not None:
            out["allocator_peak_allocated_bytes"] = allocated
        if reserved is not None:
            out["allocator_peak_reserved_bytes"] = reserved
        return out


def _host_used(sample: DeviceSample) -> tuple[float, str]:
    """What a CPU run's memory is: the tree's pages once, else its RSS, else system RAM used."""
    if not math.isnan(sample.process_tree_unique_bytes):
        return sample.process_tree_unique_bytes, MEM_SOURCE_PROCESS_TREE_UNIQUE
    if not math.isnan(sample.process_tree_rss_bytes):
        return sample.process_tree_rss_bytes, MEM_SOURCE_PROCESS_TREE
    return sample.memory_used_bytes, MEM_SOURCE_SYSTEM


def _max(current: float | None, *values: float) -> float | None:
    known = [v for v in values if not math.isnan(v)]
    if current is not None:
        known.append(current)
    return max(known) if known else None


def merge_memory_summaries(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One summary from several ranks' ``MemoryTracker.summary()`` (index = rank): ``mem`` and
    ``mem_*_bytes`` of the device with the highest peak anywhere, every rank's devices in
    ``mem_per_device`` (as ``"<device>@rank<r>"`` when more than one rank reports devices, since
    two nodes both have an ``nvml:0``), the highest allocator peaks."""
    out: dict[str, Any] = {}
    with_devices = [(r, s) for r, s in enumerate(summaries) if "mem_peak_bytes" in s]
    if with_devices:
        _, top = max(with_devices, key=lambda rs: rs[1]["mem_peak_bytes"])
        out["mem"] = top["mem"]
        out["mem_source"] = top["mem_source"]
        out["mem_per_device"] = {
            (f"{device}@rank{r}" if len(with_devices) > 1 else device): mem
            for r, s in with_devices
            for device, mem in s["mem_per_device"].items()
        }
        out["mem_peak_bytes"] = top["mem_peak_bytes"]
        out["mem_total_bytes"] = top["mem_total_bytes"]
    for key in ("allocator_peak_allocated_bytes", "allocator_peak_reserved_bytes"):
        values = [s[key] for s in summaries if key in s]
        if values:
            out[key] = max(values)
    return out
