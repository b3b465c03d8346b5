"""The compute window behind ``with phase.compute():``.

:class:`ComputeWindow` is the reference implementation; ``perfkit.timing._cwindow`` does the
same in C (built when a C compiler is present at install), because a window's Python-level
``__enter__`` / ``__exit__`` cost about twice the C ones (320 against 165 ns per window in
benchmarks/overhead.py's machine), most of it interpreter frames, not the two clock reads.
Phases use :data:`window_class`: the C class when it was built, else the Python one.

A window holds the state a step needs from it: whether a step of ``Phase.iterate`` is running
(``in_step``, kept by the step loop) and, on the host clock, the seconds of the windows closed in
that step (returned by :meth:`~ComputeWindow.end_step`). Windows outside a step, and every
window on a device, go to the phase's ``_add_window(start, end)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class WindowOwner(Protocol):
    """What a window needs from its phase."""

    def _refuse_compute(self) -> None:
        """Raise the error for a window opened while one is open or the phase is not active."""

    def _add_window(self, start: Any, end: Any) -> None:
        """Count a window that is not a host window inside a step."""


class ComputeWindow:
    """A phase's compute window. ``mark`` is the phase timer's mark; ``host``: marks are
    host-clock seconds, summed here per step. The phase sets ``active`` while it runs."""

    __slots__ = (
        "_count",
        "_host",
        "_mark",
        "_phase",
        "_seconds",
        "_start",
        "active",
        "in_step",
        "open",
    )

    def __init__(self, phase: WindowOwner, mark: Callable[[], Any], host: bool) -> None:
        self._phase = phase
        self._mark = mark
        self._host = host
        self._start: Any = None
        self._seconds = 0.0
        self._count = 0
        self.active = False
        self.in_step = False
        self.open = False

    def __enter__(self) -> ComputeWindow:
        if self.open or not self.active:
            self._phase._refuse_compute()
        self._start = self._mark()
        self.open = True
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        end = self._mark()
        self.open = False
        if self.in_step:
            self._count += 1
            if self._host:
                self._seconds += end - self._start
                return
        self._phase._add_window(self._start, end)

    def begin_step(self) -> None:
        """A step of ``Phase.iterate`` starts."""
        self.in_step = True

    def end_step(self) -> float | None:
        """The step ends: host seconds of the windows closed in it (0.0 on a device, whose
        seconds come when its marks resolve), or None when none closed."""
        self.in_step = False
        if not self._count:
            return None
        seconds = self._seconds
        self._seconds = 0.0
        self._count = 0
        return seconds


NativeComputeWindow: type[ComputeWindow] | None
try:
    from perfkit.timing._cwindow import ComputeWindow as NativeComputeWindow
except ImportError:  # installed without a C compiler: the Python class does the same, slower
    NativeComputeWindow = None

#: The window class phases use: the C one when it was built.
window_class: type[ComputeWindow] = NativeComputeWindow or ComputeWindow
