"""The compute window behind ``with phase.compute():``.

A window also holds the state a step needs from it, kept without a method call per step: the
step loop sets ``in_step`` while a step of ``Phase.iterate`` runs; a window closed in a step
sets ``marked``, counts itself in ``count`` and, on the host clock, adds its seconds to
``seconds``; the phase's IO windows add theirs to ``io_s`` (and set ``marked``). The loop reads
them, and sets them back to none, only when ``marked`` is set. Windows outside a step, and
every window on a device, go to the phase's ``add(start, end)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class ComputeWindow:
    """A phase's compute window; the phase hands it two calls: ``refuse()`` raises the error
    for a window opened while one is open or the phase is not active, ``add(start, end)``
    counts a window that is not a host window inside a step. ``mark`` is the phase timer's
    mark; ``host``: marks are host-clock seconds, summed here per step. The phase sets
    ``active`` while it runs."""

    __slots__ = (
        "_add",
        "_host",
        "_mark",
        "_refuse",
        "_start",
        "active",
        "count",
        "in_step",
        "io_s",
        "marked",
        "open",
        "seconds",
    )

    def __init__(
        self,
        refuse: Callable[[], None],
        add: Callable[[Any, Any], None],
        mark: Callable[[], Any],
        host: bool,
    ) -> None:
        self._refuse = refuse
        self._add = add
        self._mark = mark
        self._host = host
        self._start: Any = None
        self.active = False
        self.in_step = False
        self.open = False
        self.marked = False  # an IO or compute window closed in the running step
        self.count = 0  # compute windows closed in the running step
        self.seconds = 0.0  # their host seconds
        self.io_s = 0.0  # seconds of IO windows in the running step

    def __enter__(self) -> ComputeWindow:
        if self.open or not self.active:
            self._refuse()
        self._start = self._mark()
        self.open = True
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        end = self._mark()
        self.open = False
        if self.in_step:
            self.count += 1
            self.marked = True
            if self._host:
                self.seconds += end - self._start
                return
        self._add(self._start, end)
