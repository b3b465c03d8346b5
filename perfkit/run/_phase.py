"""Phase: one pass of a loop, its step loop and the bookkeeping of its IO and compute windows.

Step k of :meth:`Phase.iterate` spans from the end of step k-1 to the end of its body: the wait
in ``next()`` is IO, the body is compute unless it marks :meth:`Phase.compute` windows. Compute
windows on an accelerator are timed with device events resolved lazily (no sync per step, one at
phase end); on the CPU with the host clock.
"""

from __future__ import annotations

import math
import weakref
from array import array
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from perfkit.records import STEP_COLUMNS
from perfkit.run._errors import RunError
from perfkit.run._io import IOWindow
from perfkit.run._samples import sample_counter
from perfkit.summary import PhaseFigures, PhaseResult, percentiles, phase_stats
from perfkit.timing import Clock, HostTimer, WindowTimer
from perfkit.timing import window as _window
from perfkit.timing.window import ComputeWindow

if TYPE_CHECKING:
    from perfkit.probes.power import DevicePower
    from perfkit.run._run import Run

_NO_STEP = -1  # compute windows outside iterate() belong to the phase, not to a step

#: A finished step, as a steps.bin row (perfkit.records.STEP_COLUMNS): (phase ordinal, step,
#: t since run start, wall s, io s, compute s - NaN on a device until its windows resolve -,
#: samples).
_Row = tuple[int, int, float, float, float, float, int]
_WIDTH = len(STEP_COLUMNS)
_STEP, _COMPUTE = 1, 5  # columns of a row
#: Finished steps that may wait for the flusher (56 bytes each): from half of it the flusher is
#: woken; at the bound the loop's thread writes them itself (Run._backlog).
BACKLOG_STEPS = 1 << 16


class Phase:
    """One pass of a loop (an epoch of training, a validation pass, an inference pass).

    Create phases with :meth:`Run.phase`; use them as context managers. Units: seconds, samples.
    """

    def __init__(self, run: Run, kind: str, name: str, index: int) -> None:
        self.run = run
        self.kind = kind
        self.name = name
        self.index = index
        self.samples = 0
        self.steps = 0
        self.io_s = 0.0
        self.compute_s = 0.0
        self.start_t = math.nan
        self.end_t = math.nan
        self.energy_j: float | None = None
        self.devices: list[DevicePower] = []  # per device, set by the run when the phase ends
        self._clock: Clock = run.clock
        self._timer: WindowTimer = run.timer
        self._state = "new"
        self._step_walls = array("d")
        # Per-step state: IO so far and the implicit window's start; the step's index is
        # self.steps, and the compute() window knows whether a step runs and sums its windows.
        self._step_io = 0.0
        self._host = type(self._timer) is HostTimer
        self._implicit_start: Any = None
        self._implicit_windows: list[tuple[Any, Any]] = []
        # Compute windows waiting for the device: (step, start mark, end mark).
        self._pending: deque[tuple[int, Any, Any]] = deque()
        self._compute_by_step: dict[int, float] = {}
        # Finished steps waiting for the next flush (and, on a device, for their compute
        # time): rows of _WIDTH float64s, one after the other.
        self._rows = array("d")
        self._tentative: _Row | None = None
        self.ordinal = -1  # position among the run's phases on this rank, set when entered
        self._loop: weakref.ReferenceType[Generator[Any, None, None]] | None = None
        self._rank_figures: dict[int, PhaseFigures] | None = None
        self._io = IOWindow(self, self._clock)
        self._compute = _window.window_class(self, self._timer.mark, self._host)

    # -- lifetime ------------------------------------------------------------------------
    def __enter__(self) -> Phase:
        if self._state != "new":
            raise RunError(f"phase {self.name!r} was already used; start a new run.phase(...)")
        self.start_t = self.run.elapsed()
        self.ordinal = self.run._begin_phase(self)
        self._state = "active"
        self._compute.active = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish(failed=exc_type is not None)

    def _finish(self, failed: bool) -> None:
        if self._state != "active":
            return
        loop = self._loop() if self._loop is not None else None
        if loop is not None:
            loop.close()
        tentative, self._tentative = self._tentative, None
        if tentative is not None and not failed:
            self._commit_step(tentative)
        if self._pending:
            self._timer.synchronize()  # the one sync of the phase
        self._resolve()
        if tentative is not None and failed:  # the half-done step that raised does not count
            self.compute_s -= self._compute_by_step.pop(int(tentative[_STEP]), 0.0)
        self.end_t = self.run.elapsed()
        self.energy_j = self.run._phase_energy_j()
        self._state = "ended"
        self._compute.active = False
        try:
            if not failed:
                self._rank_figures = self.run._gather_figures(self._figures())
        finally:
            self.run._end_phase(self)

    def _figures(self) -> PhaseFigures:
        return PhaseFigures(
            self.kind,
            self.samples,
            self.steps,
            self.wall_s,
            self.io_s,
            self.compute_s,
            self.start_t,
            self.end_t if self._state == "ended" else self.run.elapsed(),
            self.energy_j,
        )

    def figures_by_rank(self) -> dict[int, PhaseFigures]:
        """{rank: figures}: every rank's once the phase ended in a distributed run, else this
        rank's own (while the phase runs, or when it failed)."""
        return self._rank_figures or {self.run.rank: self._figures()}

    def _refuse_compute(self) -> None:
        self._check_active("compute()")
        raise RunError(f"compute() re-entered in phase {self.name!r}: compute windows do not nest")

    def _check_active(self, what: str) -> None:
        if self._state != "active":
            state = "has not started" if self._state == "new" else "has ended"
            raise RunError(f"{what} used on phase {self.name!r}, which {state}")

    # -- public API ----------------------------------------------------------------------
    @property
    def wall_s(self) -> float:
        """Wall time of the phase in seconds (so far, while it runs)."""
        end = self.end_t if self._state == "ended" else self.run.elapsed()
        return end - self.start_t

    def iterate(
        self, iterable: Iterable[Any], *, samples: int | Callable[[Any], int] | None = None
    ) -> Iterator[Any]:
        """Yield the batches of ``iterable``, timing each step.

        Time blocked in ``next()`` is IO, and so is time in the body's :meth:`io` windows; the
        rest of the loop body is compute - unless the body marks compute windows with
        :meth:`compute`, which then count alone for that step.
        ``samples``: an int per batch, or a callable batch -> int; by default counted from the
        batch (:func:`count_samples`).
        """
        self._check_active("iterate()")
        try:
            iterator = iter(iterable)
        except TypeError:
            raise TypeError(
                "iterate(iterable) needs an iterable (a DataLoader, a list, a generator), "
                f"got {type(iterable).__name__}"
            ) from None
        if self._tentative is not None:  # an earlier loop of this phase was left by break
            self._commit_step(self._tentative)
            self._tentative = None
        loop = self._steps(iterator, sample_counter(samples))
        self._loop = weakref.ref(loop)
        return loop

    def io(self) -> IOWindow:
        """Context manager marking host-side IO inside a step (host-to-device copy, decoding)."""
        return self._io

    def compute(self) -> ComputeWindow:
        """Context manager marking a compute window; once used, only marked windows count."""
        return self._compute

    # -- step loop -----------------------------------------------------------------------
    def _steps(
        self, iterator: Iterator[Any], samples: int | Callable[[Any], int]
    ) -> Generator[Any, None, None]:
        # Step k spans from the end of step k-1 (t0) to the end of its body (t2): the wait in
        # next() until t1 is IO, so consecutive steps tile the loop's time.
        clock = self._clock
        host = self._host
        window = self._compute
        run_t0 = self.run.t0
        ordinal = self.ordinal
        fixed, count = (samples, None) if isinstance(samples, int) else (0, samples)
        t0 = clock()
        for batch in iterator:
            t1 = clock()
            step = self.steps
            window.begin_step()
            self._step_io = t1 - t0
            if not host:
                self._implicit_start = self._timer.mark()
            n = fixed if count is None else count(batch)
            left = False
            try:
                yield batch
            except GeneratorExit:  # the loop was left: break, or an exception in the body
                left = True
            t2 = clock()
            explicit_s = window.end_step()
            compute = math.nan  # on a device, known when its windows resolve
            if host:
                compute = t2 - t0 - self._step_io if explicit_s is None else explicit_s
            else:
                self._close_device_windows(step, explicit=explicit_s is not None)
            row = (ordinal, step, t2 - run_t0, t2 - t0, self._step_io, compute, n)
            if left:  # the step counts only if the phase then ends normally
                self._tentative = row
                return
            self._commit_step(row)
            t0 = t2
        self.io_s += clock() - t0  # the last wait for data is IO too

    def _close_device_windows(self, step: int, explicit: bool) -> None:
        """Queue the step's implicit windows for resolution, or drop them when the step marked
        explicit windows."""
        self._end_implicit_window()
        windows = self._implicit_windows
        timer = self._timer
        for start, end in windows:
            if explicit:
                timer.release(start)
                timer.release(end)
            else:
                self._pending.append((step, start, end))
        windows.clear()

    def _commit_step(self, row: _Row) -> None:
        _phase, _step, _t, wall, io, compute, n = row
        self.steps += 1
        self.samples += n
        self.io_s += io
        if self._host:  # on a device the seconds count when the windows resolve
            self.compute_s += compute
        self._step_walls.append(wall)
        rows = self._rows
        rows.extend(row)
        if len(rows) >= BACKLOG_STEPS // 2 * _WIDTH:
            self.run._backlog(len(rows) // _WIDTH)
        if self._pending:
            self._resolve()

    @property
    def in_step(self) -> bool:
        """True while a step of iterate() runs (its loop body)."""
        return self._compute.in_step

    def _end_implicit_window(self) -> None:
        if self._implicit_start is not None:
            self._implicit_windows.append((self._implicit_start, self._timer.mark()))
            self._implicit_start = None

    def _begin_io(self) -> None:
        self._check_active("io()")
        # On a device the implicit compute window pauses while the step does IO; on the host,
        # IO seconds are subtracted from the body when the step closes.
        if self.in_step and not self._host:
            self._end_implicit_window()

    def _end_io(self, seconds: float) -> None:
        if not self.in_step:
            self.io_s += seconds
            return
        self._step_io += seconds
        if not self._host:
            self._implicit_start = self._timer.mark()

    def _add_window(self, start: Any, end: Any) -> None:
        """An explicit compute window off the host's per-step path: on the host (outside a
        step) it counts at once; on a device it counts when resolved."""
        self._check_active("compute()")  # a window kept past its phase's end
        if self._host:
            self.compute_s += end - start
            return
        self._pending.append((self.steps if self.in_step else _NO_STEP, start, end))

    def _resolve(self) -> None:
        """Turn every window whose end the device has reached into seconds (never blocks).

        Holds the run's flush lock, so a flush sees each window either pending or resolved,
        never in between."""
        timer = self._timer
        pending = self._pending
        by_step = self._compute_by_step
        with self.run.flush_lock:
            while pending and timer.ready(pending[0][2]):
                step, start, end = pending.popleft()
                seconds = timer.elapsed_s(start, end)
                timer.release(start)
                timer.release(end)
                self.compute_s += seconds
                if step != _NO_STEP:
                    by_step[step] = by_step.get(step, 0.0) + seconds

    def _drain_rows(self) -> bytes:
        """steps.bin rows of the finished steps whose compute time is known; the caller holds
        the run's flush lock (any thread)."""
        rows = self._rows
        count = len(rows) // _WIDTH  # rows appended from here on wait for the next flush
        if not self._host:
            steps = [step for step, _, _ in self._pending if step != _NO_STEP]
            boundary = steps[0] if steps else math.inf
            by_step = self._compute_by_step
            done = 0
            while done < count and rows[done * _WIDTH + _STEP] < boundary:
                step = int(rows[done * _WIDTH + _STEP])
                rows[done * _WIDTH + _COMPUTE] = by_step.pop(step, 0.0)
                done += 1
            count = done
        data = rows[: count * _WIDTH].tobytes()
        del rows[: count * _WIDTH]
        return data

    # -- results -------------------------------------------------------------------------
    def result(self) -> PhaseResult:
        """The phase as the summary sees it (see :class:`perfkit.summary.PhaseResult`)."""
        return PhaseResult(
            self.name,
            self.index,
            self.run.rank,
            self.figures_by_rank(),
            self._step_walls,
            self.devices,
        )

    def step_time_percentiles(self) -> dict[int, float]:
        """Step wall-time percentiles in seconds ({50: p50, 90: p90, 99: p99}); {} without steps."""
        return percentiles(self._step_walls)

    def stats(self) -> dict[str, Any]:
        """This phase's figures: samples, steps, wall / io / compute seconds, throughputs."""
        return phase_stats(self.result())
