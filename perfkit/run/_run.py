"""Run: one benchmark's lifetime - start, phases, logged values, probes, flushing, summary."""

from __future__ import annotations

import os
import signal
import threading
import time
import warnings
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from perfkit import checks, distributed, steplog
from perfkit.records import (
    META_FILE,
    RECORDS_FILE,
    STEPS_FILE,
    SUMMARY_FILE,
    RecordWriter,
    make_record,
    rank_file,
    write_json_atomic,
)
from perfkit.run._active import active_run, set_active_run
from perfkit.run._environment import (
    check_config,
    make_run_dir,
    make_timer,
    metadata,
    resolve_device,
)
from perfkit.run._errors import RunError
from perfkit.run._flusher import Flusher
from perfkit.run._phase import BACKLOG_STEPS, Phase
from perfkit.run._power import PowerLog, device_records
from perfkit.steplog import StepLogWriter
from perfkit.summary import PHASE_KINDS, PhaseFigures, build_summary
from perfkit.timing import Clock, HostTimer, WindowTimer, host_clock

SYNC_MODES = ("phase", "step")
E2E_FROM = ("run", "process")


def _exit_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


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
            thread samples them every ``sample_interval_s`` seconds into the records. On the CPU
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
        sample_interval_s: float = 0.5,
        sample_interval: float | None = None,
    ) -> None:
        self.name = checks.non_empty_str("name", name, forbidden="/\\\0")
        self.out_dir = Path(out_dir)
        self.config = check_config(config)
        self.e2e_from = checks.one_of("e2e_from", e2e_from, E2E_FROM)
        self.sync = checks.one_of("sync", sync, SYNC_MODES)
        self.flush_interval_s = checks.positive_number("flush_interval_s", flush_interval_s)
        self.dist_timeout_s = checks.positive_number("dist_timeout_s", dist_timeout_s)
        sample_interval_s = checks.renamed(
            "sample_interval", "sample_interval_s", sample_interval, sample_interval_s, 0.5
        )
        self.sample_interval_s = checks.positive_number("sample_interval_s", sample_interval_s)
        self._group: Any = None
        self._probe_spec = probes
        self._sampler: Any = None
        self._memory: Any = None
        self.probe_errors: list[str] = []
        self._sigterm_installed = False
        self._device_arg = device
        #: The host clock (seconds) every time of this run is read from.
        self.clock: Clock = clock or host_clock
        self._injected_timer = device_timer
        #: The window timer of compute windows (device events on an accelerator).
        self.timer: WindowTimer = device_timer or HostTimer(self.clock)
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
        self._steps: StepLogWriter | None = None
        self._backlog_said = False
        #: The host clock's reading at the run's start, seconds.
        self.t0 = 0.0
        self._end_elapsed: float | None = None
        self._e2e_offset = 0.0
        #: Held while finished steps move to the writer (a flush sees each step whole).
        self.flush_lock = threading.Lock()
        self._flusher: Flusher | None = None
        self._phase_counts: dict[str, int] = {}
        self._phase_ordinal = -1
        self._final_summary: dict[str, Any] | None = None
        self._power = PowerLog()
        self._flops: dict[str, Any] | None = None
        if flops_per_sample is not None:
            self.set_flops(
                flops_per_sample,
                dtype=str(self.config.get("precision", "fp32")),
                mfu_convention=mfu_convention,
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
        if self.status != "new":
            raise RunError(f"run {self.name!r} was already started; create a new Run")
        other = active_run()
        if other is not None:
            raise RunError(
                f"run {self.name!r} started while run {other.name!r} is active: runs do "
                "not nest; stop the first run, or use phases inside one run"
            )
        self.rank = distributed.rank()
        self.world_size = distributed.world_size()
        if self.world_size > 1 and not distributed.is_distributed():
            raise RunError(
                f"WORLD_SIZE={self.world_size} but torch.distributed is not initialised: call "
                "torch.distributed.init_process_group(...) before starting the Run"
            )
        self.device = resolve_device(self._device_arg)
        probes = self._resolve_probes()
        if self._injected_timer is None:
            self.timer = make_timer(self.device, self.sync, self.clock)
        started = datetime.now(timezone.utc)
        self.run_id = f"{self.name}-{started:%Y%m%d-%H%M%S}-{os.getpid()}"
        if self.world_size > 1:  # every rank writes into rank 0's run directory
            self._group = distributed.new_cpu_group(self.dist_timeout_s)
            self.run_id = self._all_gather(self.run_id, "the run start")[0]
        self.run_dir = make_run_dir(self.out_dir, self.run_id)
        self._writer = RecordWriter(self.run_dir / rank_file(RECORDS_FILE, self.rank))
        self._steps = StepLogWriter(
            self.run_dir / rank_file(STEPS_FILE, self.rank), steplog.header(self.run_id, self.rank)
        )
        self.t0 = self.clock()
        if self.e2e_from == "process":
            import psutil

            self._e2e_offset = max(0.0, time.time() - psutil.Process().create_time())
        self._flusher = Flusher(self.flush, self.flush_interval_s)
        self.meta = metadata(
            run_id=self.run_id,
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
        self._write_meta()
        self.status = "running"
        set_active_run(self)
        self._flusher.start()
        self._install_sigterm()
        if probes:
            self._sampler.start()
        return self

    def _resolve_probes(self) -> list[Any]:
        """This process's probes, checked before anything starts: device probes on one rank
        per node only (local rank 0)."""
        from perfkit.probes import MemoryTracker, Sampler, resolve_probes

        probes = resolve_probes(self._probe_spec)
        if distributed.local_rank() != 0:
            probes = [p for p in probes if p.kind != "device"]
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
        phase = self._active_phase
        phase_name = phase.name if phase is not None else None
        for name, value, unit in sample.metrics():
            self._write(name, value, unit, t, phase=phase_name, device=sample.device)
        self._memory.update(sample)
        self._power.add(t, sample)

    def _on_probe_error(self, probe: str, message: str) -> None:
        self.probe_errors.append(f"{probe}: {message}")
        self._write("probe_error", None, "", self.elapsed(), note=f"{probe}: {message}")

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
        if self.status != "running":
            if self._final_summary is not None:
                return self._final_summary
            raise RunError(f"run {self.name!r} was never started")
        failed = exc is not None
        try:
            if self._active_phase is not None:
                self._active_phase._finish(failed=failed)
        finally:
            self._end_elapsed = self.elapsed()
            self.status = "failed" if failed else "ok"
            if failed:
                self.error = f"{type(exc).__name__}: {exc}"
            set_active_run(None)
            if self._sigterm_installed:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
            assert self._flusher is not None and self._writer is not None
            if self._sampler is not None:
                self._sampler.stop()
            self._flusher.stop()
            self._final_summary = self.summary()
            assert self.run_dir is not None
            self._writer.close()
            assert self._steps is not None
            self._steps.close()
            if self.rank == 0:
                write_json_atomic(self.run_dir / SUMMARY_FILE, self._final_summary)
        return self._final_summary

    # -- phases --------------------------------------------------------------------------
    def phase(self, kind: str, name: str | None = None) -> Phase:
        """A new phase of ``kind`` ("train", "val" or "infer"); ``name`` defaults to the kind."""
        checks.one_of("kind", kind, PHASE_KINDS)
        if self.status != "running":
            state = "has not started" if self.status == "new" else "has ended"
            raise RunError(f"run.phase({kind!r}) called on run {self.name!r}, which {state}")
        index = self._phase_counts.get(kind, 0)
        self._phase_counts[kind] = index + 1
        return Phase(self, kind, name or kind, index)

    def _begin_phase(self, phase: Phase) -> int:
        """Make ``phase`` the active one; returns its position among this rank's phases."""
        if self.status != "running":
            raise RunError(f"phase {phase.name!r} entered after run {self.name!r} ended")
        if self._active_phase is not None:
            raise RunError(
                f"phase {phase.name!r} started while phase {self._active_phase.name!r} is "
                "active: phases do not overlap; end one before starting the next"
            )
        self._active_phase = phase
        if self._memory is not None:
            self._memory.mark()
        self._write(
            "phase_start", phase.start_t, "s", phase.start_t, phase=phase.name, kind=phase.kind
        )
        self._phase_ordinal += 1
        return self._phase_ordinal

    def _phase_energy_j(self) -> float | None:
        """Device energy since the active phase began (J), None without an energy counter."""
        return self._memory.energy_delta_j() if self._memory is not None else None

    def _end_phase(self, phase: Phase) -> None:
        assert self._steps is not None
        with self.flush_lock:
            self._steps.write(phase._drain_rows())
            self._active_phase = None
        self.phases.append(phase)
        f = phase.figures_by_rank()[self.rank]
        fields = [
            ("phase_wall", f.wall_s, "s"),
            ("phase_io", f.io_s, "s"),
            ("phase_compute", f.compute_s, "s"),
            ("phase_samples", f.samples, "samples"),
            ("phase_steps", f.steps, "steps"),
        ]
        if f.energy_j is not None:
            fields.append(("phase_energy", f.energy_j, "J"))
        for name, value, unit in fields:
            self._write(name, value, unit, f.end_t, phase=phase.name, kind=phase.kind)
        phase.devices = self._power.phase_end(f.start_t, f.end_t)
        for name, value, unit, device, note in device_records(phase.devices):
            self._write(name, value, unit, f.end_t, phase=phase.name, device=device, note=note)
        self.flush()

    # -- values --------------------------------------------------------------------------
    def set_flops(
        self,
        flops_per_sample: float,
        *,
        dtype: str,
        mfu_convention: str = "perfkit",
        peak_flops: float | None = None,
        tf32: bool | None = None,
        convention: str | None = None,
    ) -> None:
        """Give the model's work per sample, so the summary reports MFU.

        ``flops_per_sample`` is in FLOPs (2 per multiply-add; for training, forward + backward,
        e.g. ``perfkit.flops.count(model, x, backward=True).flops / batch``). MFU uses the core
        throughput per device (p_core for training, else p_infer_core, else p_val_core) and the
        peak of this run's device for ``dtype`` from :func:`perfkit.flops.peak_flops`, or
        ``peak_flops`` (FLOP/s) when given. ``mfu_convention="flagperf"`` reproduces FlagPerf's
        ResNet-50 MFU, which counts one operation per multiply-add
        (see :func:`perfkit.flops.mfu`).
        """
        from perfkit.flops import CONVENTIONS, normalize_dtype

        mfu_convention = checks.renamed(
            "convention", "mfu_convention", convention, mfu_convention, "perfkit"
        )
        flops_per_sample = checks.positive_number("flops_per_sample", flops_per_sample, "FLOPs")
        checks.one_of("mfu_convention", mfu_convention, tuple(CONVENTIONS))
        if peak_flops is not None:
            peak_flops = checks.positive_number("peak_flops", peak_flops, "FLOP/s")
        normalize_dtype(dtype)  # raises ValueError naming dtype
        self._flops = {
            "flops_per_sample": flops_per_sample,
            "dtype": dtype,
            "convention": mfu_convention,
            "peak_flops": peak_flops,
            "tf32": tf32,
        }
        self.meta["flops"] = self._flops  # rebuild_summary's MFU reads it back
        if self.status == "running":
            self._write_meta()

    def _write_meta(self) -> None:
        if self.rank == 0 and self.run_dir is not None:
            write_json_atomic(self.run_dir / META_FILE, self.meta)

    def _memory_fields(self) -> dict[str, Any]:
        """mem and friends; in a distributed run, the maximum over every device of every node
        (gathered when the run ends)."""
        if self._memory is None:
            return {}
        if self._group is None or self.status != "ok":
            return dict(self._memory.summary())
        from perfkit.probes import merge_memory_summaries

        return merge_memory_summaries(self._all_gather(self._memory.summary(), "the run end"))

    def log(self, step: int | None = None, **values: float) -> None:
        """Record named values (mAP=0.35, acc=0.762, loss=...) in base units; the last value of
        each name appears in the summary. ``step`` ties them to a step of the active phase."""
        if self.status != "running":
            raise RunError(f"run.log() called on run {self.name!r}, which is not running")
        t = self.elapsed()
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
        kind: str | None = None,
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
                kind=kind,
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
        writer.flush()  # events first: a phase's steps never come before its phase_start
        with self.flush_lock:
            if self._active_phase is not None and self._steps is not None:
                self._steps.write(self._active_phase._drain_rows())

    def _backlog(self, steps: int) -> None:
        """``steps`` finished steps wait for the disk: wake the flusher; at BACKLOG_STEPS (the
        disk cannot keep up) write them from the loop's thread, so memory stays bounded, and
        say so once (a warning and a step_backlog_full record)."""
        assert self._flusher is not None
        if steps < BACKLOG_STEPS:
            self._flusher.wake()
            return
        if not self._backlog_said:
            self._backlog_said = True
            message = (
                f"run {self.name!r}: {steps} steps waited for the disk, which does not keep up; "
                "the loop's thread writes them itself when that happens"
            )
            warnings.warn(message, RuntimeWarning, stacklevel=4)
            self._write("step_backlog_full", None, "", self.elapsed(), note=message)
        try:
            self.flush()
        except OSError as err:  # the disk is gone: the steps are lost, the loop goes on
            phase = self._active_phase
            if phase is not None:
                with self.flush_lock:
                    phase._drain_rows()
            if self._flusher is not None and self._flusher.error is None:
                self._flusher.error = f"{type(err).__name__}: {err}"

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
        phases = [*self.phases]
        if self._active_phase is not None:
            phases.append(self._active_phase)
        return build_summary(
            run_id=self.run_id,
            name=self.name,
            status=self.status,
            e2e_time=self.elapsed() + self._e2e_offset,
            phases=[p.result() for p in phases],
            meta=self.meta,
            memory=self._memory_fields(),
            flops=self._flops,
            logged=self.logged,
            probe_errors=self.probe_errors,
            error=self.error,
            flush_error=self._flusher.error if self._flusher is not None else None,
        )

    def record_region(self, label: str, start: float, end: float) -> None:
        """Record a region ``region/<label>`` from ``start`` to ``end`` (host clock, s), tied to
        the active phase and its running step (what :class:`perfkit.timed` calls)."""
        phase = self._active_phase
        self._write(
            f"region/{label}",
            end - start,
            "s",
            end - self.t0,
            phase=phase.name if phase else None,
            step=phase.steps if phase and phase.in_step else None,
        )
