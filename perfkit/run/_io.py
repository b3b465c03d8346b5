"""The IO window behind ``with phase.io():``."""

from __future__ import annotations

from typing import Protocol

from perfkit.timing import Clock


class IOOwner(Protocol):
    """What an IO window needs from its phase."""

    def _begin_io(self) -> bool:
        """Check the phase is active and pause its implicit compute window; False when the IO
        is inside an open compute window (it then counts as that window's compute)."""

    def _end_io(self, seconds: float) -> None:
        """Count ``seconds`` of IO (in the running step, or the phase's outside one)."""


class IOWindow:
    """``with phase.io():`` - host-timed IO inside a step (for example a host-to-device copy).

    Each second counts once: an ``io()`` inside another ``io()`` is part of the outer window
    (only the outermost is timed), and an ``io()`` inside a ``compute()`` window is part of
    that compute window (compute, not IO)."""

    __slots__ = ("_clock", "_owner", "counted", "depth", "start")

    def __init__(self, owner: IOOwner, clock: Clock) -> None:
        self._owner = owner
        self._clock = clock
        self.start = 0.0  # the outermost window's start (host clock, s)
        self.depth = 0  # open windows, nested
        self.counted = False  # the outermost counts as IO (not inside a compute window)

    def __enter__(self) -> IOWindow:
        if self.depth == 0:
            self.counted = self._owner._begin_io()
            self.start = self._clock()
        self.depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.depth -= 1
        if self.depth == 0 and self.counted:
            self._owner._end_io(self._clock() - self.start)
