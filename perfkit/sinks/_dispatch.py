"""A Run's sinks: each call guarded (a sink that raises is disabled and recorded as a fault,
never raised into the loop), phase updates bounded to one per sink's ``min_interval_s``."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from perfkit import checks
from perfkit.sinks._base import Sink


def check_sinks(sinks: Any) -> list[Sink]:
    """``sinks`` (None or a list / tuple of :class:`~perfkit.sinks.Sink`) as a list."""
    if sinks is None:
        return []
    if not isinstance(sinks, (list, tuple)) or not all(isinstance(s, Sink) for s in sinks):
        raise checks.wrong_type("sinks", "a list of perfkit.sinks.Sink instances, or None", sinks)
    return list(sinks)


class SinkSet:
    """The sinks of one run. ``fault(message)`` records a sink's failure; ``clock`` (seconds,
    monotonic) decides the rate bound."""

    def __init__(
        self,
        sinks: Sequence[Sink],
        fault: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._live = list(sinks)
        self._fault = fault
        self._clock = clock
        self._last_sent: dict[int, float] = {}
        self._count: dict[str, int] = {}  # phases seen per name: the next one's step
        #: per sink: phase name -> (figures, step, wall time) not sent yet
        self._pending: dict[int, dict[str, tuple[Mapping[str, float], int, float]]] = {}

    def _call(self, sink: Sink, method: str, *args: Any) -> None:
        if sink not in self._live:
            return
        try:
            getattr(sink, method)(*args)
        except Exception as err:  # a sink's own failure, whatever it is: never the loop's
            self._live.remove(sink)
            self._fault(
                f"sink {type(sink).__name__} failed in {method}() and was disabled: "
                f"{type(err).__name__}: {err}"
            )
            if method != "close":
                self._call_close(sink)

    def _call_close(self, sink: Sink) -> None:
        with contextlib.suppress(Exception):  # already recorded as failed: best effort
            sink.close()

    def start(self, run_id: str, name: str, config: Mapping[str, Any]) -> None:
        for sink in list(self._live):
            self._call(sink, "start", run_id, name, config)

    def phase(self, name: str, figures: Mapping[str, float]) -> None:
        """A phase named ``name`` ended with ``figures``: sent to each sink now (step: the
        phase's index among the phases of its name), or kept (the latest per phase name)
        until the sink's ``min_interval_s`` has passed."""
        now, wall = self._clock(), time.time()
        step = self._count.get(name, 0)
        self._count[name] = step + 1
        for sink in list(self._live):
            pending = self._pending.setdefault(id(sink), {})
            pending[name] = (figures, step, wall)
            last = self._last_sent.get(id(sink))
            if last is None or now - last >= sink.min_interval_s:
                self._send_pending(sink)
                self._last_sent[id(sink)] = now

    def _send_pending(self, sink: Sink) -> None:
        for figures, step, wall in self._pending.pop(id(sink), {}).values():
            self._call(sink, "phase", figures, step, wall)

    def finish(self, summary: Mapping[str, Any]) -> None:
        """Send what is pending and the summary, then close every sink."""
        wall = time.time()
        for sink in list(self._live):
            self._send_pending(sink)
            self._call(sink, "summary", summary, wall)
            self._call(sink, "close")
        self._live = []
