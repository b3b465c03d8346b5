"""The Run <-> Phase interface: every call between ``_run.py`` and ``_phase.py`` besides their
public names (a Phase also reads its Run's ``clock``, ``timer``, ``rank``, ``t0``,
``flush_lock`` and ``elapsed()``; a Run its phases' ``name``, ``kind``, ``ordinal``,
``in_step``, ``start_t``, ``tokens_from``, ``figures_by_rank()``, ``result()`` and ``devices``).

:meth:`perfkit.Run.phase` hands each new Phase a :class:`PhaseHost` (the Run's side); the Phase
hands its Run a :class:`PhaseControl` (the phase's side) when it starts. Each side fills its
tuple with its own methods, so neither module calls a private name of the other; both sides
are declared here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from perfkit.run._backlog import Columns
    from perfkit.run._phase import Phase
    from perfkit.run._run import Run
    from perfkit.summary import PhaseTotals


class PhaseControl(NamedTuple):
    """What a Run does to one of its phases."""

    #: The phase controlled.
    phase: Phase
    #: End the phase now (the run stops while it is active); the argument, ``failed``: cut
    #: short - the step under way does not count and no collective runs.
    finish: Callable[[bool], None]
    #: steps.bin rows of the finished steps whose compute time is known; the caller holds the
    #: run's ``flush_lock``.
    drain_rows: Callable[[], bytes | memoryview]
    #: Turn the device windows the device has reached into seconds (never blocks).
    resolve: Callable[[], None]
    #: A phase of another kind starts inside this one: stop this phase's clock.
    pause: Callable[[], None]
    #: The phase that paused this one ended: this phase's clock goes on.
    resume: Callable[[], None]
    #: The index of the step whose body runs now; None between steps.
    running_step: Callable[[], int | None]


class PhaseHost(NamedTuple):
    """What a Phase asks of its Run."""

    #: The Run (its public clock, timer, rank, t0, flush_lock, elapsed()).
    run: Run
    #: Make the phase the active one (pausing the active phase, when there is one); returns
    #: its position among this rank's phases, from 0.
    begin_phase: Callable[[PhaseControl], int]
    #: Device energy since the active phase began or resumed (J); None without a counter.
    phase_energy_j: Callable[[], float | None]
    #: Every rank's figures for the phase that just ended; None when not distributed.
    gather_figures: Callable[[PhaseTotals], dict[int, PhaseTotals] | None]
    #: The phase ended: write its steps and records, resume the phase it paused.
    end_phase: Callable[[PhaseControl], None]
    #: Record a failure once (the summary's faults); the run goes on.
    fault: Callable[[str], None]
    #: ``steps`` finished steps fill a phase's backlog: wait for the flusher to write them
    #: (or, when it does not keep up, write them from the calling thread).
    steps_waiting: Callable[[int], None]
    #: The spare step columns for a phase's first loop (None: the phase allocates).
    take_columns: Callable[[], Columns | None]
    #: A phase's step columns, released when its last row was written: the next phase's.
    keep_columns: Callable[[Columns], None]
