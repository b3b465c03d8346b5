"""Run and Phase: lifetime, timing, sample counting, summary and record writing.

A :class:`Run` spans one benchmark (a training job or an inference pass); inside it, phases of kind
``"train"``, ``"val"`` or ``"infer"`` wrap the loops. :meth:`Phase.iterate` wraps any iterable: the
time blocked in ``next()`` is IO, the loop body is compute, unless the user marks finer windows
with :meth:`Phase.io` and :meth:`Phase.compute`. The summary uses FlagPerf's metric names
(../shared/flagperf-metrics.md):

========== =================================================================================
metric     definition
========== =================================================================================
e2e_time   run start (or process start, ``e2e_from="process"``) to run end, seconds
p_whole    train samples / (first train phase start to end of the last train/val phase), 1/s
p_train    train samples / sum of train phase wall times (evaluation excluded), 1/s
p_core     train samples / sum of train compute windows (IO excluded), 1/s
p_val_*    val samples / val wall time (whole) or val compute time (core), 1/s
p_infer_*  infer samples / infer wall time (whole) or infer compute time (core), 1/s
========== =================================================================================

Compute windows on an accelerator are timed with device events resolved lazily (no sync per step,
one at phase end); on the CPU with the host clock.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import signal
import socket
import statistics
import sys
import threading
import time
import weakref
from array import array
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

from perfkit import distributed
from perfkit.records import (
    META_FILE,
    RECORDS_FILE,
    SCHEMA_VERSION,
    SUMMARY_FILE,
    RecordWriter,
    make_record,
    write_json_atomic,
)
from perfkit.timing import Clock, EventTimer, HostTimer, SyncingHostTimer, WindowTimer, host_clock
from perfkit.timing.window import ComputeWindow, window_class

PHASE_KINDS = ("train", "val", "infer")
SYNC_MODES = ("phase", "step")
E2E_FROM = ("run", "process")

#: Summary key prefixes of each phase kind's throughput, as the seeds name them.
THROUGHPUT_NAMES = {
    "train": ("p_train", "p_core"),
    "val": ("p_val_whole", "p_val_core"),
    "infer": ("p_infer_whole", "p_infer_core"),
}
_PERCENTILES = (50, 90, 99)
_NO_STEP = -1  # compute windows outside iterate() belong to the phase, not to a step


class PhaseFigures(NamedTuple):
    """One rank's totals for one phase (seconds on that rank's clock, samples)."""

    kind: str
    samples: int
    steps: int
    wall_s: float
    io_s: float
    compute_s: float
    start_t: float
    end_t: float
    energy_j: float | None = None  # device energy over the phase (node-wide probes), joules


#: A finished step: (step, t since run start, wall s, io s, samples, compute s or None while
#: its device windows are unresolved).
_Row = tuple[int, float, float, float, int, "float | None"]


def _step_lines_template(run_id: str, rank: int, phase: str) -> str:
    """%-template of one step's four JSON lines (step_time, io_time, compute_time, samples).

    Filled by ``str.format(step, t_text, wall, io, compute, samples)``, so each number is
    formatted once. Seconds are written with 9 decimals (1 ns), finer than any clock used here;
    the optional fields device and note are left out (readers fill them with null).
    """
    prefix = json.dumps({"run_id": run_id, "rank": rank, "phase": phase}, separators=(",", ":"))
    head = prefix[:-1].replace("{", "{{").replace("}", "}}") + ',"step":{0},"name":'
    tail = ',"t":{1}}}'
    return "\n".join(
        [
            f'{head}"step_time","value":{{2:.9f}},"unit":"s"{tail}',
            f'{head}"io_time","value":{{3:.9f}},"unit":"s"{tail}',
            f'{head}"compute_time","value":{{4:.9f}},"unit":"s"{tail}',
            f'{head}"samples","value":{{5}},"unit":"samples"{tail}',
        ]
    )


_F = TypeVar("_F", bound=Callable[..., Any])
_active_run: Run | None = None


class RunError(RuntimeError):
    """A Run or Phase used in a way that cannot give honest numbers."""


def active_run() -> Run | None:
    """The Run currently started in this process, or None."""
    return _active_run


# --------------------------------------------------------------------------------------------
# Sample counting


def count_samples(batch: Any) -> int:
    """Samples in one batch: the first tensor's leading dimension, or len of a list of images.

    ``(images, labels)`` -> ``len(images)`` along dim 0; ``(list_of_image_tensors, targets)``
    (torchvision detection) -> the list's length; a dict -> its first tensor value.
    """
    first = batch
    if isinstance(batch, Mapping):
        first = next((v for v in batch.values() if hasattr(v, "shape")), None)
    elif isinstance(batch, (list, tuple)) and batch:
        first = batch[0]
        if isinstance(first, (list, tuple)):
            return len(first)
    shape = getattr(first, "shape", None)
    if shape is not None and len(shape) > 0:
        return int(shape[0])
    raise RunError(
        f"cannot count the samples of a batch of type {type(batch).__name__}: pass "
        "iterate(..., samples=N) with an int, or a callable batch -> int"
    )


def _sample_counter(
    samples: int | Callable[[Any], int] | None,
) -> int | Callable[[Any], int]:
    """The samples of every batch (an int), or the callable that counts them per batch."""
    if samples is None:
        return count_samples
    if callable(samples):
        return samples
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
        raise ValueError(
            f"samples must be a non-negative int or a callable batch -> int, got {samples!r}"
        )
    return samples


# --------------------------------------------------------------------------------------------
# Windows


class _IOWindow:
    """``with phase.io():`` - host-timed IO inside a step (for example a host-to-device copy)."""

    __slots__ = ("_phase", "_start")

    def __init__(self, phase: Phase) -> None:
        self._phase = phase
        self._start = 0.0

    def __enter__(self) -> _IOWindow:
        self._phase._check_active("io()")
        self._phase._begin_io()
        self._start = self._phase._clock()
        return self

    def __exit__(self, *exc: object) -> None:
        self._phase._end_io(self._phase._clock() - self._start)


# --------------------------------------------------------------------------------------------
# Phase


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
        self._clock: Clock = run._clock
        self._timer: WindowTimer = run._timer
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
        # Finished steps waiting for the next flush (and, on a device, for their compute time).
        self._rows: deque[_Row] = deque()
        self._tentative: _Row | None = None
        self._loop: weakref.ReferenceType[Generator[Any, None, None]] | None = None
        self._rank_figures: dict[int, PhaseFigures] | None = None
        self._io = _IOWindow(self)
        self._compute = window_class(self, self._timer.mark, self._host)
        self._lines_template = _step_lines_template(run.run_id, run.rank, name)

    # -- lifetime ------------------------------------------------------------------------
    def __enter__(self) -> Phase:
        if self._state != "new":
            raise RunError(f"phase {self.name!r} was already used; start a new run.phase(...)")
        self.run._begin_phase(self)
        if self.run._memory is not None:
            self.run._memory.mark()
        self._state = "active"
        self._compute.active = True
        self.start_t = self.run._elapsed()
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
            self.compute_s -= self._compute_by_step.pop(tentative[0], 0.0)
        self.end_t = self.run._elapsed()
        if self.run._memory is not None:
            self.energy_j = self.run._memory.energy_delta_j()
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
            self.end_t if self._state == "ended" else self.run._elapsed(),
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
        end = self.end_t if self._state == "ended" else self.run._elapsed()
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
        loop = self._steps(iterator, _sample_counter(samples))
        self._loop = weakref.ref(loop)
        return loop

    def io(self) -> _IOWindow:
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
        run_t0 = self.run._t0
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
            compute: float | None = None  # on a device, known when its windows resolve
            if host:
                compute = t2 - t0 - self._step_io if explicit_s is None else explicit_s
            else:
                self._close_device_windows(step, explicit=explicit_s is not None)
            row = (step, t2 - run_t0, t2 - t0, self._step_io, n, compute)
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
        _step, _t, wall, io, n, compute = row
        self.steps += 1
        self.samples += n
        self.io_s += io
        if compute is not None:
            self.compute_s += compute
        self._step_walls.append(wall)
        self._rows.append(row)
        if self._pending:
            self._resolve()

    @property
    def _in_step(self) -> bool:
        """True while a step of iterate() runs (its loop body)."""
        return self._compute.in_step

    def _end_implicit_window(self) -> None:
        if self._implicit_start is not None:
            self._implicit_windows.append((self._implicit_start, self._timer.mark()))
            self._implicit_start = None

    def _begin_io(self) -> None:
        # On a device the implicit compute window pauses while the step does IO; on the host,
        # IO seconds are subtracted from the body when the step closes.
        if self._in_step and not self._host:
            self._end_implicit_window()

    def _end_io(self, seconds: float) -> None:
        if not self._in_step:
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
        self._pending.append((self.steps if self._in_step else _NO_STEP, start, end))

    def _resolve(self) -> None:
        """Turn every window whose end the device has reached into seconds (never blocks).

        Holds the run's flush lock, so a flush sees each window either pending or resolved,
        never in between."""
        timer = self._timer
        pending = self._pending
        by_step = self._compute_by_step
        with self.run._flush_lock:
            while pending and timer.ready(pending[0][2]):
                step, start, end = pending.popleft()
                seconds = timer.elapsed_s(start, end)
                timer.release(start)
                timer.release(end)
                self.compute_s += seconds
                if step != _NO_STEP:
                    by_step[step] = by_step.get(step, 0.0) + seconds

    def _drain_lines(self) -> list[str]:
        """JSON lines of the finished steps whose compute time is known; the caller holds the
        run's flush lock (any thread)."""
        rows = self._rows
        count = len(rows)  # rows appended from here on wait for the next flush
        steps = [step for step, _, _ in self._pending if step != _NO_STEP]
        boundary = steps[0] if steps else math.inf
        template = self._lines_template
        by_step = self._compute_by_step
        lines = []
        for _ in range(count):
            if rows[0][0] >= boundary:
                break
            step, t, wall, io, n, compute = rows.popleft()
            if compute is None:
                compute = by_step.pop(step, 0.0)
            lines.append(template.format(step, f"{t:.9f}", wall, io, compute, n))
        return lines

    # -- results -------------------------------------------------------------------------
    def step_time_percentiles(self) -> dict[int, float]:
        """Step wall-time percentiles in seconds ({50: p50, 90: p90, 99: p99}); {} without steps."""
        return _percentiles(self._step_walls)

    def stats(self) -> dict[str, Any]:
        """This phase's figures: samples, steps, wall / io / compute seconds, throughputs."""
        wall = self.wall_s
        stats: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "index": self.index,
            "start_t": self.start_t,
            "end_t": self.end_t,
            "samples": self.samples,
            "steps": self.steps,
            "wall_s": wall,
            "io_s": self.io_s,
            "compute_s": self.compute_s,
        }
        stats.update(rate_fields("", self.samples, wall, self.io_s, self.compute_s))
        if self.energy_j is not None:
            stats["energy_j"] = self.energy_j
            if self.samples:
                stats["energy_per_sample_j"] = self.energy_j / self.samples
        for q, value in self.step_time_percentiles().items():
            stats[f"step_time_p{q}_s"] = value
        return stats


def _percentiles(values: array[float]) -> dict[int, float]:
    if not values:
        return {}
    import numpy as np

    data = np.frombuffer(values, dtype=np.float64)
    return {
        q: float(v) for q, v in zip(_PERCENTILES, np.percentile(data, _PERCENTILES), strict=True)
    }


def rate_fields(
    prefix: str, samples: int, wall: float, io: float, compute: float
) -> dict[str, float]:
    """io_fraction (IO seconds / wall seconds) and throughputs (samples/s), only where the
    denominators are positive."""
    fields: dict[str, float] = {}
    if wall > 0:
        fields[f"{prefix}io_fraction"] = io / wall
        fields[f"{prefix}throughput_whole"] = samples / wall
    if compute > 0:
        fields[f"{prefix}throughput_core"] = samples / compute
    return fields


# --------------------------------------------------------------------------------------------
# Run


class Run:
    """One benchmark run: a context manager (or ``start()`` / ``stop()``) that owns the records.

    Args:
        name: run name; the run directory is ``<out_dir>/<name>-<UTC timestamp>-<pid>``.
        out_dir: folder for run directories (created if missing).
        config: JSON-serialisable settings written into the metadata (precision, bs, ...).
        e2e_from: ``"run"`` (default) or ``"process"`` - start e2e_time at process start, as
            FlagPerf does.
        device: ``"auto"`` (CUDA, then any torch accelerator, else CPU), a device string such as
            ``"cuda:1"``, or a ``torch.device``.
        sync: ``"phase"`` (default: device events, one sync at phase end) or ``"step"`` (sync the
            device at every window edge and read the host clock - FlagPerf's ResNet-50 habit).
        clock: host clock returning seconds (injectable for tests).
        device_timer: window timer (injectable for tests; see :mod:`perfkit.timing`).
        flush_interval_s: records reach the disk at least this often, seconds.
        probes: ``"auto"`` (NVML or the vendor's tool, the torch allocator, the host),
            ``None`` for none, or names / :class:`perfkit.probes.Probe` instances; a background
            thread samples them every ``sample_interval`` seconds into the records. On the CPU
            the device's memory is the host's RAM: ``mem`` is then the host probe's
            system memory used / installed. A probe that
            fails is recorded once (``probe_error``) and disabled; the run goes on.
        flops_per_sample, peak_flops, mfu_convention: see :meth:`set_flops`; the dtype is the
            config's "precision" (default "fp32").
        dist_timeout_s: in a torch.distributed job, how long perfkit's own collectives (run id,
            phase figures) wait for every rank before failing with a clear error, seconds.

    In a torch.distributed job (torchrun), initialise the process group before starting the
    Run: every rank writes its own records (``records-rank<N>.jsonl``), phase figures are
    combined over ranks at each phase end, and rank 0 writes meta.json and summary.json.
    """

    def __init__(
        self,
        name: str,
        out_dir: str | os.PathLike[str] = "runs",
        config: Mapping[str, Any] | None = None,
        *,
        e2e_from: str = "run",
        device: Any = "auto",
        sync: str = "phase",
        clock: Clock | None = None,
        device_timer: WindowTimer | None = None,
        flush_interval_s: float = 2.0,
        dist_timeout_s: float = 300.0,
        flops_per_sample: float | None = None,
        peak_flops: float | None = None,
        mfu_convention: str = "perfkit",
        probes: Any = "auto",
        sample_interval: float = 0.5,
    ) -> None:
        if not isinstance(name, str) or not name or any(c in name for c in "/\\\0"):
            raise ValueError(f"name must be a non-empty string without path separators: {name!r}")
        if e2e_from not in E2E_FROM:
            raise ValueError(f"e2e_from must be one of {E2E_FROM}, got {e2e_from!r}")
        if sync not in SYNC_MODES:
            raise ValueError(f"sync must be one of {SYNC_MODES}, got {sync!r}")
        if not (isinstance(dist_timeout_s, (int, float)) and dist_timeout_s > 0):
            raise ValueError(f"dist_timeout_s must be a positive number, got {dist_timeout_s!r}")
        if not (isinstance(flush_interval_s, (int, float)) and flush_interval_s > 0):
            raise ValueError(
                f"flush_interval_s must be a positive number, got {flush_interval_s!r}"
            )
        self.name = name
        self.out_dir = Path(out_dir)
        self.config = _check_config(config)
        self.e2e_from = e2e_from
        self.sync = sync
        self.flush_interval_s = float(flush_interval_s)
        self.dist_timeout_s = float(dist_timeout_s)
        self._group: Any = None
        self._probe_spec = probes
        self.sample_interval = sample_interval
        self._sampler: Any = None
        self._memory: Any = None
        self.probe_errors: list[str] = []
        self._sigterm_installed = False
        self._device_arg = device
        self._clock: Clock = clock or host_clock
        self._injected_timer = device_timer
        self._timer: WindowTimer = device_timer or HostTimer(self._clock)
        self.rank = distributed.rank()
        self.world_size = distributed.world_size()
        self.run_id = ""
        self.run_dir: Path | None = None
        self.device = "cpu"
        self.status = "new"
        self.error: str | None = None
        self.logged: dict[str, float] = {}
        self.phases: list[Phase] = []
        self.meta: dict[str, Any] = {}
        self._active_phase: Phase | None = None
        self._writer: RecordWriter | None = None
        self._t0 = 0.0
        self._end_elapsed: float | None = None
        self._e2e_offset = 0.0
        self._flush_lock = threading.Lock()
        self._flusher: _Flusher | None = None
        self._phase_counts: dict[str, int] = {}
        self._final_summary: dict[str, Any] | None = None
        self._flops: dict[str, Any] | None = None
        if flops_per_sample is not None:
            self.set_flops(
                flops_per_sample,
                dtype=str(self.config.get("precision", "fp32")),
                convention=mfu_convention,
                peak_flops=peak_flops,
            )

    # -- lifetime ------------------------------------------------------------------------
    def __enter__(self) -> Run:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(exc)

    def start(self) -> Run:
        """Start the run: resolve the device, create the run directory, write the metadata."""
        global _active_run
        if self.status != "new":
            raise RunError(f"run {self.name!r} was already started; create a new Run")
        if _active_run is not None:
            raise RunError(
                f"run {self.name!r} started while run {_active_run.name!r} is active: runs do "
                "not nest; stop the first run, or use phases inside one run"
            )
        self.rank = distributed.rank()
        self.world_size = distributed.world_size()
        if self.world_size > 1 and not distributed.is_distributed():
            raise RunError(
                f"WORLD_SIZE={self.world_size} but torch.distributed is not initialised: call "
                "torch.distributed.init_process_group(...) before starting the Run"
            )
        self.device = _resolve_device(self._device_arg)
        probes = self._resolve_probes()
        if self._injected_timer is None:
            self._timer = _make_timer(self.device, self.sync, self._clock)
        started = datetime.now(timezone.utc)
        self.run_id = f"{self.name}-{started:%Y%m%d-%H%M%S}-{os.getpid()}"
        if self.world_size > 1:  # every rank writes into rank 0's run directory
            self._group = distributed.new_cpu_group(self.dist_timeout_s)
            self.run_id = self._all_gather(self.run_id, "the run start")[0]
        self.run_dir = _make_run_dir(self.out_dir, self.run_id)
        self._writer = RecordWriter(self.run_dir / _records_file(self.rank))
        self._t0 = self._clock()
        if self.e2e_from == "process":
            import psutil

            self._e2e_offset = max(0.0, time.time() - psutil.Process().create_time())
        self._flusher = _Flusher(self, self.flush_interval_s)
        self.meta = self._metadata(started)
        if self.rank == 0:
            write_json_atomic(self.run_dir / META_FILE, self.meta)
        self.status = "running"
        _active_run = self
        self._flusher.start()
        self._install_sigterm()
        if probes:
            self._sampler.start()
        return self

    def _resolve_probes(self) -> list[Any]:
        """This process's probes, checked before anything starts: device probes on one rank
        per node only (local rank 0)."""
        from perfkit.probes import MemoryTracker, Sampler, check_interval, resolve_probes

        check_interval(self.sample_interval)
        probes = resolve_probes(self._probe_spec)
        if distributed.local_rank() != 0:
            probes = [p for p in probes if p.kind != "device"]
        self._memory = MemoryTracker(include_host=self.device == "cpu")
        self._sampler = (
            Sampler(probes, self.sample_interval, self._on_sample, self._on_probe_error)
            if probes
            else None
        )
        return probes

    def _on_sample(self, sample: Any) -> None:
        """Sampler thread: one record per reported quantity, tagged with the active phase."""
        t = self._elapsed()
        phase = self._active_phase
        phase_name = phase.name if phase is not None else None
        for name, value, unit in sample.metrics():
            self._write(name, value, unit, t, phase=phase_name, device=sample.device)
        self._memory.update(sample)

    def _on_probe_error(self, probe: str, message: str) -> None:
        self.probe_errors.append(f"{probe}: {message}")
        self._write("probe_error", None, "", self._elapsed(), note=f"{probe}: {message}")

    def _install_sigterm(self) -> None:
        """Turn SIGTERM (what torchrun sends the other ranks when one fails) into SystemExit, so
        the run ends as failed with its records flushed - only where the handler is the default
        one and this is the main thread."""
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        ):
            signal.signal(signal.SIGTERM, _exit_on_signal)
            self._sigterm_installed = True

    def _all_gather(self, obj: Any, what: str) -> list[Any]:
        try:
            return distributed.all_gather_object(obj, self._group)
        except RuntimeError as err:
            raise RunError(
                f"rank {self.rank}: not every rank reached {what} within {self.dist_timeout_s:g} s "
                f"(dist_timeout_s): a rank has failed or stalled ({err})"
            ) from err

    def _gather_figures(self, figures: PhaseFigures) -> dict[int, PhaseFigures] | None:
        """Every rank's figures for a phase that just ended; None when not distributed."""
        if self._group is None:
            return None
        return dict(enumerate(self._all_gather(figures, "the end of a phase")))

    def stop(self, exc: BaseException | None = None) -> dict[str, Any]:
        """End the run; ``exc`` marks it failed. Writes summary.json atomically; returns it."""
        global _active_run
        if self.status != "running":
            if self._final_summary is not None:
                return self._final_summary
            raise RunError(f"run {self.name!r} was never started")
        failed = exc is not None
        try:
            if self._active_phase is not None:
                self._active_phase._finish(failed=failed)
        finally:
            self._end_elapsed = self._elapsed()
            self.status = "failed" if failed else "ok"
            if failed:
                self.error = f"{type(exc).__name__}: {exc}"
            _active_run = None
            if self._sigterm_installed:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
            assert self._flusher is not None and self._writer is not None
            if self._sampler is not None:
                self._sampler.stop()
            self._flusher.stop()
            self._final_summary = self.summary()
            assert self.run_dir is not None
            self._writer.close()
            if self.rank == 0:
                write_json_atomic(self.run_dir / SUMMARY_FILE, self._final_summary)
        return self._final_summary

    # -- phases --------------------------------------------------------------------------
    def phase(self, kind: str, name: str | None = None) -> Phase:
        """A new phase of ``kind`` ("train", "val" or "infer"); ``name`` defaults to the kind."""
        if kind not in PHASE_KINDS:
            raise ValueError(f"phase kind must be one of {PHASE_KINDS}, got {kind!r}")
        if self.status != "running":
            state = "has not started" if self.status == "new" else "has ended"
            raise RunError(f"run.phase({kind!r}) called on run {self.name!r}, which {state}")
        index = self._phase_counts.get(kind, 0)
        self._phase_counts[kind] = index + 1
        return Phase(self, kind, name or kind, index)

    def _begin_phase(self, phase: Phase) -> None:
        if self.status != "running":
            raise RunError(f"phase {phase.name!r} entered after run {self.name!r} ended")
        if self._active_phase is not None:
            raise RunError(
                f"phase {phase.name!r} started while phase {self._active_phase.name!r} is "
                "active: phases do not overlap; end one before starting the next"
            )
        self._active_phase = phase

    def _end_phase(self, phase: Phase) -> None:
        assert self._writer is not None
        with self._flush_lock:
            self._writer.write_lines(phase._drain_lines())
            self._active_phase = None
        self.phases.append(phase)
        stats = phase.stats()
        t = phase.end_t
        units = {"samples": "samples", "steps": "steps"}
        for key in ("wall_s", "io_s", "compute_s", "samples", "steps"):
            name = "phase_" + key.removesuffix("_s")
            self._write(name, stats[key], units.get(key, "s"), t, phase=phase.name)
        self.flush()

    # -- values --------------------------------------------------------------------------
    def set_flops(
        self,
        flops_per_sample: float,
        *,
        dtype: str,
        convention: str = "perfkit",
        peak_flops: float | None = None,
        tf32: bool | None = None,
    ) -> None:
        """Give the model's work per sample, so the summary reports MFU.

        ``flops_per_sample`` is in FLOPs (2 per multiply-add; for training, forward + backward,
        e.g. ``perfkit.flops.count(model, x, backward=True).flops / batch``). MFU uses the core
        throughput per device (p_core for training, else p_infer_core, else p_val_core) and the
        peak of this run's device for ``dtype`` from :func:`perfkit.flops.peak_flops`, or
        ``peak_flops`` (FLOP/s) when given. ``convention="flagperf"`` reproduces FlagPerf's
        ResNet-50 MFU, which counts one operation per multiply-add
        (see :func:`perfkit.flops.mfu`).
        """
        from perfkit.flops import CONVENTIONS, normalize_dtype

        if not (isinstance(flops_per_sample, (int, float)) and 0 < flops_per_sample < math.inf):
            raise ValueError(
                f"flops_per_sample must be a positive number of FLOPs, got {flops_per_sample!r}"
            )
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {tuple(CONVENTIONS)}, got {convention!r}")
        if peak_flops is not None and not (
            isinstance(peak_flops, (int, float)) and 0 < peak_flops < math.inf
        ):
            raise ValueError(f"peak_flops must be a positive number of FLOP/s, got {peak_flops!r}")
        normalize_dtype(dtype)  # raises ValueError naming dtype
        self._flops = {
            "flops_per_sample": float(flops_per_sample),
            "dtype": dtype,
            "convention": convention,
            "peak_flops": peak_flops,
            "tf32": tf32,
        }

    def _memory_fields(self) -> dict[str, Any]:
        """mem and friends; in a distributed run, the maximum over every device of every node
        (gathered when the run ends)."""
        if self._memory is None:
            return {}
        if self._group is None or self.status != "ok":
            return dict(self._memory.summary())
        from perfkit.probes import merge_memory_summaries

        return merge_memory_summaries(self._all_gather(self._memory.summary(), "the run end"))

    def _mfu_fields(self, summary: Mapping[str, Any]) -> dict[str, Any]:
        if self._flops is None:
            return {}
        core = next(
            (summary[k] for k in ("p_core", "p_infer_core", "p_val_core") if k in summary), None
        )
        if core is None:
            return {"mfu_note": "MFU not computed: no compute time was measured"}
        from perfkit.flops import mfu_summary

        flops = self._flops
        return mfu_summary(
            flops["flops_per_sample"],
            core / self.world_size,
            self.meta.get("device_name", ""),
            flops["dtype"],
            peak_flops=flops["peak_flops"],
            convention=flops["convention"],
            tf32=flops["tf32"],
        )

    def log(self, step: int | None = None, **values: float) -> None:
        """Record named values (mAP=0.35, acc=0.762, loss=...) in base units; the last value of
        each name appears in the summary. ``step`` ties them to a step of the active phase."""
        if self.status != "running":
            raise RunError(f"run.log() called on run {self.name!r}, which is not running")
        t = self._elapsed()
        phase = self._active_phase.name if self._active_phase else None
        for key, raw in values.items():
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise TypeError(
                    f"run.log({key}=...) needs a number (int, float or 0-d tensor), "
                    f"got {type(raw).__name__}"
                ) from None
            self.logged[key] = value
            self._write(key, value, "", t, phase=phase, step=step)

    def _write(
        self,
        name: str,
        value: float | None,
        unit: str,
        t: float,
        *,
        phase: str | None = None,
        step: int | None = None,
        device: str | None = None,
        note: str | None = None,
    ) -> None:
        assert self._writer is not None
        self._writer.write(
            make_record(
                self.run_id,
                self.rank,
                name,
                value,
                unit,
                t,
                phase=phase,
                step=step,
                device=device,
                note=note,
            )
        )

    def flush(self) -> None:
        """Write every finished step and queued record to disk now (any thread)."""
        writer = self._writer
        if writer is None:
            return
        phase = self._active_phase
        if phase is not None:
            phase._resolve()
        with self._flush_lock:
            if self._active_phase is not None:
                writer.write_lines(self._active_phase._drain_lines())
        writer.flush()

    def _elapsed(self) -> float:
        if self._end_elapsed is not None:
            return self._end_elapsed
        return self._clock() - self._t0

    # -- summary -------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Every metric of the run (seed names, base units), metadata and per-phase figures.

        Metrics without data are absent (no val phase: no p_val_*), never zero.
        """
        if self._final_summary is not None:
            return self._final_summary
        summary: dict[str, Any] = {
            "run_id": self.run_id,
            "name": self.name,
            "status": self.status,
            "e2e_time": self._elapsed() + self._e2e_offset,
        }
        if self.error is not None:
            summary["error"] = self.error
        if self._flusher is not None and self._flusher.error is not None:
            summary["flush_error"] = self._flusher.error
        phases = [*self.phases]
        if self._active_phase is not None:
            phases.append(self._active_phase)
        for kind in PHASE_KINDS:
            summary.update(_kind_metrics(kind, [p for p in phases if p.kind == kind]))
        whole = _whole_window(phases)
        if whole is not None and summary.get("train_samples"):
            summary["p_whole"] = summary["train_samples"] / whole
        summary.update(self._memory_fields())
        if self.probe_errors:
            summary["probe_errors"] = list(self.probe_errors)
        summary.update(self._mfu_fields(summary))
        summary.update(self.logged)
        summary["phases"] = [p.stats() for p in phases]
        summary["meta"] = self.meta
        return summary

    def _metadata(self, started: datetime) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            "name": self.name,
            "started_at": started.isoformat(),
            "perfkit_version": _package_version("perfkit"),
            "torch_version": _package_version("torch"),
            "python_version": platform.python_version(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "device": self.device,
            "device_name": _device_name(self.device),
            "rank": self.rank,
            "world_size": self.world_size,
            "layout": distributed.layout(),
            "config": self.config,
            "e2e_from": self.e2e_from,
            "sync": self.sync,
            "timer": type(self._timer).__name__,
        }


def _by_rank(phases: list[Phase]) -> dict[int, list[PhaseFigures]]:
    """Each rank's figures for ``phases`` (all ranks once gathered, else this rank's own)."""
    ranks: dict[int, list[PhaseFigures]] = {}
    for phase in phases:
        for rank, figures in phase.figures_by_rank().items():
            ranks.setdefault(rank, []).append(figures)
    return ranks


def _kind_metrics(kind: str, phases: list[Phase]) -> dict[str, Any]:
    """Totals and throughputs of one phase kind over all ranks: global samples over the
    slowest rank's seconds (FlagPerf uses rank 0's; the slowest rank bounds the job)."""
    if not phases:
        return {}
    ranks = _by_rank(phases)
    samples = sum(f.samples for figures in ranks.values() for f in figures)
    per_rank = {
        rank: (
            math.fsum(f.wall_s for f in figures),
            math.fsum(f.io_s for f in figures),
            math.fsum(f.compute_s for f in figures),
        )
        for rank, figures in ranks.items()
    }
    wall, io, compute = (max(values) for values in zip(*per_rank.values(), strict=True))
    out: dict[str, Any] = {
        f"{kind}_samples": samples,
        f"{kind}_steps": sum(f.steps for figures in ranks.values() for f in figures),
        f"{kind}_wall_s": wall,
        f"{kind}_io_s": io,
        f"{kind}_compute_s": compute,
    }
    rates = rate_fields(f"{kind}_", samples, wall, io, compute)
    whole_name, core_name = THROUGHPUT_NAMES[kind]
    for rate, name in (("whole", whole_name), ("core", core_name)):
        value = rates.pop(f"{kind}_throughput_{rate}", None)
        if value is not None:
            out[name] = value
            if len(ranks) > 1:
                out[f"{name}_per_device"] = value / len(ranks)
    out.update(rates)
    energies = [f.energy_j for figures in ranks.values() for f in figures if f.energy_j is not None]
    if energies and samples:
        out[f"{kind}_energy_j"] = math.fsum(energies)
        out[f"{kind}_energy_per_sample_j"] = math.fsum(energies) / samples
    if len(ranks) > 1:
        for index, label in ((0, "wall_s"), (2, "compute_s")):
            values = [v[index] for v in per_rank.values()]
            out[f"{kind}_{label}_min"] = min(values)
            out[f"{kind}_{label}_max"] = max(values)
            out[f"{kind}_{label}_std"] = statistics.pstdev(values)
    walls = array("d")
    for p in phases:
        walls.extend(p._step_walls)
    for q, value in _percentiles(walls).items():  # this rank's steps
        out[f"{kind}_step_time_p{q}_s"] = value
    return out


def _whole_window(phases: list[Phase]) -> float | None:
    """Seconds from the first train phase's start to the end of the last train/val phase, on
    the slowest rank (each rank's window on its own clock)."""
    windows = []
    for figures in _by_rank([p for p in phases if p.kind in ("train", "val")]).values():
        train_starts = [f.start_t for f in figures if f.kind == "train"]
        if not train_starts:
            continue
        first = min(train_starts)
        windows.append(max(f.end_t for f in figures if f.start_t >= first) - first)
    window = max(windows, default=0.0)
    return window if window > 0 else None


def _exit_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


class _Flusher:
    """Daemon thread writing finished steps to disk every ``interval_s`` seconds, so records
    reach the disk even while one step runs for a long time, and encoding them stays off the
    loop's thread. A failure to write is kept (summary "flush_error"), never raised into the
    user's loop."""

    def __init__(self, run: Run, interval_s: float) -> None:
        self._run = run
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="perfkit-flush", daemon=True)
        self.error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._run.flush()
            except OSError as err:
                self.error = f"{type(err).__name__}: {err}"
                return


# --------------------------------------------------------------------------------------------
# Regions: @perfkit.timed


class timed:
    """A named region timed on the host clock inside the active run.

    Decorator (``@perfkit.timed("preprocess")``) or context manager
    (``with perfkit.timed("decode"):``). Each call writes a record named ``region/<label>`` with
    its duration in seconds. Outside an active run it does nothing, so library code can keep the
    decorator.
    """

    def __init__(self, label: str) -> None:
        if not isinstance(label, str) or not label:
            raise ValueError(f"timed(label) needs a non-empty string, got {label!r}")
        self.label = label
        self._starts: list[tuple[Run | None, float]] = []

    def __call__(self, func: _F) -> _F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    def __enter__(self) -> timed:
        run = _active_run
        self._starts.append((run, run._clock() if run is not None else 0.0))
        return self

    def __exit__(self, *exc: object) -> None:
        run, start = self._starts.pop()
        if run is not None and run.status == "running":
            end = run._clock()
            phase = run._active_phase
            run._write(
                f"region/{self.label}",
                end - start,
                "s",
                end - run._t0,
                phase=phase.name if phase else None,
                step=phase.steps if phase and phase._in_step else None,
            )


# --------------------------------------------------------------------------------------------
# helpers


def _check_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping (dict), got {type(config).__name__}")
    try:
        json.dumps(dict(config), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"config must be JSON-serialisable (str/number/bool/list/dict): {err}"
        ) from None
    return dict(config)


def _records_file(rank: int) -> str:
    return RECORDS_FILE if rank == 0 else RECORDS_FILE.replace(".jsonl", f"-rank{rank}.jsonl")


def _make_run_dir(out_dir: Path, run_id: str) -> Path:
    run_dir = out_dir / run_id
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"  # ranks share the directory
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise RunError(f"out_dir {str(out_dir)!r} is not writable: {err}") from err
    return run_dir


def _resolve_device(device: Any) -> str:
    if device in (None, "auto"):
        if "torch" not in sys.modules and not _package_version("torch"):
            return "cpu"
        import torch

        if torch.cuda.is_available():
            return f"cuda:{torch.cuda.current_device()}"
        accelerator = getattr(torch, "accelerator", None)
        if accelerator is not None and accelerator.is_available():
            current = accelerator.current_accelerator()
            if current is not None and current.type != "cpu":
                return f"{current.type}:{accelerator.current_device_index()}"
        return "cpu"
    if isinstance(device, str) and device == "cpu":
        return "cpu"
    import torch

    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device must be 'auto', 'cpu', a device string like 'cuda:0', or a torch.device; "
            f"got {device!r} ({err})"
        ) from None
    if resolved.type == "cpu":
        return "cpu"
    index = resolved.index if resolved.index is not None else 0
    return f"{resolved.type}:{index}"


def _make_timer(device: str, sync: str, clock: Clock) -> WindowTimer:
    device_type = device.split(":")[0]
    if device_type == "cpu":
        return HostTimer(clock)
    if sync == "step":
        from perfkit.timing import device_synchronizer

        return SyncingHostTimer(device_synchronizer(device_type), clock)
    if device_type == "cuda":
        import torch

        torch.cuda.set_device(int(device.split(":")[1]))
    return EventTimer(device_type)


def _device_name(device: str) -> str:
    device_type = device.split(":")[0]
    if device_type == "cpu":
        return _cpu_name()
    import torch

    module = getattr(torch, device_type, None)
    get_name = getattr(module, "get_device_name", None)
    if callable(get_name):
        return str(get_name(int(device.split(":")[1])))
    return device_type


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def _package_version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
