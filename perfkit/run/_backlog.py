"""Finished steps waiting for the flusher: preallocated columns, used as a ring.

The step loop writes each finished step into five float64 columns (end, wall, io, compute,
samples) allocated once, when a phase's first loop starts, then publishes it by raising the
phase's step count; nothing is allocated per step. Row ``r`` of a phase lives in slot
``r % capacity``. :meth:`StepBacklog.drain` turns the rows since the last drain into steps.bin
rows (perfkit.records.STEP_COLUMNS) and folds them into the phase's totals; the loop never
writes a slot whose row has not been drained (``Phase._make_room``), so memory is bounded by
``capacity``.
"""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING

from perfkit.records import STEP_COLUMNS

if TYPE_CHECKING:
    import numpy as np

_WIDTH = len(STEP_COLUMNS)


class StepBacklog:
    """``capacity`` rows of finished steps (40 bytes each) and the totals of those drained.

    Columns, by slot: ``end`` (the step's end on the host clock, s), ``wall``, ``io``,
    ``compute`` (s; NaN on a device until its windows resolve), ``samples``. ``drained``: rows
    of the phase already turned into steps.bin rows (or dropped). The totals cover the drained
    rows: ``samples_total``, ``io_total``, ``compute_total`` and every drained step's wall
    time in ``walls`` (for the percentiles). Readers and :meth:`drain` run under the run's
    flush lock; the loop's thread writes slots without it.
    """

    def __init__(self, capacity: int) -> None:
        import numpy  # noqa: F401 - imported here, before the loop, not by the first drain

        zeros = bytes(8 * capacity)
        self.capacity = capacity
        self.end = array("d", zeros)
        self.wall = array("d", zeros)
        self.io = array("d", zeros)
        self.compute = array("d", zeros)
        self.samples = array("d", zeros)
        self.drained = 0
        self.samples_total = 0
        self.io_total = 0.0
        self.compute_total = 0.0
        self.walls = array("d")

    def _pieces(self, start: int, stop: int) -> list[tuple[int, int]]:
        """Slot ranges (first, last + 1) holding rows [start, stop), in row order."""
        if stop <= start:
            return []
        first, last = start % self.capacity, (stop - 1) % self.capacity + 1
        if stop - start <= self.capacity - first:
            return [(first, first + stop - start)]
        return [(first, self.capacity), (0, last)]

    def _columns(self, start: int, stop: int) -> list[np.ndarray]:
        """Rows [start, stop) (at least one) as numpy columns: end, wall, io, compute, samples."""
        import numpy as np

        pieces = self._pieces(start, stop)
        columns = []
        for column in (self.end, self.wall, self.io, self.compute, self.samples):
            view = np.frombuffer(column, dtype=np.float64)
            columns.append(np.concatenate([view[a:b] for a, b in pieces]))
        return columns

    def pending_totals(self, upto: int) -> tuple[int, float, float]:
        """(samples, io s, compute s) of the undrained rows before ``upto``."""
        if upto <= self.drained:
            return 0, 0.0, 0.0
        _end, _wall, io, compute, samples = self._columns(self.drained, upto)
        return int(samples.sum()), float(io.sum()), float(compute.sum())

    def pending_walls(self, upto: int) -> array[float]:
        """Wall times (s) of the undrained rows before ``upto``."""
        walls = array("d")
        for a, b in self._pieces(self.drained, upto):
            walls.extend(self.wall[a:b])
        return walls

    def drain(self, upto: int, ordinal: int, t0: float) -> bytes:
        """steps.bin rows of the rows [drained, upto) - ``ordinal``: the phase's, ``t0``: the
        run's start on the host clock - folded into the totals."""
        import numpy as np

        start = self.drained
        if upto <= start:
            return b""
        end, wall, io, compute, samples = self._columns(start, upto)
        rows = np.empty((upto - start, _WIDTH))
        rows[:, 0] = ordinal
        rows[:, 1] = np.arange(start, upto)
        rows[:, 2] = end - t0
        rows[:, 3] = wall
        rows[:, 4] = io
        rows[:, 5] = compute
        rows[:, 6] = samples
        self.samples_total += int(samples.sum())
        self.io_total += float(io.sum())
        self.compute_total += float(compute.sum())
        self.walls.frombytes(wall.tobytes())
        self.drained = upto
        return rows.tobytes()

    def release(self) -> None:
        """Give the columns' memory back (the phase ended and everything was drained)."""
        for column in (self.end, self.wall, self.io, self.compute, self.samples):
            del column[:]
        self.capacity = 0
