"""The IO window behind ``with phase.io():``."""

from __future__ import annotations

from collections.abc import Callable

from perfkit.timing import Clock


class IOWindow:
    """``with phase.io():`` - host-timed IO inside a step (for example a host-to-device copy).

    Each second counts once: an ``io()`` inside another ``io()`` is part of the outer window
    (only the outermost is timed), and an ``io()`` inside a ``compute()`` window is part of
    that compute window (compute, not IO). The phase hands it two calls: ``begin()`` checks
    the phase is active and pauses its implicit compute window, False when the IO is inside
    an open compute window (it then counts as that window's compute); ``end(seconds)`` counts
    ``seconds`` of IO (in the running step, or the phase's outside one)."""

    __slots__ = ("_begin", "_clock", "_end", "counted", "depth", "start")

    def __init__(
        self, begin: Callable[[], bool], end: Callable[[float], None], clock: Clock
    ) -> None:
        self._begin = begin
        self._end = end
        self._clock = clock
        self.start = 0.0  # the outermost window's start (host clock, s)
        self.depth = 0  # open windows, nested
        self.counted = False  # the outermost counts as IO (not inside a compute window)

    def __enter__(self) -> IOWindow:
        if self.depth == 0:
            self.counted = self._begin()
            self.start = self._clock()
        self.depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.depth -= 1
        if self.depth == 0 and self.counted:
            self._end(self._clock() - self.start)
