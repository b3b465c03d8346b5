"""Run: one benchmark's lifetime - start, phases, logged values, probes, flushing, summary."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from perfkit import checks, distributed, steplog
from perfkit._messages import logger
from perfkit.devices import resolve_device
from perfkit.figures import MFU_THROUGHPUTS, PHASE_KINDS, PHASE_TOTALS, RESERVED_KEYS
from perfkit.records import (
    META_FILE,
    RECORDS_FILE,
    REGION_PREFIX,
    STEPS_FILE,
    SUMMARY_FILE,
    RecordWriter,
    make_record,
    rank_file,
    reserved_names,
    write_json_atomic,
)
from perfkit.run._active import active_run, set_active_run
from perfkit.run._backlog import Columns, new_columns
from perfkit.run._errors import RunError
from perfkit.run._flusher import Flusher
from perfkit.run._host import PhaseControl, PhaseHost
from perfkit.run._loop import check_warmup_steps, wants_progress, warmup_by_kind
from perfkit.run._phase import BACKLOG_STEPS, Phase
from perfkit.run._power import PowerLog, device_records
from perfkit.run._process import add_live, discard_live
from perfkit.run._requests import Request, RequestLog, handed_in
from perfkit.run._setup import (
    check_config,
    check_name,
    check_out_dir,
    create_run_dir,
    make_run_dir,
    make_timer,
    metadata,
)
from perfkit.rundir import RunDirectory
from perfkit.serving import check_slo, serving_summary
from perfkit.sinks._base import Sink, phase_figures
from perfkit.sinks._dispatch import SinkSet, check_sinks
from perfkit.steplog import StepLogWriter
from perfkit.summary import (
    PEAK_MODES,
    PhaseTotals,
    build_summary,
    needs_measured_peak,
    phase_metrics,
)
from perfkit.timing import Clock, HostTimer, WindowTimer, host_clock

if TYPE_CHECKING:
    from perfkit.flops import TransformerShape

SYNC_MODES = ("phase", "step")
E2E_FROM = ("run", "process")
#: How long a loop whose steps fill the backlog waits for the flusher before it writes them
#: itself, seconds.
CATCH_UP_S = 1.0
#: The shortest flush interval a Run accepts, seconds (shorter would keep a core busy).
MIN_FLUSH_INTERVAL_S = 0.01


def _exit_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def _logged_number(key: str, raw: Any) -> float:
    """``raw``, a value given to run.log, as a float (NaN and inf stay: written as null)."""
    try:
        return float(raw)
    except OverflowError:
        raise ValueError(
            f"run.log({key}=...) needs a number a float can hold, got an int of "
            f"{raw.bit_length() if isinstance(raw, int) else '?'} bits"
        ) from None
    except (TypeError, ValueError):
        raise TypeError(
            f"run.log({key}=...) needs a number (int, float or 0-d tensor), "
            f"got {type(raw).__name__}"
        ) from None


def _probe_spec(probes: Any) -> Any:
    """``Run(probes=...)`` checked: "auto", None, a probe name, a Probe or a list of them (a
    lone Probe as a list)."""
    from perfkit.probes._base import Probe

    if not (
        probes is None
        or isinstance(probes, (str, Probe))
        or (isinstance(probes, (list, tuple)) and all(isinstance(p, (str, Probe)) for p in probes))
    ):
        raise checks.wrong_type(
            "probes", "'auto', None, a probe name, a Probe, or a list of them", probes
        )
    return [probes] if isinstance(probes, Probe) else probes


class Run:
    """One benchmark run: a context manager (or ``start()`` / ``stop()``) that owns the records.

    Args:
        name: run name (at most 200 bytes); the run directory is
            ``<out_dir>/<name>-<UTC timestamp>-<pid>-<random hex>``, created exclusively.
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
        flush_interval_s: records reach the disk at least this often, seconds (finite,
            at least 0.01).
        probes: ``"auto"`` (NVML or the vendor's tool, the torch allocator, the host),
            ``None`` for none, or names / :class:`perfkit.probes.Probe` instances; a background
            thread samples them every ``sample_interval_s`` seconds into the records. On the CPU
            the device's memory is the host's RAM: ``mem`` is then the host probe's
            system memory used / installed. A probe that
            fails is recorded once (``probe_error``) and disabled; the run goes on.
        flops_per_sample, peak_flops, mfu_convention: see :meth:`set_flops`; the dtype is the
            config's "precision" (default "fp32").
        dist_timeout_s: in a torch.distributed job, how long perfkit's own collectives (run id,
            phase figures) wait for every rank before failing with a clear error, seconds.
        warmup_steps: the default of :meth:`phase`'s ``warmup_steps``: an int for every phase,
            or {kind: int} (``{"train": 5}``: train phases only). 0 keeps FlagPerf's figures.
        slo: service-level objectives for the serving figures' goodput, seconds:
            ``{"ttft_s": .., "tpot_s": .., "e2el_s": ..}`` (any of them); None: MLPerf's
            llama2-70b server values ``{"ttft_s": 2.0, "tpot_s": 0.2}``; ``{}``: no goodput.
            See :meth:`request`.
        sinks: :mod:`perfkit.sinks` that rank 0 sends each phase's figures (rate-bounded) and
            the summary to, e.g. ``[perfkit.sinks.TensorBoard("tb")]``; a sink that fails is
            disabled and listed in the summary's ``faults``.

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
        peak_flops: float | str | None = None,
        mfu_convention: str = "perfkit",
        probes: Any = "auto",
        sample_interval_s: float = 0.5,
        warmup_steps: int | Mapping[str, int] = 0,
        sinks: Sequence[Sink] | None = None,
        slo: Mapping[str, float] | None = None,
    ) -> None:
        self.name = check_name(name)
        self._sink_list = check_sinks(sinks)
        self.out_dir = check_out_dir(out_dir)
        if clock is not None:
            checks.check_callable("clock", clock, "a callable returning seconds (float), or None")
        self._probe_spec = _probe_spec(probes)
        self._warmup_steps = warmup_by_kind(warmup_steps)
        self.config = check_config(config)
        self.e2e_from = checks.one_of("e2e_from", e2e_from, E2E_FROM)
        self.sync = checks.one_of("sync", sync, SYNC_MODES)
        self.flush_interval_s = checks.positive_number(
            "flush_interval_s", flush_interval_s, minimum=MIN_FLUSH_INTERVAL_S
        )
        self.dist_timeout_s = checks.positive_number("dist_timeout_s", dist_timeout_s)
        self.sample_interval_s = checks.positive_number("sample_interval_s", sample_interval_s)
        self._slo = check_slo(slo)  # the serving figures' goodput objectives, seconds
        self._device_arg = device
        #: The host clock (seconds) every time of this run is read from.
        self.clock: Clock = clock or host_clock
        self._injected_timer = device_timer
        #: The window timer of compute windows (device events on an accelerator).
        self.timer: WindowTimer = device_timer or HostTimer(self.clock)
        self._init_lifetime()
        self._init_measuring()
        self._init_records()
        self._init_phases()
        if flops_per_sample is not None:
            self.set_flops(
                flops_per_sample,
                dtype=str(self.config.get("precision", "fp32")),
                mfu_convention=mfu_convention,
                peak_flops=peak_flops,
            )

    def _init_lifetime(self) -> None:
        """The run's identity and state before start(): ranks, status, run directory, stop()."""
        self.rank = distributed.rank()
        self.world_size = distributed.world_size()
        self.run_id = ""
        self.run_dir: Path | None = None
        self.device = "cpu"
        self.status = "new"
        self.error: str | None = None
        self.meta: dict[str, Any] = {}
        #: The host clock's reading at the run's start, seconds.
        self.t0 = 0.0
        self._end_elapsed: float | None = None
        self._e2e_offset = 0.0
        self._group: Any = None  # the gloo group of perfkit's own collectives
        self._sigterm_installed = False
        self._final_summary: dict[str, Any] | None = None
        # stop()'s parts not done yet (None before stop): a stop cut short resumes them.
        self._teardown: list[Callable[[], None]] | None = None
        self._stop_error: BaseException | None = None
        self._end_status: str | None = None
        #: True in a forked child: this Run is the parent's and records nothing here.
        self._detached = False

    def _init_measuring(self) -> None:
        """What the run measures besides its phases: probes, memory, power, logged values,
        faults, sinks, the FLOP settings of MFU."""
        self._sampler: Any = None
        self._memory: Any = None
        self._end_memory: dict[str, Any] | None = None  # memory figures gathered at the end
        self._power = PowerLog()
        self.probe_errors: list[str] = []
        #: What went wrong with the run's own IO and collectives, each once (summary "faults").
        self.faults: list[str] = []
        self.logged: dict[str, float] = {}
        self._sinks = SinkSet([], self._fault)
        self._flops: dict[str, Any] | None = None

    def _init_records(self) -> None:
        """The record files (opened at start), the flusher that writes them and the requests
        (requests.jsonl, opened at the first)."""
        self._writer: RecordWriter | None = None
        # The run directory held open: its files are written through it (never a symlink).
        self._dir: RunDirectory | None = None
        self._steps: StepLogWriter | None = None
        self._dir_recreated = False
        self._backlog_said = False
        #: Held while finished steps move to the writer (a flush sees each step whole).
        self.flush_lock = threading.Lock()
        self._flusher: Flusher | None = None
        # A phase's step columns (2 MiB), allocated at start and handed from phase to phase,
        # so no phase pays for them inside its wall time.
        self._spare_columns: Columns | None = None
        self._requests = RequestLog(self, self._active_phase_name, self._record_writer)

    def _init_phases(self) -> None:
        """The phases: ended ones, the active one and those it paused, and the Run's side of
        the Run <-> Phase interface (perfkit.run._host) handed to each."""
        self.phases: list[Phase] = []
        # The active phase and those paused by the ones inside them (outermost first), through
        # the phase's side of the interface.
        self._active_phase: PhaseControl | None = None
        self._paused: list[PhaseControl] = []
        self._phase_counts: dict[str, int] = {}
        self._phase_ordinal = -1
        self._tokens_noted: dict[int, str] = {}  # phase ordinal -> its phase_tokens_from
        self._host = PhaseHost(
            self,
            self._begin_phase,
            self._phase_energy_j,
            self._gather_figures,
            self._end_phase,
            self._fault,
            self._steps_waiting,
            self._take_columns,
            self._keep_columns,
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
        if self.status != "new":
            raise RunError(f"run {self.name!r} was already started; create a new Run")
        other = active_run()
        if other is not None:
            raise RunError(
                f"run {self.name!r} started while run {other.name!r} is active: runs do "
                "not nest; stop the first run, or use phases inside one run"
            )
        self._check_world()
        self.device = resolve_device(self._device_arg)
        probes = self._resolve_probes()
        if self._injected_timer is None:
            self.timer = make_timer(self.device, self.sync, self.clock)
        self._check_clock()
        self._spare_columns = new_columns(BACKLOG_STEPS)  # here, not in the user's first phase
        with contextlib.suppress(ImportError):  # the step log's drains need it
            import numpy  # noqa: F401
        started = datetime.now(timezone.utc)
        # Before the run directory exists: an interrupt in a slow part (git) leaves nothing.
        self.meta = metadata(
            run_id="",
            name=self.name,
            started=started,
            device=self.device,
            rank=self.rank,
            world_size=self.world_size,
            config=self.config,
            e2e_from=self.e2e_from,
            sync=self.sync,
            timer=self.timer,
        )
        if self._flops is not None:
            self.meta["flops"] = self._flops
        self.meta["slo"] = self._slo  # the rebuild's goodput reads it back
        try:
            self._open_records(started)
            self._go_live(probes)
        except BaseException as err:  # an interrupt, a failed thread start: close what is open
            self._abort_start(err)
            raise
        logger.info("run %s started on %s; records in %s", self.run_id, self.device, self.run_dir)
        return self

    def _check_world(self) -> None:
        """This process's rank and world size; a multi-rank launch needs a process group."""
        self.rank = distributed.rank()
        self.world_size = distributed.world_size()
        if self.world_size > 1 and not distributed.is_distributed():
            raise RunError(
                f"WORLD_SIZE={self.world_size} but torch.distributed is not initialised: call "
                "torch.distributed.init_process_group(...) before starting the Run"
            )

    def _open_records(self, started: datetime) -> None:
        """Create (rank 0) or join the run directory and open this rank's record files; the
        run's clock starts here."""
        self._make_run_dir(started)
        assert self.run_dir is not None
        self.meta["run_id"] = self.run_id
        self._dir = RunDirectory(self.run_dir)
        self._writer = self._record_writer(self.run_dir / rank_file(RECORDS_FILE, self.rank))
        self._steps = StepLogWriter(
            self.run_dir / rank_file(STEPS_FILE, self.rank),
            steplog.header(self.run_id, self.rank),
            self._on_recreated,
            self._dir,
        )
        self.t0 = self.clock()
        if self.e2e_from == "process":
            import psutil

            self._e2e_offset = max(0.0, time.time() - psutil.Process().create_time())

    def _go_live(self, probes: list[Any]) -> None:
        """Write meta.json, start the sinks (rank 0), the flusher, the SIGTERM handler and the
        probes: the run is running and active."""
        self._flusher = Flusher(self.flush, self.flush_interval_s)
        self._write_meta()
        if self.rank == 0:
            self._sinks = SinkSet(self._sink_list, self._fault)
            self._sinks.start(self.run_id, self.name, self.config)
        self.status = "running"
        set_active_run(self)
        add_live(self, self._detach_after_fork, self._close_at_exit)
        self._flusher.start()
        self._install_sigterm()
        if probes:
            self._sampler.start()

    def _check_clock(self) -> None:
        """The clock must return finite seconds: checked once here, not at stop()."""
        reading = self.clock()
        if isinstance(reading, bool) or not isinstance(reading, (int, float)):
            raise TypeError(
                "Expected argument `clock` to return seconds (a finite float) but it returned "
                f"{type(reading).__name__} {checks.short_repr(reading)}"
            )
        if not math.isfinite(reading):
            raise ValueError(
                "Expected argument `clock` to return seconds (a finite float) but it returned "
                f"{reading!r}"
            )

    def _abort_start(self, err: BaseException) -> None:
        """start() raised (an interrupt) after the run directory was made: end the run as
        failed - threads stopped, files closed, meta.json and summary.json written."""
        if self.run_dir is None or self._writer is None or self._steps is None:
            for log in (self._writer, self._dir):
                if log is not None:
                    log.close()
            return
        self.status = "running"
        add_live(self, self._detach_after_fork, self._close_at_exit)  # a 2nd interrupt: at exit
        self._write_meta()
        with contextlib.suppress(BaseException):  # err is what start() raises
            self.stop(err)

    def _make_run_dir(self, started: datetime) -> None:
        """Rank 0 creates the run directory exclusively; the other ranks join it."""
        failure: RunError | None = None
        if self.rank == 0:
            try:
                self.run_id, self.run_dir = create_run_dir(self.out_dir, self.name, started)
            except RunError as err:
                failure = err
        if self.world_size > 1:  # every rank writes into rank 0's run directory
            self._group = distributed.new_cpu_group(self.dist_timeout_s)
            self.run_id = self._all_gather(self.run_id, "the run start")[0]
        if failure is not None:
            raise failure
        if not self.run_id:
            raise RunError(f"rank {self.rank}: rank 0 could not create the run directory")
        if self.rank != 0:
            self.run_dir = make_run_dir(self.out_dir, self.run_id, exclusive=False)

    def _resolve_probes(self) -> list[Any]:
        """This process's probes, checked before anything starts: device probes on one rank
        per node only (local rank 0)."""
        from perfkit.probes import MemoryTracker, Sampler, resolve_probes

        probes = resolve_probes(self._probe_spec)
        if distributed.local_rank() != 0:
            probes = [p for p in probes if p.kind != "device"]
        for probe in probes:  # the tree's memory is mem only where the device is the CPU
            if probe.kind == "host" and hasattr(probe, "uss"):
                probe.uss = self.device == "cpu"
        self._memory = MemoryTracker(include_host=self.device == "cpu")
        self._sampler = (
            Sampler(probes, self.sample_interval_s, self._on_sample, self._on_probe_error)
            if probes
            else None
        )
        return probes

    def _on_sample(self, sample: Any) -> None:
        """Sampler thread: one record per reported quantity, tagged with the active phase."""
        t = self.elapsed()
        phase_name = self._active_phase_name()
        for name, value, unit in sample.metrics():
            self._write(name, value, unit, t, phase=phase_name, device=sample.device)
        self._memory.update(sample)
        self._power.add(t, sample)

    def _on_probe_error(self, probe: str, message: str) -> None:
        self.probe_errors.append(f"{probe}: {message}")
        self._write("probe_error", None, "", self.elapsed(), note=f"{probe}: {message}")

    def _fault(self, message: str) -> None:
        """Record a failure of perfkit's own IO or collectives once: in the summary's faults
        and through the logging module (logger "perfkit"); the run goes on."""
        if message not in self.faults:
            self.faults.append(message)
            logger.warning("%s", message)

    def _record_writer(self, path: Path) -> RecordWriter:
        """A writer of the record file ``path`` in the run directory (recreated if deleted)."""
        return RecordWriter(path, self._on_recreated, self._dir)

    def _active_phase_name(self) -> str | None:
        """The name of the phase running now; None between phases (read once: other threads
        call it)."""
        active = self._active_phase
        return active.phase.name if active is not None else None

    def _on_recreated(self, message: str) -> None:
        """A record file was deleted under its writer, which recreated it: say so once for the
        run directory (not once per file) and write the metadata again."""
        if not self._dir_recreated:
            self._dir_recreated = True
            self._fault(message)
            self._write_meta()

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

    def _restore_sigterm(self) -> None:
        """Put SIGTERM's default handler back - only where the handler is still perfkit's (a
        handler the user installed while the run was active stays)."""
        if not self._sigterm_installed:
            return
        self._sigterm_installed = False
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is _exit_on_signal
        ):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def _all_gather(self, obj: Any, what: str) -> list[Any]:
        try:
            return distributed.all_gather_object(obj, self._group)
        except RuntimeError as err:
            raise RunError(
                f"rank {self.rank}: not every rank reached {what} within {self.dist_timeout_s:g} s "
                f"(dist_timeout_s): a rank has failed or stalled ({err})"
            ) from err

    def _gather_figures(self, figures: PhaseTotals) -> dict[int, PhaseTotals] | None:
        """Every rank's figures for a phase that just ended; None when not distributed (or in a
        forked child, which takes no part in the parent's collectives)."""
        if self._group is None or self._detached:
            return None
        return dict(enumerate(self._all_gather(figures, "the end of a phase")))

    def stop(self, exc: BaseException | None = None) -> dict[str, Any]:
        """End the run; ``exc`` marks it failed. Writes summary.json atomically; returns it.

        The run is no longer active from the first line on. Each part of the work (the active
        phase, the sampler, the flusher, the record files, the summary) runs even when one
        before it raised or was interrupted (Ctrl-C); an interrupt marks the run ``failed``,
        and the first exception is raised once every part has run. Idempotent: a later call
        returns the summary, or finishes a stop that was cut short."""
        if self._detached:
            return self._stop_detached()
        if self.status == "new":
            raise RunError(f"run {self.name!r} was never started")
        if self.status == "running":
            self._begin_stop(exc, None)
        return self._finish_stop()

    def _begin_stop(self, exc: BaseException | None, status: str | None) -> None:
        """Deactivate the run and list stop()'s parts; ``status`` overrides ok / failed."""
        self._teardown = [
            self._end_active_phase,
            self._mark_ended,
            self._stop_sampler,
            self._stop_flusher,
            self._close_files,
            self._end_figures,
            self._finish_sinks,
            self._write_summary,
            self._close_directory,
        ]
        self._stop_error, self._end_status = exc, status
        self.status = "stopping"
        if active_run() is self:
            set_active_run(None)
        self._restore_sigterm()

    def _finish_stop(self) -> dict[str, Any]:
        """Run stop()'s parts not done yet, each tried again once when it raised."""
        raised: BaseException | None = None
        tried = 0
        while self._teardown:
            part = self._teardown[0]
            try:
                part()
            except BaseException as err:  # an interrupt, or a part's own failure
                raised = raised or err
                if not isinstance(err, Exception):
                    self._interrupted(err)
                tried += 1
                if tried < 2:
                    continue
            del self._teardown[0]
            tried = 0
        discard_live(self)
        if raised is not None:
            raise raised
        logger.info("run %s ended (%s) in %s", self.run_id, self.status, self.run_dir)
        return self._final_summary if self._final_summary is not None else {}

    def _interrupted(self, err: BaseException) -> None:
        """An interrupt (KeyboardInterrupt, SystemExit) came while the run stopped: it failed."""
        if self._stop_error is None:
            self._stop_error = err
        if self.status not in ("stopping", "failed"):
            self.status = "failed"
        if self.error is None and self.status == "failed":
            self.error = f"{type(err).__name__}: {err}"

    def _end_active_phase(self) -> None:
        """End the phases left active, innermost first (a paused phase after the one inside it);
        cut short (no collective, the step under way not counted) when the run failed or was
        never stopped (other ranks may be gone at exit)."""
        self._requests.fail_open()
        cut = self._stop_error is not None or self._end_status is not None
        while (active := self._active_phase) is not None:  # innermost first
            active.finish(cut)
            if self._active_phase is active:
                break

    def _mark_ended(self) -> None:
        self._end_elapsed = self.elapsed()
        failed = self._stop_error is not None
        self.status = self._end_status or ("failed" if failed else "ok")
        if failed:
            self.error = f"{type(self._stop_error).__name__}: {self._stop_error}"

    def _stop_sampler(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()

    def _stop_flusher(self) -> None:
        if self._flusher is not None:
            self._flusher.stop()

    def _close_files(self) -> None:
        # Neither raises: a failure is flush_error. Under the flush lock: a flusher whose join
        # an interrupt cut short may still be flushing.
        with self.flush_lock:
            for log in (self._writer, self._steps):
                if log is not None:
                    log.close()
            self._requests.close()

    def _end_figures(self) -> None:
        """The run's last figures: memory gathered from every rank, then (rank 0) the peak
        measured where MFU needs one."""
        self._end_memory = self._memory_fields()
        self._measure_peak()

    def _finish_sinks(self) -> None:
        self._sinks.finish(self._last_summary())  # a sink's failure joins the faults

    def _last_summary(self) -> dict[str, Any]:
        if self._end_memory is not None:
            return self._summary(self._end_memory)
        # _end_figures failed twice: this rank's own memory figures
        return self._summary(dict(self._memory.summary()) if self._memory is not None else {})

    def _write_summary(self) -> None:
        if self._end_elapsed is None:  # _mark_ended failed twice (a clock that raises)
            self._end_elapsed = 0.0
            self.status = "failed"
        self._final_summary = None
        self._final_summary = self._last_summary()
        if self.rank == 0:
            self._write_json(SUMMARY_FILE, self._final_summary)

    def _close_directory(self) -> None:
        if self._dir is not None:
            self._dir.close()

    def _stop_detached(self) -> dict[str, Any]:
        """stop() in a forked child: the run is the parent's; nothing is written here."""
        self.status = "detached"
        return {}

    def _detach_after_fork(self) -> None:
        """In a forked child (see :mod:`perfkit.run._process`): record and write nothing, and
        never wait on a lock a parent's thread held at the fork."""
        self._detached = True
        self.flush_lock = threading.Lock()
        # Fresh copies of what the sampler thread shares under a lock (it may have held one at
        # the fork): the child's phases take no memory or power figures of the parent's.
        self._memory = None
        self._power = PowerLog()
        for log in (self._writer, self._steps, self._dir):
            if log is not None:
                log.detach()
        self._requests.detach()
        self._sinks = SinkSet([], self._fault)  # the parent's sinks are the parent's

    def _close_at_exit(self) -> None:
        """At interpreter exit: stop a run still open (``failed`` after an uncaught exception,
        else ``unfinished``), or finish a stop that an interrupt cut short."""
        if self._detached:
            return
        said = ""
        if self.status == "running":
            error = getattr(sys, "last_value", None)
            self._begin_stop(error, None if error is not None else "unfinished")
            said = f"run {self.name!r} was never stopped; closed at exit ({self.run_dir})"
        if self._teardown:
            self._finish_stop()
        if said:  # after the summary is written: a warnings filter "error" cannot stop it
            logger.warning("%s", said)
            with contextlib.suppress(Warning):
                warnings.warn(said, RuntimeWarning, stacklevel=1)

    def _measure_peak(self) -> None:
        """Rank 0, at the end (after e2e_time): measure this device's peak where MFU needs one
        (see :meth:`set_flops`), kept in meta.json; a failure becomes the MFU note. Not for a
        failed run (an exception, Ctrl-C, SIGTERM): it ends at once, its MFU note says why."""
        flops, name = self._flops, self.meta.get("device_name", "")
        if flops is None or not needs_measured_peak(flops, name):
            return
        if self.rank != 0:
            flops["peak_note"] = "the peak is measured on rank 0 only"
            return
        if self.status != "ok":
            flops["peak_note"] = "not measured: the run failed"
            return
        measured = phase_metrics([p.result() for p in self.phases])
        if not any(k in measured for k in MFU_THROUGHPUTS):
            return  # no core throughput: no MFU to divide
        try:
            from perfkit.flops import measure_peak

            peak = measure_peak(self.device, flops["dtype"])
            flops["measured_peak"] = peak.to_json()
            logger.info("peak measured (%s): %.4g FLOP/s", peak.method, peak.flops)
        except Exception as err:  # never into the user's job: the summary says why
            flops["peak_note"] = f"{type(err).__name__}: {err}"
        self._write_meta()

    def _write_json(self, file: str, obj: Any) -> None:
        """Write ``file`` of the run directory atomically; a failure is recorded, not raised
        (recreating the run directory when it was deleted)."""
        assert self.run_dir is not None
        if self._detached:
            return
        path = self.run_dir / file
        try:
            recreated = self._dir.recreated if self._dir is not None else 0
            write_json_atomic(path, obj, self._dir)
            if self._dir is not None and self._dir.recreated != recreated:
                self._fault(
                    f"run directory {self.run_dir} was deleted while the run was running; "
                    f"recreated it to write {file}"
                )
        except (OSError, ValueError) as err:
            self._fault(f"{path} not written: {type(err).__name__}: {err}")

    # -- phases --------------------------------------------------------------------------
    def phase(
        self,
        kind: str,
        name: str | None = None,
        *,
        warmup_steps: int | None = None,
        progress: bool | None = None,
    ) -> Phase:
        """A new phase of ``kind`` ("train", "val" or "infer"); ``name`` defaults to the kind.

        Phases do not overlap, but one may run inside a phase of another kind (an evaluation
        inside a training epoch): the outer phase is paused from the inner one's start to its
        end, and that time is left out of the outer phase's wall, IO and compute seconds
        (:attr:`Phase.paused_s`) and of the step it fell in - so p_train and p_core leave the
        evaluation out, p_whole keeps it.

        ``warmup_steps``: the phase's first steps, timed and reported apart
        (``<kind>_warmup_steps``, ``<kind>_warmup_s``) and left out of its other figures;
        None takes the Run's ``warmup_steps``. ``progress``: a tqdm bar over the phase's
        steps - True, False, or None for on only when stderr is a terminal.
        """
        checks.one_of("kind", kind, PHASE_KINDS)
        warmup = (
            self._warmup_steps[kind] if warmup_steps is None else check_warmup_steps(warmup_steps)
        )
        show_progress = wants_progress(progress)
        if self.status != "running":
            state = "has not started" if self.status == "new" else "has ended"
            raise RunError(f"run.phase({kind!r}) called on run {self.name!r}, which {state}")
        index = self._phase_counts.get(kind, 0)
        self._phase_counts[kind] = index + 1
        return Phase(self._host, kind, name or kind, index, warmup, show_progress)

    def _begin_phase(self, control: PhaseControl) -> int:
        """Make the phase the active one; returns its position among this rank's phases."""
        phase = control.phase
        if self.status != "running":
            raise RunError(f"phase {phase.name!r} entered after run {self.name!r} ended")
        outer = self._active_phase
        if outer is not None:
            if phase.kind in {c.phase.kind for c in (*self._paused, outer)}:
                raise RunError(
                    f"phase {phase.name!r} started while phase {outer.phase.name!r} is active: "
                    f"phases do not overlap, and a {phase.kind} phase cannot pause one of its "
                    "own kind; end one before starting the next"
                )
            assert self._steps is not None
            with self.flush_lock:  # the outer phase's finished steps go before the inner's
                self._steps.write(outer.drain_rows())
            outer.pause()
            self._note_tokens_from(outer.phase)
            self._paused.append(outer)
        self._active_phase = control
        if self._memory is not None:
            self._memory.mark()
        self._write(
            "phase_start", phase.start_t, "s", phase.start_t, phase=phase.name, kind=phase.kind
        )
        self._phase_ordinal += 1
        return self._phase_ordinal

    def _note_tokens_from(self, phase: Phase) -> None:
        """Record how ``phase`` counts its tokens, once it is known (its first token batch):
        the rebuild of a killed run reads it for a phase left open. Its t is the phase's start,
        which names the phase."""
        source = phase.tokens_from
        if source != "none" and self._tokens_noted.get(phase.ordinal) != source:
            self._tokens_noted[phase.ordinal] = source
            self._write("phase_tokens_from", None, "", phase.start_t, phase=phase.name, note=source)

    def _phase_energy_j(self) -> float | None:
        return self._memory.energy_delta_j() if self._memory is not None else None

    def _end_phase(self, control: PhaseControl) -> None:
        assert self._steps is not None
        phase = control.phase
        with self.flush_lock:
            self._steps.write(control.drain_rows())
            self._active_phase = self._paused.pop() if self._paused else None
        self.phases.append(phase)
        self._note_tokens_from(phase)
        f = phase.figures_by_rank()[self.rank]
        for total in PHASE_TOTALS:  # the records the figure table says a phase writes
            value = getattr(f, total.name)
            if total.is_written(value, f.warmup_steps):
                self._write(
                    total.record, value, total.unit, f.end_t, phase=phase.name, kind=phase.kind
                )
        phase.devices = self._power.phase_end(
            f.start_t, f.end_t, keep=self._active_phase is not None
        )
        for name, value, unit, device, note in device_records(phase.devices):
            self._write(name, value, unit, f.end_t, phase=phase.name, device=device, note=note)
        self.flush()
        figures = phase_figures(phase.name, f.samples, f.wall_s, f.io_s, f.compute_s)
        self._sinks.phase(phase.name, figures)
        outer = self._active_phase
        if outer is not None:  # the phase this one paused goes on
            if self._memory is not None:
                self._memory.mark()
            outer.resume()

    # -- values --------------------------------------------------------------------------
    def set_config(self, config: Mapping[str, Any]) -> None:
        """Replace the run's config (checked as ``Run(config=)`` is); a running run writes it
        into meta.json again (a trainer callback adds the trainer's settings this way)."""
        self.config = check_config(config)
        if self.status == "running":
            self.meta["config"] = self.config
            self._write_meta()

    def set_flops(
        self,
        flops_per_sample: float,
        *,
        dtype: str,
        mfu_convention: str = "perfkit",
        peak_flops: float | str | None = None,
        tf32: bool | None = None,
    ) -> None:
        """Give the model's work per sample, so the summary reports MFU.

        ``flops_per_sample`` is in FLOPs (2 per multiply-add; for training, forward + backward,
        e.g. ``perfkit.flops.count(model, x, backward=True).flops / batch``). MFU uses the core
        throughput per device (p_core for training, else p_infer_core, else p_val_core) and the
        peak of this run's device for ``dtype``. ``peak_flops``: a number (FLOP/s, the
        summary's ``mfu_peak_source`` is "user"); ``"auto"`` (None, the default) the table's
        figure (:func:`perfkit.flops.peak_flops`: "datasheet" or "flagperf-config") and, where
        it has none, a measured one (:func:`perfkit.flops.measure_peak` on this run's device at
        its end, after e2e_time is taken, from the on-disk cache when measured before:
        "measured"); ``"table"`` the table's only; ``"measured"`` always a measured one.
        ``mfu_convention="flagperf"`` reproduces FlagPerf's ResNet-50 MFU, which counts one
        operation per multiply-add (see :func:`perfkit.flops.mfu`).
        """
        from perfkit.flops import CONVENTIONS, normalize_dtype

        flops_per_sample = checks.positive_number("flops_per_sample", flops_per_sample, "FLOPs")
        checks.one_of("mfu_convention", mfu_convention, tuple(CONVENTIONS))
        normalize_dtype(dtype)  # raises ValueError naming dtype
        self._keep_flops(
            {"flops_per_sample": flops_per_sample, "convention": mfu_convention},
            dtype,
            peak_flops,
            tf32,
        )

    def set_token_flops(
        self,
        work: TransformerShape | float,
        *,
        convention: str,
        dtype: str,
        training: bool = True,
        peak_flops: float | str | None = None,
        tf32: bool | None = None,
    ) -> None:
        """Give a language model's work per token, so the summary reports MFU per token.

        ``work``: a :class:`perfkit.flops.TransformerShape` (``perfkit.flops.transformer_shape
        (model, seq_len=T)``), whose FLOPs per token ``convention`` gives - "flagperf-6n",
        "palm" or "megatron" (:func:`perfkit.flops.flops_per_token`; ``training``: forward +
        backward, else forward only) - or FLOPs per token (a number) with ``convention``
        "counted" (:func:`perfkit.flops.counted_per_token`) or one of those named. MFU is
        ``flops_per_token`` x the token throughput per device (tps_train_per_device, else
        tps_infer_core_per_device, else tps_val_core_per_device; ``mfu_throughput`` says which)
        / the peak; ``dtype``, ``peak_flops``, ``tf32`` as :meth:`set_flops`. The shape, the
        convention and FLOPs per token go into meta.json (``flops``).
        """
        from perfkit.flops import (
            TOKEN_CONVENTIONS,
            TransformerShape,
            flops_per_token,
            normalize_dtype,
        )

        checks.one_of("convention", convention, tuple(TOKEN_CONVENTIONS))
        normalize_dtype(dtype)
        shape = None
        if isinstance(work, TransformerShape):
            if convention == "counted":
                raise checks.wrong_value(
                    "work", "FLOPs per token (a number) with convention='counted'", work
                )
            shape = work.to_json()
            work = flops_per_token(work, convention, training=training)  # type: ignore[arg-type]
        per_token = checks.positive_number("work", work, "FLOPs per token")
        self._keep_flops(
            {
                "flops_per_token": per_token,
                "token_convention": convention,
                "training": bool(training),
                "transformer": shape,
                "convention": "perfkit",
            },
            dtype,
            peak_flops,
            tf32,
        )

    def _keep_flops(
        self,
        work: dict[str, Any],
        dtype: str,
        peak_flops: float | str | None,
        tf32: bool | None,
    ) -> None:
        """Keep the FLOP settings (``work``, the peak) for MFU, in meta.json too."""
        mode = "auto" if peak_flops is None else peak_flops
        if isinstance(peak_flops, str):
            checks.one_of("peak_flops", peak_flops, PEAK_MODES)
            peak_flops = None
        elif peak_flops is not None:
            peak_flops = checks.positive_number("peak_flops", peak_flops, "FLOP/s")
            mode = "user"
        self._flops = {**work, "dtype": dtype, "peak_flops": peak_flops, "peak": mode, "tf32": tf32}
        self.meta["flops"] = self._flops  # rebuild_summary's MFU reads it back
        if self.status == "running":
            self._write_meta()

    def _write_meta(self) -> None:
        if self.rank == 0 and self.run_dir is not None:
            self._write_json(META_FILE, self.meta)

    def _memory_fields(self) -> dict[str, Any]:
        """mem and friends; in a distributed run, the maximum over every device of every node
        (gathered when the run ends)."""
        if self._memory is None:
            return {}
        if self._group is None or self.status != "ok":
            return dict(self._memory.summary())
        from perfkit.probes import merge_memory_summaries

        try:
            gathered = self._all_gather(self._memory.summary(), "the run end")
        except RunError as err:  # another rank died after the last phase: keep this rank's
            self._fault(f"memory of the other ranks not gathered, this rank's only: {err}")
            return dict(self._memory.summary())
        return merge_memory_summaries(gathered)

    def log(self, step: int | None = None, **values: float) -> None:
        """Record named values (mAP=0.35, acc=0.762, loss=...) in base units; the last value of
        each name appears in the summary. ``step`` ties them to a step of the active phase."""
        if self._detached:
            return
        if self.status != "running":
            raise RunError(f"run.log() called on run {self.name!r}, which is not running")
        reserved = [
            key
            for key in values
            if key in RESERVED_KEYS or key in reserved_names() or key.startswith(REGION_PREFIX)
        ]
        if reserved:
            raise ValueError(
                f"run.log({reserved[0]}=...): {reserved[0]!r} is a field perfkit measures or "
                "sets in the summary; log it under another name"
            )
        if step is not None:
            expected = "a step index (an int from 0 to 2**53) or None"
            checks.check_type("step", step, int, expected)
            if not 0 <= step <= 2**53:
                raise checks.wrong_value("step", expected, step)
        numbers = {key: _logged_number(key, raw) for key, raw in values.items()}
        t = self.elapsed()
        phase = self._active_phase_name()
        for key, value in numbers.items():
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
        kind: str | None = None,
    ) -> None:
        assert self._writer is not None
        if self._detached:
            return
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
                kind=kind,
            )
        )

    def flush(self) -> None:
        """Write every finished step and queued record to disk now (any thread)."""
        writer = self._writer
        if writer is None or self._detached:
            return
        active = self._active_phase
        if active is not None:
            active.resolve()
            self._note_tokens_from(active.phase)
        writer.flush()  # events first: a phase's steps never come before its phase_start
        self._requests.flush()
        with self.flush_lock:
            if self._steps is not None:  # also retries rows an earlier write failed on
                active = self._active_phase
                self._steps.write(active.drain_rows() if active is not None else b"")

    def _take_columns(self) -> Columns | None:
        columns, self._spare_columns = self._spare_columns, None
        return columns

    def _keep_columns(self, columns: Columns) -> None:
        self._spare_columns = columns

    def _steps_waiting(self, steps: int) -> None:
        """``steps`` finished steps fill the phase's backlog: wait for the flusher to write
        them (a tight loop outruns it only for the GIL, which the wait hands over); if it does
        not within :data:`CATCH_UP_S` (the disk cannot keep up), write them from the loop's
        thread, so memory stays bounded, and say so once (a warning and a step_backlog_full
        record) - the loop then writes them itself at every fill."""
        assert self._flusher is not None
        if self._detached:
            return
        if not self._backlog_said and self._flusher.catch_up(CATCH_UP_S):
            return
        if not self._backlog_said:
            self._backlog_said = True
            message = (
                f"run {self.name!r}: {steps} steps waited to be written and the flusher did "
                f"not write them within {CATCH_UP_S:g} s (the disk does not keep up); the loop's "
                "thread writes them itself from now on"
            )
            warnings.warn(message, RuntimeWarning, stacklevel=4)
            self._write("step_backlog_full", None, "", self.elapsed(), note=message)
        self.flush()  # never raises: rows the disk refuses wait, bounded, in the step log

    def elapsed(self) -> float:
        """Seconds since the run started (frozen at its end)."""
        if self._end_elapsed is not None:
            return self._end_elapsed
        return self.clock() - self.t0

    # -- summary -------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Every metric of the run (seed names, base units), metadata and per-phase figures.

        Metrics without data are absent (no val phase: no p_val_*), never zero.
        """
        if self._final_summary is not None:
            return self._final_summary
        return self._summary(self._memory_fields())

    def _summary(self, memory: dict[str, Any]) -> dict[str, Any]:
        phases = [*self.phases, *(control.phase for control in self._paused)]
        if self._active_phase is not None:
            phases.append(self._active_phase.phase)
        phases.sort(key=lambda p: p.ordinal)  # in start order (an inner phase ends first)
        return build_summary(
            run_id=self.run_id,
            name=self.name,
            status=self.status,
            e2e_time=self.elapsed() + self._e2e_offset,
            phases=[p.result() for p in phases],
            meta=self.meta,
            memory=memory,
            flops=self._flops,
            logged=self.logged,
            probe_errors=self.probe_errors,
            error=self.error,
            flush_error=self._flush_error(),
            faults=self.faults,
            serving=serving_summary(self._requests.timings, self._slo),
        )

    def _flush_error(self) -> str | None:
        """The first failure writing each record file (events, steps) or flushing, joined."""
        errors = [w.error for w in (self._writer, self._steps) if w is not None and w.error]
        if self._requests.error:
            errors.append(self._requests.error)
        if self._flusher is not None and self._flusher.error is not None:
            errors.append(self._flusher.error)
        return "; ".join(errors) if errors else None

    # -- requests (generation / serving) ------------------------------------------------
    def request(self, prompt_tokens: int | None = None) -> Request:
        """A request to time, for generation / serving: ``with run.request(prompt_tokens=n) as
        r:`` sends it (its send time), ``r.token()`` marks each produced token (or
        ``r.token(k)`` a chunk), leaving the block ends it; an exception marks it failed. The
        summary gets the serving figures (ttft_s_*, tpot_s_*, itl_s_*, e2el_s_*,
        requests_per_s, output_tps, total_tps, goodput_requests_per_s; see
        :mod:`perfkit.serving`) and each request is a line of requests.jsonl. For Hugging Face
        ``generate``, :class:`perfkit.generation.Streamer` makes one request per batch row."""
        self._check_running("run.request()")
        return Request(self._requests, prompt_tokens)

    def add_request(
        self,
        *,
        send_t: float,
        token_t: Sequence[float] = (),
        first_token_t: float | None = None,
        end_t: float | None = None,
        output_tokens: int | None = None,
        prompt_tokens: int | None = None,
        error: str | None = None,
    ) -> None:
        """Record a request timed elsewhere (a vLLM-style client, a server's own log), its times
        as readings of this run's clock (:attr:`clock`, ``time.perf_counter`` by default):
        ``send_t`` and either ``token_t`` (each token's or chunk's arrival; the first is the
        first token, the last the end unless ``end_t`` is given, ``output_tokens`` defaults to
        their number) or ``first_token_t``, ``end_t`` and ``output_tokens`` (no ITL).
        ``error``: the request failed (why)."""
        self._check_running("run.add_request()")
        timing = handed_in(
            self.t0,
            send_t=send_t,
            token_t=token_t,
            first_token_t=first_token_t,
            end_t=end_t,
            output_tokens=output_tokens,
            prompt_tokens=prompt_tokens,
            error=error,
        )
        self._requests.add(timing)

    def _check_running(self, call: str) -> None:
        if self.status != "running" and not self._detached:
            raise RunError(f"{call} called on run {self.name!r}, which is not running")

    def record_region(self, label: str, start: float, end: float) -> None:
        """Record a region ``region/<label>`` from ``start`` to ``end`` (host clock, s), tied to
        the active phase and its running step (what :class:`perfkit.timed` calls)."""
        active = self._active_phase
        self._write(
            f"region/{label}",
            end - start,
            "s",
            end - self.t0,
            phase=active.phase.name if active else None,
            step=active.running_step() if active else None,
        )
