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
from typing import TYPE_CHECKING, Any, NamedTuple

from perfkit._messages import warn
from perfkit.run._backlog import StepBacklog
from perfkit.run._errors import RunError
from perfkit.run._host import PhaseControl, PhaseHost
from perfkit.run._io import IOWindow
from perfkit.run._loop import SizedSteps, length_of, progress_bar
from perfkit.run._samples import (
    MAX_SAMPLES,
    SampleCounter,
    as_sample_count,
    fixed_or_counter,
    sample_counter,
)
from perfkit.run._tokens import token_counter
from perfkit.summary import PhaseOverRanks, PhaseTotals, percentiles, phase_entry
from perfkit.timing import Clock, HostTimer, WindowTimer
from perfkit.timing.window import ComputeWindow

if TYPE_CHECKING:
    from perfkit.probes.power import DevicePower

_NO_STEP = -1  # compute windows outside iterate() belong to the phase, not to a step

#: Finished steps that may wait for the flusher (the StepBacklog's capacity, 32 bytes each): at
#: the bound the loop waits for the flusher to write them (PhaseHost.steps_waiting).
BACKLOG_STEPS = 1 << 16


class StepTotals(NamedTuple):
    """Sums over a phase's finished steps: samples, IO and compute seconds (on the host clock)
    of its steady-state steps, samples and wall seconds of its warm-up steps, then the tokens
    of both."""

    samples: int
    io_s: float
    compute_s: float
    warmup_samples: int
    warmup_s: float
    tokens: int
    warmup_tokens: int


class Phase:
    """One pass of a loop (an epoch of training, a validation pass, an inference pass).

    Create phases with :meth:`Run.phase`; use them as context managers. Units: seconds, samples.
    The first ``warmup_steps`` steps are warm-up: counted in ``warmup_samples`` and
    ``warmup_s`` (their step wall times), left out of ``samples``, ``steps``, ``wall_s``,
    ``io_s``, ``compute_s`` and the step-time percentiles.
    """

    def __init__(
        self,
        host: PhaseHost,
        kind: str,
        name: str,
        index: int,
        warmup_steps: int = 0,
        progress: bool = False,
    ) -> None:
        self._owner = host  # the Run's side of the Run <-> Phase interface (perfkit.run._host)
        self._control = PhaseControl(
            self,
            self._finish,
            self._drain_rows,
            self._resolve,
            self._pause,
            self._resume,
            self._running_step,
        )
        #: The Run this phase belongs to.
        self.run = host.run
        self.kind = kind
        self.name = name
        self.index = index
        self.warmup_steps = warmup_steps
        self.progress = progress
        # Finished steps, warm-up included (the loop raises it after writing each one's row):
        # the next step's index.
        self._step_count = 0
        # Seconds not in the backlog's rows: IO outside steps and the waits ending a loop;
        # host compute windows outside steps, and every device window once resolved.
        self._io_s = 0.0
        self._compute_s = 0.0
        self.start_t = math.nan
        self.end_t = math.nan
        self.energy_j: float | None = None
        self.devices: list[DevicePower] = []  # per device, set by the run when the phase ends
        self._clock: Clock = self.run.clock
        self._timer: WindowTimer = self.run.timer
        self._state = "new"
        # Per-step state: the implicit window's start; the step's index is self._step_count, the
        # compute() window knows whether a step runs and sums its IO and compute windows.
        self._host = type(self._timer) is HostTimer
        self._implicit_start: Any = None
        self._implicit_windows: list[tuple[Any, Any]] = []
        # Compute windows waiting for the device: (step, start mark, end mark).
        self._pending: deque[tuple[int, Any, Any]] = deque()
        self._compute_by_step: dict[int, float] = {}
        # Finished steps waiting for the next flush (and, on a device, for their compute
        # time), allocated when the first loop starts; the row of a step that a loop was left
        # in is written but only counts (self.steps) once the phase ends normally.
        self._backlog: StepBacklog | None = None
        self._tentative = False
        self.ordinal = -1  # position among the run's phases on this rank, set when entered
        self._loop: weakref.ReferenceType[Generator[Any, None, None]] | None = None
        self._rank_figures: dict[int, PhaseTotals] | None = None
        self._token_counter: int | Callable[[Any], int] = 0
        self._tokens_from = "none"
        self._counted_from = "none"  # how an earlier loop of the phase counted its tokens
        self._io = IOWindow(self._begin_io, self._end_io, self._clock)
        self._compute = ComputeWindow(
            self._refuse_compute, self._add_window, self._timer.mark, self._host
        )
        # Pauses while phases of other kinds run inside this one: their seconds so far, the
        # running pause's start, the windows to reopen when it ends, the energy before it.
        self._paused_s = 0.0
        self._pause_t: float | None = None
        self._reopen = (False, False)  # (io window, compute window)
        self._energy_before: float | None = None

    # -- lifetime ------------------------------------------------------------------------
    def __enter__(self) -> Phase:
        if self._state != "new":
            raise RunError(f"phase {self.name!r} was already used; start a new run.phase(...)")
        self.start_t = self.run.elapsed()
        self.ordinal = self._owner.begin_phase(self._control)
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

    def end(self, *, drop_open_step: bool = False) -> None:
        """End the phase now, as leaving its ``with`` block without an error does (for code
        that cannot hold the block open, such as a trainer callback); ``drop_open_step``: the
        step a loop was left in was no batch and does not count. Does nothing unless running."""
        self._finish(failed=False, drop_left=drop_open_step)

    def _finish(self, failed: bool, drop_left: bool = False) -> None:
        """End the phase; ``failed``: it raised. The step a loop was left in counts unless the
        phase failed or ``drop_left`` (a trainer's callbacks knew it was no batch)."""
        if self._state != "active":
            return
        loop = self._loop() if self._loop is not None else None
        if loop is not None:
            loop.close()
        tentative, self._tentative = self._tentative, False
        drop = tentative and (failed or drop_left)
        if tentative and not drop:
            self._step_count += 1
        if self._pending:
            self._timer.synchronize()  # the one sync of the phase
        self._resolve()
        if drop:  # the half-done step that raised (or was no batch) does not count
            seconds = self._compute_by_step.pop(self._step_count, 0.0)
            if self._step_count >= self.warmup_steps:
                self._compute_s -= seconds
        self.end_t = self.run.elapsed()
        self.energy_j = _add_energy(self._energy_before, self._owner.phase_energy_j())
        self._state = "ended"
        self._compute.active = False
        try:
            if not failed:
                self._rank_figures = self._owner.gather_figures(self._figures())
        finally:
            self._owner.end_phase(self._control)
        # Last: under a warnings filter "error" this raises, once the phase has ended whole.
        if not failed and 0 < self._step_count <= self.warmup_steps:
            warn(
                f"phase {self.name!r} ran {self._step_count} steps, all of them warm-up "
                f"(warmup_steps={self.warmup_steps}): it has no steady-state figures; lower "
                "warmup_steps or run more steps"
            )

    def _figures(self) -> PhaseTotals:
        tokens, warmup_tokens = self._token_totals()
        return PhaseTotals(
            kind=self.kind,
            samples=self.samples,
            steps=self.steps,
            wall_s=self.wall_s,
            io_s=self.io_s,
            compute_s=self.compute_s,
            start_t=self.start_t,
            end_t=self.end_t if self._state == "ended" else self.run.elapsed(),
            energy_j=self.energy_j,
            warmup_steps=min(self._step_count, self.warmup_steps),
            warmup_samples=self.warmup_samples,
            warmup_s=self.warmup_s,
            tokens=tokens,
            warmup_tokens=warmup_tokens,
        )

    def figures_by_rank(self) -> dict[int, PhaseTotals]:
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
    def steps(self) -> int:
        """Finished steps, warm-up steps aside."""
        return self._step_count - min(self._step_count, self.warmup_steps)

    @property
    def samples(self) -> int:
        """Samples of the finished steps, warm-up steps aside."""
        return self._totals().samples

    @property
    def tokens(self) -> int:
        """Tokens of the finished steps, warm-up steps aside (0 where none were counted)."""
        return self._totals().tokens

    def _token_totals(self) -> tuple[int | None, int | None]:
        """(tokens, warm-up tokens) of the finished steps; None where none were counted (the
        batches held no token ids) or, for the warm-up's, there was no warm-up."""
        if self.tokens_from == "none":
            return None, None
        totals = self._totals()
        return totals.tokens, (
            totals.warmup_tokens if self.warmup_steps and self._step_count else None
        )

    @property
    def tokens_from(self) -> str:
        """How the tokens were counted: "attention_mask" (real tokens), "input_ids" (padded),
        "given" (an int per batch), "callable" or "none" (see :meth:`iterate`)."""
        source = str(getattr(self._token_counter, "source", self._tokens_from))
        return self._counted_from if source == "none" else source  # a later loop counted none

    @property
    def warmup_samples(self) -> int:
        """Samples of the finished warm-up steps."""
        return self._totals().warmup_samples

    @property
    def warmup_s(self) -> float:
        """Wall seconds of the finished warm-up steps."""
        return self._totals().warmup_s

    @property
    def io_s(self) -> float:
        """IO seconds: waits for data and io() windows, in steps and outside them."""
        return self._io_s + self._totals().io_s

    @property
    def compute_s(self) -> float:
        """Compute seconds (on a device, of the windows resolved so far)."""
        return self._compute_s + (self._totals().compute_s if self._host else 0.0)

    def _totals(self) -> StepTotals:
        """The sums over the rows of every finished step (see :class:`StepTotals`)."""
        backlog = self._backlog
        if backlog is None:
            return StepTotals(0, 0.0, 0.0, 0, 0.0, 0, 0)
        with self.run.flush_lock:
            samples, io, compute, warm_samples, warm_s, tokens, warm_tokens = (
                backlog.pending_totals(self._step_count)
            )
            return StepTotals(
                samples=backlog.samples_total + samples,
                io_s=backlog.io_total + io,
                compute_s=backlog.compute_total + compute,
                warmup_samples=backlog.warmup_samples_total + warm_samples,
                warmup_s=backlog.warmup_wall_total + warm_s,
                tokens=backlog.tokens_total + tokens,
                warmup_tokens=backlog.warmup_tokens_total + warm_tokens,
            )

    def _walls(self) -> array[float]:
        """Every finished step's wall time (s)."""
        backlog = self._backlog
        if backlog is None:
            return array("d")
        with self.run.flush_lock:
            return backlog.walls + backlog.pending_walls(self._step_count)

    @property
    def wall_s(self) -> float:
        """Wall time of the phase in seconds (so far, while it runs), warm-up steps and pauses
        (:attr:`paused_s`) aside."""
        end = self.end_t if self._state == "ended" else self.run.elapsed()
        return end - self.start_t - self.warmup_s - self.paused_s

    @property
    def paused_s(self) -> float:
        """Seconds this phase was paused while phases of other kinds ran inside it (an
        evaluation inside a training epoch): left out of its wall, IO and compute seconds and
        of the wall time of the step they fell in."""
        running = 0.0 if self._pause_t is None else self._clock() - self._pause_t
        return self._paused_s + running

    def _pause(self) -> None:
        """A phase of another kind starts inside this one (PhaseHost.begin_phase): stop this phase's
        clock. Its open io() and compute() windows are cut here and go on at _resume."""
        t = self._clock()
        window, io = self._compute, self._io
        reopen_io, reopen_compute = io.depth > 0 and io.counted, window.open
        if reopen_compute:
            window.__exit__(None, None, None)
        if reopen_io:
            self._end_io(t - io.start, resume=False)
        elif not self._host and window.in_step:
            self._end_implicit_window()
        self._reopen = (reopen_io, reopen_compute)
        self._energy_before = _add_energy(self._energy_before, self._owner.phase_energy_j())
        self._pause_t = t

    def _resume(self) -> None:
        """The phase that paused this one ended: this phase's clock goes on."""
        if self._pause_t is None:
            return
        t = self._clock()
        seconds, self._pause_t = t - self._pause_t, None
        self._paused_s += seconds
        window = self._compute
        loop = self._loop() if self._loop is not None else None
        backlog = self._backlog
        # in the loop's next(), waiting for data: a step's IO
        in_wait = loop is not None and bool(getattr(loop, "gi_running", False))
        if backlog is not None and (window.in_step or in_wait):
            row = self._step_count
            backlog.paused[row] = backlog.paused.get(row, 0.0) + seconds
            if in_wait:
                backlog.paused_io[row] = backlog.paused_io.get(row, 0.0) + seconds
        reopen_io, reopen_compute = self._reopen
        if reopen_io:
            self._io.start = t
        elif not self._host and window.in_step:
            self._implicit_start = self._timer.mark()
        if reopen_compute:
            window.__enter__()

    def iterate(
        self,
        iterable: Iterable[Any],
        *,
        samples: int | Callable[[Any], int] | None = None,
        tokens: int | Callable[[Any], int] | None = None,
    ) -> Iterator[Any]:
        """Yield the batches of ``iterable``, timing each step.

        Time blocked in ``next()`` is IO, and so is time in the body's :meth:`io` windows; the
        rest of the loop body is compute - unless the body marks compute windows with
        :meth:`compute`, which then count alone for that step.
        ``samples``: an int per batch, or a callable batch -> int; by default counted from the
        batch (:func:`count_samples`). ``tokens``: the same for tokens, counted when the step's
        body ends (a callable may count what the body saw); by default from a dict batch's
        ``attention_mask`` on the host (real tokens) or else its ``input_ids`` (padded tokens),
        none for other batches - :attr:`tokens_from` says which.

        Returns a one-pass iterator; when ``iterable`` has a length, so does the iterator (for
        ``tqdm(...)`` and torchvision's ``MetricLogger.log_every``). With the phase's
        ``progress`` on, a tqdm bar counts the steps; its own time falls between steps, in
        the phase's wall time but in no step.
        """
        self._check_active("iterate()")
        try:
            iterator = iter(iterable)
        except TypeError:
            raise TypeError(
                "iterate(iterable) needs an iterable (a DataLoader, a list, a generator), "
                f"got {type(iterable).__name__}"
            ) from None
        earlier = self._loop() if self._loop is not None else None
        if earlier is not None:  # a new loop ends the one before (its step counts)
            earlier.close()
        if self._tentative:  # an earlier loop of this phase was left by break
            self._step_count += 1
            self._tentative = False
        if self._backlog is None:
            self._backlog = StepBacklog(
                BACKLOG_STEPS, self._host, self.warmup_steps, self._owner.take_columns()
            )
        length = length_of(iterable)
        bar = progress_bar(self.name, length) if self.progress else None
        self._counted_from = self.tokens_from  # the loops before this one, their tokens kept
        self._token_counter, self._tokens_from = token_counter(tokens)
        loop = self._steps(self._backlog, iterator, sample_counter(samples), bar)
        self._loop = weakref.ref(loop)
        return loop if length is None else SizedSteps(loop, length)

    def io(self) -> IOWindow:
        """Context manager marking host-side IO inside a step (host-to-device copy, decoding).

        Nested ``io()`` windows count once (the outermost); an ``io()`` inside ``compute()``
        counts as compute."""
        return self._io

    def compute(self) -> ComputeWindow:
        """Context manager marking a compute window; once used, only marked windows count."""
        return self._compute

    # -- step loop -----------------------------------------------------------------------
    def _steps(
        self, backlog: StepBacklog, iterator: Iterator[Any], samples: SampleCounter, bar: Any
    ) -> Generator[Any, None, None]:
        # Step k: from step k-1's end (t0) to its body's end (t2), IO until next() returns (t1).
        # Per step: slot stores, window flags; calls: clock, counts, iterator (loop_cost.py).
        clock, host, window = self._clock, self._host, self._compute
        ends, ios, computes, counts, token_counts = backlog.columns()
        n, count = fixed_or_counter(samples)  # a fixed count: n each step, count None
        k, count_tokens = fixed_or_counter(self._token_counter)  # k written at each limit
        step = limit = self._step_count  # the first step's slot is set at a limit like any
        t0 = backlog.starts[step] = clock()
        for batch in iterator:
            t1 = clock()
            window.in_step = True
            if not host:
                self._implicit_start = self._timer.mark()
            if count is not None:
                n = count(batch)
                if type(n) is not int or not 0 <= n <= MAX_SAMPLES:
                    n = self._as_count(n)
            left = False
            try:
                yield batch
            except GeneratorExit:  # the loop was left: break, or an exception in the body
                left = True
            if count_tokens is not None:
                k = self._count_tokens(count_tokens, batch)
            t2 = clock()
            window.in_step = False
            if step == limit:
                if getattr(count_tokens, "off", False):  # the first batch held no token ids
                    count_tokens = None
                limit = self._make_room(step, k if count_tokens is None else None)
                slot = step % backlog.capacity
            ends[slot] = t2
            counts[slot] = n
            if count_tokens is not None:
                token_counts[slot] = k
            ios[slot] = t1 - t0
            explicit = False
            if window.marked:  # io() or compute() windows closed in this step: take, reset
                ios[slot] += window.io_s
                explicit, window.marked, window.io_s, window.count = window.count > 0, False, 0.0, 0
                if explicit and host:
                    computes[slot], window.seconds = window.seconds, 0.0
            if not host:
                self._end_device_step(step, explicit)
            if left:  # the step counts only if the phase then ends normally
                self._tentative = True
                break
            step += 1
            slot += 1
            self._step_count = step
            t0 = t2 if bar is None else self._bar_step(bar, step)
        else:  # the last wait for data is IO too (less a pause in it: that row never came)
            backlog.paused.pop(step, None)
            self._io_s += clock() - t0 - backlog.paused_io.pop(step, 0.0)
        if bar is not None:
            bar.close()

    def _bar_step(self, bar: Any, step: int) -> float:
        """Count a step on the progress bar; returns the next step's start (after the bar's
        update, which falls in no step)."""
        bar.update()
        assert self._backlog is not None
        t0 = self._backlog.starts[step] = self._clock()
        return t0

    def _as_count(self, value: Any, what: str = "samples") -> int:
        """A samples (tokens) callable's result as an int (a numpy int, a 0-d tensor, an
        integral float); anything else (NaN, a negative number, a string) counts 0 and is
        recorded once in the summary's faults."""
        count = as_sample_count(value)
        if count is not None:
            return count
        self._owner.fault(
            f"phase {self.name!r}: the {what} callable returned {value!r:.40} (expected a "
            f"non-negative int); counted as 0 {what}"
        )
        return 0

    def _count_tokens(self, count: Callable[[Any], int], batch: Any) -> int:
        """The tokens of a step's batch; a counter that raises, or returns no count, counts 0
        (a fault in the summary), never an error in the user's loop."""
        try:
            k = count(batch)
        except Exception as err:
            self._owner.fault(
                f"phase {self.name!r}: counting tokens raised {type(err).__name__}: {err}; "
                "counted as 0 tokens"
            )
            return 0
        return k if type(k) is int and 0 <= k <= MAX_SAMPLES else self._as_count(k, "tokens")

    def _make_room(self, step: int, tokens: int | None) -> int:
        """Before writing ``step``'s row: make sure its slot holds no undrained row - a full
        ring waits for the flusher to write it (PhaseHost.steps_waiting) - and return the next
        step to check at (the ring's wrap, or its first slot still undrained, whichever comes
        first). ``tokens``: the tokens of every step until then (a loop that counts none, or
        the same each step), written here at once; None: the loop writes each step's."""
        backlog = self._backlog
        assert backlog is not None
        capacity = backlog.capacity
        if step - backlog.drained >= capacity:
            self._owner.steps_waiting(step - backlog.drained)
            if step - backlog.drained >= capacity and self._pending:
                self._timer.synchronize()  # a device 'capacity' steps behind: resolve them
                self._resolve()
                self._owner.steps_waiting(step - backlog.drained)
        limit = max(min(backlog.drained + capacity, (step // capacity + 1) * capacity), step + 1)
        if tokens is not None:
            backlog.fill_tokens(step, limit, tokens)
        return limit

    def _end_device_step(self, step: int, explicit: bool) -> None:
        """On a device, a step's end: queue its implicit windows (or drop them, when it marked
        explicit ones) and resolve the windows the device has reached."""
        self._close_device_windows(step, explicit)
        if self._pending:
            self._resolve()

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

    @property
    def in_step(self) -> bool:
        """True while a step of iterate() runs (its loop body)."""
        return self._compute.in_step

    def _running_step(self) -> int | None:
        return self._step_count if self.in_step else None

    def _end_implicit_window(self) -> None:
        if self._implicit_start is not None:
            self._implicit_windows.append((self._implicit_start, self._timer.mark()))
            self._implicit_start = None

    def _begin_io(self) -> bool:
        self._check_active("io()")
        if self._compute.open:  # inside compute(): the window's time, counted once as compute
            return False
        # On a device the implicit compute window pauses while the step does IO; on the host,
        # IO seconds are subtracted from the body when the step closes.
        if self.in_step and not self._host:
            self._end_implicit_window()
        return True

    def _end_io(self, seconds: float, resume: bool = True) -> None:
        window = self._compute
        if not window.in_step:
            self._io_s += seconds
            return
        window.io_s += seconds
        window.marked = True
        if not self._host and resume:  # the implicit compute window goes on after the IO
            self._implicit_start = self._timer.mark()

    def _add_window(self, start: Any, end: Any) -> None:
        """An explicit compute window off the host's per-step path: on the host (outside a
        step) it counts at once; on a device it counts when resolved."""
        self._check_active("compute()")  # a window kept past its phase's end
        if self._host:
            self._compute_s += end - start
            return
        self._pending.append((self._step_count if self.in_step else _NO_STEP, start, end))

    def _resolve(self) -> None:
        """Turn every window whose end the device has reached into seconds (never blocks).

        Holds the run's flush lock, so a flush sees each window either pending or resolved,
        never in between."""
        timer = self._timer
        pending = self._pending
        by_step = self._compute_by_step
        warmup = self.warmup_steps
        with self.run.flush_lock:
            while pending and timer.ready(pending[0][2]):
                step, start, end = pending.popleft()
                seconds = timer.elapsed_s(start, end)
                timer.release(start)
                timer.release(end)
                if step == _NO_STEP or step >= warmup:  # a warm-up step's goes to its row only
                    self._compute_s += seconds
                if step != _NO_STEP:
                    by_step[step] = by_step.get(step, 0.0) + seconds

    def _drain_rows(self) -> memoryview:
        """steps.bin rows of the finished steps whose compute time is known; the caller holds
        the run's flush lock (any thread). Once the phase ended, its backlog's memory goes."""
        backlog = self._backlog
        if backlog is None:
            return memoryview(b"")
        upto = self._step_count  # rows finished from here on wait for the next flush
        if not self._host:
            steps = [step for step, _, _ in self._pending if step != _NO_STEP]
            upto = min(upto, steps[0]) if steps else upto
            by_step = self._compute_by_step
            for step in range(backlog.drained, upto):
                backlog.compute[step % backlog.capacity] = by_step.pop(step, 0.0)
        data = backlog.drain(upto, self.ordinal, self.run.t0)
        if self._state == "ended" and backlog.drained == self._step_count and backlog.capacity:
            self._owner.keep_columns(backlog.release())
        return data

    # -- results -------------------------------------------------------------------------
    def result(self) -> PhaseOverRanks:
        """The phase as the summary sees it (see :class:`perfkit.summary.PhaseOverRanks`)."""
        return PhaseOverRanks(
            self.name,
            self.index,
            self.run.rank,
            self.figures_by_rank(),
            self._walls(),
            self.devices,
            self.tokens_from,
        )

    def step_time_percentiles(self) -> dict[int, float]:
        """Step wall-time percentiles in seconds ({50: p50, 90: p90, 99: p99}); {} without steps."""
        return percentiles(self._walls())

    def stats(self) -> dict[str, Any]:
        """This phase's figures: samples, steps, wall / io / compute seconds, throughputs."""
        return phase_entry(self.result())


def _add_energy(before: float | None, since: float | None) -> float | None:
    """Joules of a phase's pieces between pauses; None when no piece has a reading."""
    if before is None or since is None:
        return since if before is None else before
    return before + since
