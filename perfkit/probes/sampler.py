"""The background sampler: one daemon thread per probe, each sampling at a fixed interval."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from perfkit._messages import logger
from perfkit.checks import positive_number
from perfkit.probes._base import Probe
from perfkit.probes._sample import DeviceSample

SAMPLER = "sampler"  # the name on_error gets for failures that are not one probe's
_MAX_MESSAGE = 500  # characters of a failure's text kept in a report


def check_interval(sample_interval: Any) -> float:
    """``sample_interval`` as seconds: a positive finite number (TypeError / ValueError, naming
    ``sample_interval``, otherwise)."""
    return positive_number("sample_interval", sample_interval)


class Sampler:
    """Samples each of ``probes`` every ``interval_s`` seconds, each on its own daemon thread,
    so a probe that hangs delays no other.

    A probe's thread opens it, takes one sample at once, then one per interval (missed ticks
    are skipped, not caught up) and a last one when stopped, then closes it. ``on_sample(sample)``
    is called for every DeviceSample, from one thread at a time. A probe whose open/sample
    raises (any exception, SystemExit and KeyboardInterrupt included) or whose sample() returns
    something other than a list of DeviceSample is reported once through ``on_error(probe
    name, message)`` and the ``logging`` logger ``"perfkit"``, closed and dropped; the others go
    on. If ``on_sample`` itself raises, that is reported under the name ``"sampler"`` and all
    sampling ends.

    ``stop(timeout_s)`` returns within about ``timeout_s`` seconds: after half of it, probes
    still inside open/sample are interrupted (``Probe.interrupt``: a vendor tool's process group
    is killed) - silently when the probe has delivered samples before, reported when it never
    did; a probe that still has not returned is reported as abandoned and its thread left
    behind. No callback runs after ``stop`` returns. Usable as start/stop or as a context
    manager. ``clock`` (seconds) schedules the ticks.
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
        self._workers = [_Worker(probe) for probe in probes]
        self._on_sample = on_sample
        self._on_error = on_error
        self._clock = clock
        self._stop = threading.Event()
        self._started = False
        self._stopped = False
        # Serialises the callbacks; _closed (set by stop) ends them.
        self._callback_lock = threading.RLock()
        self._closed = False

    def start(self) -> Sampler:
        if self._started:
            raise RuntimeError("Sampler.start() called twice")
        self._started = True
        for worker in self._workers:
            worker.probe.set_interval(self.interval_s)
            worker.thread = threading.Thread(
                target=self._run,
                args=(worker,),
                name=f"perfkit-probe-{worker.probe.name}",
                daemon=True,
            )
            worker.thread.start()
        return self

    def stop(self, timeout_s: float = 1.0) -> None:
        """Take the last samples, close the probes and end the threads, within about
        ``timeout_s`` seconds. Safe to call twice (the second call finishes one an interrupt cut
        short), or before ``start``."""
        if not self._started:
            return
        if self._stopped:  # again after a stop cut short (an interrupt): wait for the threads
            self._join(time.monotonic() + timeout_s)
            self._closed = True
            return
        self._stopped = True
        start = time.monotonic()
        self._stop.set()
        self._join(start + timeout_s / 2)
        failures: list[tuple[str, str]] = []
        for worker in self._alive():
            worker.interrupted = True
            try:
                worker.probe.interrupt()
            except BaseException as exc:  # reported, never raised into the caller
                failures.append((worker.probe.name, f"interrupt() failed: {_describe(exc)}"))
        self._join(start + timeout_s)
        for worker in self._alive():
            what = worker.current or "sampling"
            message = f"{what}() did not return within {timeout_s:g} s; probe abandoned"
            failures.append((worker.probe.name, message))
        # A callback that hangs (on_sample blocked) must not hang stop() as well.
        got_lock = self._callback_lock.acquire(
            timeout=max(0.1, start + timeout_s - time.monotonic())
        )
        try:
            for name, message in failures:
                if got_lock:
                    self._report(name, message)
                else:
                    logger.warning("probe %s: %s", name, message)
            self._closed = True
        finally:
            if got_lock:
                self._callback_lock.release()

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _join(self, deadline: float) -> None:
        for worker in self._workers:
            if worker.thread is not None:  # None: start() was cut short before it
                worker.thread.join(max(0.0, deadline - time.monotonic()))

    def _alive(self) -> list[_Worker]:
        return [w for w in self._workers if w.thread is not None and w.thread.is_alive()]

    # --- a probe's thread ---------------------------------------------------------------------

    def _run(self, worker: _Worker) -> None:
        try:
            if self._call(worker, "open") is not None and self._sample(worker):
                next_t = self._clock() + self.interval_s
                while not self._stop.wait(max(0.0, next_t - self._clock())):
                    if not self._sample(worker):
                        break
                    next_t += self.interval_s
                    if next_t < self._clock():  # fell behind: skip the missed ticks
                        next_t = self._clock() + self.interval_s
                else:
                    self._sample(worker)
            if not worker.closed:
                self._close(worker, "")
        except BaseException as exc:  # a thread that dies would print to stderr: report it
            self._report(worker.probe.name, f"sampling failed: {_describe(exc)}")

    def _call(self, worker: _Worker, what: str) -> list[DeviceSample] | None:
        """open() (returns []) or sample(); None when the probe failed and was dropped."""
        probe = worker.probe
        worker.current = what
        result: object = []
        try:
            if what == "open":
                probe.open()
            else:
                result = probe.sample()
        except BaseException as exc:  # any probe failure is reported, never hidden
            self._fail(worker, what, _describe(exc))
            return None
        finally:
            worker.current = None
        if not isinstance(result, (list, tuple)) or not all(
            isinstance(s, DeviceSample) for s in result
        ):
            wrong = f"returned {_shorten(repr(result))}, not a list of DeviceSample"
            self._fail(worker, what, wrong)
            return None
        return list(result)

    def _sample(self, worker: _Worker) -> bool:
        """One sample of the worker's probe, passed on; False when sampling ends for it."""
        samples = self._call(worker, "sample")
        if samples is None:
            return False
        worker.delivered |= bool(samples)
        return all(self._emit(worker, sample) for sample in samples)

    def _fail(self, worker: _Worker, what: str, failure: str) -> None:
        """Report a failed open/sample once (unless an interrupt at stop caused it and the
        probe has delivered before), then close the probe."""
        if not worker.interrupted:
            self._close(worker, f"{what}() failed: {failure}; probe disabled")
        elif worker.delivered:
            logger.debug("probe %s: %s() cut short at stop: %s", worker.probe.name, what, failure)
            self._close(worker, "")
        else:
            self._close(worker, f"{what}() stopped before the probe delivered a sample: {failure}")

    def _close(self, worker: _Worker, report: str) -> None:
        """Close the probe; report ``report`` (if any) with a close failure added."""
        worker.closed = True
        worker.current = "close"
        try:
            worker.probe.close()
        except BaseException as exc:  # reported, not hidden
            failure = f"close() failed: {_describe(exc)}"
            report = f"{report} (and {failure})" if report else failure
        if report:
            self._report(worker.probe.name, report)

    def _emit(self, worker: _Worker, sample: DeviceSample) -> bool:
        worker.current = "on_sample"
        try:
            with self._callback_lock:
                if self._closed:
                    return False
                try:
                    self._on_sample(sample)
                except BaseException as exc:
                    self._stop.set()
                    self._report(SAMPLER, f"on_sample raised {_describe(exc)}; sampling stopped")
                    self._closed = True
                    return False
        finally:
            worker.current = None
        return True

    def _report(self, name: str, message: str) -> None:
        with self._callback_lock:
            if self._closed:
                return
            logger.warning("probe %s: %s", name, message)
            try:
                self._on_error(name, message)
            except BaseException:  # the record is lost, the log line above stays
                logger.exception("on_error raised while reporting probe %s", name)


class _Worker:
    """One probe and what its thread is doing."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.thread: threading.Thread | None = None
        self.current: str | None = None  # "open" / "sample" / "on_sample" / "close": inside it
        self.delivered = False  # some sample() returned devices
        self.interrupted = False  # stop() interrupted it
        self.closed = False  # close() has been called


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else f"{text[:_MAX_MESSAGE]}... ({len(text)} chars)"


def _describe(exc: BaseException) -> str:
    return _shorten(f"{type(exc).__name__}: {exc}")
