"""Finished steps waiting for the flusher: preallocated columns, used as a ring.

The step loop writes each finished step into columns allocated once, when a phase's first loop
starts (float64; the counts int64, where an int is stored without a float made of it), then
publishes it by raising the phase's step count; nothing is allocated per step, and only what
the loop cannot know later is written: the step's end, its IO seconds, its samples, its tokens
and, where the step marked compute windows, their seconds. Wall times follow
from consecutive ends (a loop's first step from the loop's start, kept in ``starts``); a host step
without compute windows computed for its whole body (wall - IO). Row ``r`` of a phase lives in
slot ``r % capacity``. :meth:`StepBacklog.drain` turns the rows since the last drain into
steps.bin rows (perfkit.records.STEP_COLUMNS) and folds them into the phase's totals; the loop
never writes a slot whose row has not been drained (``Phase._make_room``), so memory is bounded
by ``capacity``.
"""

from __future__ import annotations

import math
from array import array
from typing import TYPE_CHECKING

from perfkit.records import STEP_COLUMNS

if TYPE_CHECKING:
    import numpy as np

_WIDTH = len(STEP_COLUMNS)

#: The five columns of a backlog: end, io, compute (float64), samples, tokens (int64).
Columns = tuple["array[float]", "array[float]", "array[float]", "array[int]", "array[int]"]


def new_columns(capacity: int) -> Columns:
    """Five columns of ``capacity`` slots (float64, then int64 for the counts); compute all
    NaN."""
    zeros = bytes(8 * capacity)
    return (
        array("d", zeros),
        array("d", zeros),
        array("d", [math.nan]) * capacity,
        array("q", zeros),
        array("q", zeros),
    )


class StepBacklog:
    """``capacity`` rows of finished steps (40 bytes each) and the totals of those drained.

    Columns, by slot: ``end`` (the step's end on the host clock, s), ``io`` (s), ``compute``
    (s; NaN where the step marked no compute window - on a device, until its windows resolve),
    ``samples``, ``tokens``. ``starts``: {row: start of the loop it begins, s}. ``paused``:
    {row: seconds the phase was paused, for another kind's phase, during that step}, left out
    of its wall time; ``paused_io``: those of them that fell in the step's wait for data, left
    out of its IO too. ``drained``: rows of the phase already turned into steps.bin rows (or
    dropped). The totals cover the drained rows: ``samples_total``, ``tokens_total``,
    ``io_total``, ``compute_total`` and every drained step's wall time in ``walls`` (for the
    percentiles). Readers and :meth:`drain` run under the run's flush lock; the loop's thread
    writes slots without it. ``host``: compute seconds are the host's (a step without windows
    computed for its wall time less its IO). Rows before ``warmup`` are warm-up steps: their
    samples, tokens and wall times go to ``warmup_samples_total``, ``warmup_tokens_total`` and
    ``warmup_wall_total`` only, not to the other totals nor ``walls``.
    """

    def __init__(
        self, capacity: int, host: bool, warmup: int = 0, columns: Columns | None = None
    ) -> None:
        import numpy as np  # imported here, before the loop, not by the first drain

        if columns is None or len(columns[0]) != capacity:
            columns = new_columns(capacity)
        else:  # an ended phase's columns (Run keeps them): only compute must start over
            np.frombuffer(columns[2], dtype=np.float64)[:] = np.nan
        self.capacity = capacity
        self.host = host
        self.end, self.io, self.compute, self.samples, self.tokens = columns
        self.starts: dict[int, float] = {}
        self.paused: dict[int, float] = {}
        self.paused_io: dict[int, float] = {}
        self.drained = 0
        self._last_end = math.nan  # the end of the last drained row
        self.samples_total = 0
        self.io_total = 0.0
        self.compute_total = 0.0
        self.walls = array("d")
        self.warmup = warmup
        self.warmup_samples_total = 0
        self.warmup_wall_total = 0.0
        self.tokens_total = 0
        self.warmup_tokens_total = 0

    def _pieces(self, start: int, stop: int) -> list[tuple[int, int]]:
        """Slot ranges (first, last + 1) holding rows [start, stop), in row order."""
        if stop <= start:
            return []
        first, last = start % self.capacity, (stop - 1) % self.capacity + 1
        if stop - start <= self.capacity - first:
            return [(first, first + stop - start)]
        return [(first, self.capacity), (0, last)]

    def _columns(self, start: int, stop: int) -> list[np.ndarray]:
        """Rows [start, stop) (at least one) as numpy columns: end, wall, io, compute,
        samples, tokens."""
        import numpy as np

        pieces = self._pieces(start, stop)
        end, io, compute, samples, tokens = (
            np.concatenate([np.frombuffer(column, column.typecode)[a:b] for a, b in pieces])
            for column in (self.end, self.io, self.compute, self.samples, self.tokens)
        )
        before = np.empty_like(end)  # each step's start: the end before it, or its loop's start
        before[0] = self._last_end
        before[1:] = end[:-1]
        for row, t0 in self.starts.items():
            if start <= row < stop:
                before[row - start] = t0
        wall = end - before
        for paused, column in ((self.paused, wall), (self.paused_io, io)):
            for row, seconds in paused.items():
                if start <= row < stop:
                    column[row - start] -= seconds
        if self.host:
            compute = np.where(np.isnan(compute), wall - io, compute)
        return [end, wall, io, compute, samples, tokens]

    def _totals(
        self, start: int, stop: int
    ) -> tuple[list[np.ndarray], tuple[int, float, float, int, float, int, int]]:
        """(columns of rows [start, stop), (steady samples, io s, compute s, warm-up samples,
        warm-up wall s, steady tokens, warm-up tokens)) - the warm-up rows' figures apart."""
        _end, wall, io, compute, samples, tokens = columns = self._columns(start, stop)
        warm = max(min(self.warmup - start, stop - start), 0)  # leading warm-up rows
        totals = (
            int(samples[warm:].sum()),
            float(io[warm:].sum()),
            float(compute[warm:].sum()),
            int(samples[:warm].sum()),
            float(wall[:warm].sum()),
            int(tokens[warm:].sum()),
            int(tokens[:warm].sum()),
        )
        return columns, totals

    def pending_totals(self, upto: int) -> tuple[int, float, float, int, float, int, int]:
        """(samples, io s, compute s, warm-up samples, warm-up wall s, tokens, warm-up tokens)
        of the undrained rows before ``upto``."""
        if upto <= self.drained:
            return 0, 0.0, 0.0, 0, 0.0, 0, 0
        return self._totals(self.drained, upto)[1]

    def pending_walls(self, upto: int) -> array[float]:
        """Wall times (s) of the undrained steady-state rows before ``upto``."""
        start = max(self.drained, self.warmup)
        if upto <= start:
            return array("d")
        return array("d", self._columns(self.drained, upto)[1][start - self.drained :].tobytes())

    def drain(self, upto: int, ordinal: int, t0: float) -> memoryview:
        """steps.bin rows of the rows [drained, upto) - ``ordinal``: the phase's, ``t0``: the
        run's start on the host clock - folded into the totals; their slots are free again.
        The rows' bytes are a view of the array built here (written without a copy)."""
        import numpy as np

        start = self.drained
        if upto <= start:
            return memoryview(b"")
        (end, wall, io, compute, samples, tokens), totals = self._totals(start, upto)
        rows = np.empty((upto - start, _WIDTH))
        rows[:, 0] = ordinal
        rows[:, 1] = np.arange(start, upto)
        rows[:, 2] = end - t0
        rows[:, 3] = wall
        rows[:, 4] = io
        rows[:, 5] = compute
        rows[:, 6] = samples
        rows[:, 7] = tokens
        self.samples_total += totals[0]
        self.io_total += totals[1]
        self.compute_total += totals[2]
        self.warmup_samples_total += totals[3]
        self.warmup_wall_total += totals[4]
        self.tokens_total += totals[5]
        self.warmup_tokens_total += totals[6]
        self.walls.frombytes(wall[max(self.warmup - start, 0) :].tobytes())
        for a, b in self._pieces(start, upto):
            np.frombuffer(self.compute, dtype=np.float64)[a:b] = np.nan
        for by_row in (self.starts, self.paused, self.paused_io):
            for row in [row for row in by_row if row < upto]:
                del by_row[row]
        self._last_end = float(end[-1])
        self.drained = upto
        return rows.data.cast("B")

    def columns(self) -> Columns:
        """The five columns, by slot: end, io, compute, samples, tokens."""
        return self.end, self.io, self.compute, self.samples, self.tokens

    def fill_tokens(self, start: int, stop: int, tokens: int) -> None:
        """Write ``tokens`` in the tokens slots of rows [start, stop) (none undrained): the
        count of every step of a loop that counts the same tokens each step, written once for
        the rows up to its next limit (``Phase._make_room``) rather than at each step."""
        import numpy as np

        for a, b in self._pieces(start, stop):
            np.frombuffer(self.tokens, dtype=np.int64)[a:b] = tokens

    def release(self) -> Columns:
        """Hand the columns over, for the next phase to reuse (this phase ended and everything
        was drained; its totals and wall times stay)."""
        columns = self.columns()
        self.end, self.io, self.compute = array("d"), array("d"), array("d")
        self.samples, self.tokens = array("q"), array("q")
        self.capacity = 0
        return columns
