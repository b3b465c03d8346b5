"""Clocks and window timers.

A *window timer* marks the edges of a compute window and later turns a pair of marks into seconds.
Three implementations share one interface (:class:`WindowTimer`):

- :class:`HostTimer` - the host clock; marks are floats, always ready (CPU runs).
- :class:`SyncingHostTimer` - synchronises the device at every mark, then reads the host clock:
  FlagPerf's ResNet-50 habit (``sync="step"``), kept for comparison; it stalls the device.
- :class:`EventTimer` - device events recorded on the current stream (CUDA, or any torch
  accelerator whose backend offers timing events); marks resolve lazily, when the device has
  reached them, so timing adds no host-device synchronisation per step.

Tests inject a fake clock (any ``() -> float`` in seconds) and may inject a fake timer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

#: A clock returns seconds as a float; only differences matter.
Clock = Callable[[], float]

#: The default host clock: monotonic, high resolution, seconds.
host_clock: Clock = time.perf_counter


class WindowTimer(Protocol):
    """Marks window edges and resolves pairs of marks into seconds."""

    def mark(self) -> Any:
        """Record a window edge now; returns an opaque mark."""

    def ready(self, mark: Any) -> bool:
        """True when ``mark`` has been reached (never blocks)."""

    def elapsed_s(self, start: Any, end: Any) -> float:
        """Seconds between two ready marks."""

    def release(self, mark: Any) -> None:
        """Give a resolved mark back for reuse."""

    def synchronize(self) -> None:
        """Block until every mark recorded so far is ready (one call at phase end)."""


class HostTimer:
    """Window timer on the host clock (CPU work, or device work made synchronous by the user)."""

    def __init__(self, clock: Clock = host_clock) -> None:
        self.mark = clock

    @staticmethod
    def ready(mark: Any) -> bool:
        """Host marks are always ready."""
        return True

    @staticmethod
    def elapsed_s(start: float, end: float) -> float:
        """Seconds between two host marks."""
        return end - start

    @staticmethod
    def release(mark: Any) -> None:
        """Host marks hold nothing."""

    @staticmethod
    def synchronize() -> None:
        """Nothing is pending on the host."""


class SyncingHostTimer(HostTimer):
    """Synchronises the device at every mark, then reads the host clock (``sync="step"``)."""

    def __init__(self, synchronize_device: Callable[[], None], clock: Clock = host_clock) -> None:
        super().__init__(clock)
        self._sync_device = synchronize_device
        self._clock = clock
        self.mark = self._synced_mark

    def _synced_mark(self) -> float:
        self._sync_device()
        return self._clock()


class EventTimer:
    """Window timer on device events, pooled for reuse: the backend module's ``Event``
    (``torch.cuda.Event``, ``torch.npu.Event``, ``torch.mlu.Event``, ``torch.musa.Event``, ...),
    else ``torch.Event`` (torch 2.4+); RuntimeError when the backend offers neither."""

    def __init__(self, device_type: str) -> None:
        import torch

        self.device_type = device_type
        self._new_event = event_factory(torch, device_type)
        self._sync_device = device_synchronizer(device_type)
        self._pool: list[Any] = []

    def mark(self) -> Any:
        """Record an event on the current stream of the device."""
        event = self._pool.pop() if self._pool else self._new_event()
        event.record()
        return event

    @staticmethod
    def ready(mark: Any) -> bool:
        """True once the device has passed the event (``event.query()``, non-blocking)."""
        return bool(mark.query())

    @staticmethod
    def elapsed_s(start: Any, end: Any) -> float:
        """Seconds between two completed events (events report milliseconds)."""
        return float(start.elapsed_time(end)) / 1000.0

    def release(self, mark: Any) -> None:
        """Return an event to the pool."""
        self._pool.append(mark)

    def synchronize(self) -> None:
        """Wait for the device (one call at phase end)."""
        self._sync_device()


def event_factory(torch: Any, device_type: str) -> Callable[[], Any]:
    """A function making a timing event on ``device_type``'s current stream (see EventTimer)."""
    module_event = getattr(getattr(torch, device_type, None), "Event", None)
    if callable(module_event):
        return lambda: module_event(enable_timing=True)
    generic_event = getattr(torch, "Event", None)
    if callable(generic_event):
        return lambda: generic_event(device=device_type, enable_timing=True)
    raise RuntimeError(f"torch offers no timing event for device type {device_type!r}")


def device_synchronizer(device_type: str) -> Callable[[], None]:
    """The ``synchronize`` function of a torch device type ("cuda", "npu", "mlu", "musa", ...):
    the backend module's, else ``torch.accelerator.synchronize`` (torch 2.6+)."""
    import torch

    module = getattr(torch, device_type, None)
    sync = getattr(module, "synchronize", None)
    if callable(sync):
        return sync
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and hasattr(accelerator, "synchronize"):
        return accelerator.synchronize
    raise RuntimeError(f"torch offers no synchronize() for device type {device_type!r}")
