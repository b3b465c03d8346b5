"""The background sampler: one daemon thread that samples every probe at a fixed interval."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from perfkit.probes._base import Probe
from perfkit.probes._sample import DeviceSample

SAMPLER = "sampler"  # the name on_error gets for failures that are not one probe's


def check_interval(sample_interval: Any) -> float:
    """``sample_interval`` as seconds: a positive finite number (TypeError / ValueError, naming
    ``sample_interval``, otherwise)."""
    if isinstance(sample_interval, bool) or not isinstance(sample_interval, (int, float)):
        raise TypeError(
            f"sample_interval must be a number of seconds, got {type(sample_interval).__name__}"
        )
    if not math.isfinite(sample_interval) or sample_interval <= 0:
        raise ValueError(
            f"sample_interval must be a positive finite number of seconds, got {sample_interval!r}"
        )
    return float(sample_interval)


class Sampler:
    """Samples ``probes`` every ``interval_s`` seconds on a daemon thread.

    The thread opens the probes, takes one sample of each at once, then one per interval
    (missed ticks are skipped, not caught up) and a last one when stopped, then closes them.
    ``on_sample(sample)`` is called from the sampler thread for every DeviceSample. A probe
    whose open/sample raises is reported once through ``on_error(probe name, message)``,
    closed and dropped; the others go on. ``stop(timeout_s)`` waits at most about
    ``timeout_s`` seconds: a probe that hangs is reported (``on_error``), the other probes are
    closed from the caller's thread and the stuck thread is left behind (daemon); no callback
    runs after ``stop`` returns. If ``on_sample`` itself raises, that is reported under the
    name ``"sampler"`` and sampling ends. Usable as start/stop or as a context manager.
    ``clock`` (seconds) schedules the ticks.
    """

    def __init__(
        self,
        probes: Sequence[Probe],
        interval_s: float,
        on_sample: Callable[[DeviceSample], None],
        on_error: Callable[[str, str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = check_interval(interval_s)
        self._probes = list(probes)
        self._on_sample = on_sample
        self._on_error = on_error
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Guards _current / _active / _abandoned / _in_callback between the thread and stop().
        self._cond = threading.Condition()
        self._current: tuple[Probe, str] | None = None
        self._active: list[Probe] = []
        self._abandoned = False
        self._in_callback = False

    def start(self) -> Sampler:
        if self._thread is not None:
            raise RuntimeError("Sampler.start() called twice")
        for probe in self._probes:
            probe.set_interval(self.interval_s)
        self._thread = threading.Thread(target=self._run, name="perfkit-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Take the last sample, close the probes and end the thread, waiting at most about
        ``timeout_s`` seconds. Safe to call twice, or before ``start``."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        deadline = time.monotonic() + timeout_s
        self._stop.set()
        thread.join(timeout_s)
        if not thread.is_alive():
            return
        with self._cond:
            self._abandoned = True
            current = self._current
            leftover = [p for p in self._active if current is None or p is not current[0]]
            self._active = []
            self._cond.wait_for(
                lambda: not self._in_callback, max(0.0, deadline - time.monotonic())
            )
        if current is not None:
            name, what = current[0].name, current[1]
            message = f"{what}() did not return within {timeout_s:g} s; probe abandoned"
        else:
            name, message = SAMPLER, f"sampler thread did not stop within {timeout_s:g} s"
        self._on_error(name, message)
        for probe in leftover:
            failure = _close(probe)
            if failure:
                self._on_error(probe.name, f"close() failed: {failure}")

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- the sampler thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            for probe in self._probes:
                if self._open(probe):
                    with self._cond:
                        self._active.append(probe)
            next_t = self._clock() + self.interval_s
            self._sample_all()
            while not self._stop.wait(max(0.0, next_t - self._clock())):
                self._sample_all()
                next_t += self.interval_s
                if next_t < self._clock():  # fell behind: skip the missed ticks
                    next_t = self._clock() + self.interval_s
            self._sample_all()
        except _Abandoned:
            return
        except _CallbackFailed as exc:
            self._report(SAMPLER, f"on_sample raised {exc.__cause__!r}; sampling stopped")
        with self._cond:
            if self._abandoned:
                return
            active, self._active = self._active, []
        for probe in active:
            failure = _close(probe)
            if failure:
                self._report(probe.name, f"close() failed: {failure}")

    def _open(self, probe: Probe) -> bool:
        self._set_current((probe, "open"))
        try:
            probe.open()
        except Exception as exc:  # any probe failure is reported, never hidden
            self._disable(probe, "open", exc)
            return False
        self._set_current(None)
        return True

    def _sample(self, probe: Probe) -> list[DeviceSample]:
        self._set_current((probe, "sample"))
        try:
            samples = probe.sample()
        except Exception as exc:  # any probe failure is reported, never hidden
            self._disable(probe, "sample", exc)
            return []
        self._set_current(None)
        return samples

    def _disable(self, probe: Probe, what: str, exc: Exception) -> None:
        """Report a failed open/sample once, close the probe and drop it."""
        self._set_current(None)
        with self._cond:
            if probe in self._active:
                self._active.remove(probe)
        closed = _close(probe)
        also = f" (and close() failed: {closed})" if closed else ""
        self._report(probe.name, f"{what}() failed: {_describe(exc)}{also}; probe disabled")

    def _set_current(self, current: tuple[Probe, str] | None) -> None:
        with self._cond:
            if self._abandoned:
                raise _Abandoned
            self._current = current

    def _sample_all(self) -> None:
        with self._cond:
            active = list(self._active)
        for probe in active:
            for sample in self._sample(probe):
                self._emit(sample)

    def _emit(self, sample: DeviceSample) -> None:
        with self._cond:
            if self._abandoned:
                raise _Abandoned
            self._in_callback = True
        try:
            self._on_sample(sample)
        except Exception as exc:
            raise _CallbackFailed from exc
        finally:
            with self._cond:
                self._in_callback = False
                self._cond.notify_all()

    def _report(self, name: str, message: str) -> None:
        with self._cond:
            if self._abandoned:
                return
        self._on_error(name, message)


class _Abandoned(Exception):
    """stop() gave up waiting for the sampler thread; the thread must touch nothing more."""


class _CallbackFailed(Exception):
    """on_sample raised; the cause is attached."""


def _close(probe: Probe) -> str:
    """Close ``probe``; the failure as text, or "" (the caller reports it)."""
    try:
        probe.close()
    except Exception as exc:  # returned for reporting, not hidden
        return _describe(exc)
    return ""


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
