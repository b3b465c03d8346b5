"""Run and Phase: the run's lifetime, the step loop, IO / compute windows and timed regions.

A :class:`Run` spans one benchmark (a training job or an inference pass); inside it, phases of
kind ``"train"``, ``"val"`` or ``"infer"`` wrap the loops. :meth:`Phase.iterate` wraps any
iterable: the time blocked in ``next()`` is IO, the loop body is compute, unless the user marks
finer windows with :meth:`Phase.io` and :meth:`Phase.compute`. The summary's metrics are declared
in :mod:`perfkit.figures` and computed in :mod:`perfkit.summary`.

One job per module: ``_run`` (lifetime, probes, summary), ``_phase`` (a phase and its step
loop), ``_host`` (the Run <-> Phase interface), ``_backlog`` (finished steps waiting for the
flusher), ``_io`` (the IO window; the
compute window is :mod:`perfkit.timing.window`), ``_samples`` (sample counting), ``_timed``
(regions), ``_flusher`` (the writer thread), ``_setup`` (device, timer, run directory,
metadata), ``_active`` (the active run), ``_process`` (forked children, interpreter exit).
"""

from __future__ import annotations

from perfkit.figures import PHASE_KINDS, THROUGHPUT_NAMES
from perfkit.run._active import active_run
from perfkit.run._errors import RunError
from perfkit.run._phase import Phase
from perfkit.run._run import E2E_FROM, SYNC_MODES, Run
from perfkit.run._samples import count_samples
from perfkit.run._timed import timed
from perfkit.summary import PhaseTotals, rate_fields

__all__ = [
    "E2E_FROM",
    "PHASE_KINDS",
    "SYNC_MODES",
    "THROUGHPUT_NAMES",
    "Phase",
    "PhaseTotals",
    "Run",
    "RunError",
    "active_run",
    "count_samples",
    "rate_fields",
    "timed",
]
