"""The IO window behind ``with phase.io():``."""

from __future__ import annotations

from typing import Protocol

from perfkit.timing import Clock


class IOOwner(Protocol):
    """What an IO window needs from its phase."""

    def _begin_io(self) -> None:
        """Check the phase is active and pause its implicit compute window."""

    def _end_io(self, seconds: float) -> None:
        """Count ``seconds`` of IO (in the running step, or the phase's outside one)."""


class IOWindow:
    """``with phase.io():`` - host-timed IO inside a step (for example a host-to-device copy)."""

    __slots__ = ("_clock", "_owner", "_start")

    def __init__(self, owner: IOOwner, clock: Clock) -> None:
        self._owner = owner
        self._clock = clock
        self._start = 0.0

    def __enter__(self) -> IOWindow:
        self._owner._begin_io()
        self._start = self._clock()
        return self

    def __exit__(self, *exc: object) -> None:
        self._owner._end_io(self._clock() - self._start)
