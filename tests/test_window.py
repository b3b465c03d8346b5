"""The compute window: per-step sums on the host, marks handed to the phase otherwise."""

from __future__ import annotations

from typing import Any

import pytest

from perfkit.run import RunError
from perfkit.timing.window import ComputeWindow
from tests.conftest import FakeClock


class Owner:
    """The two calls a window makes into its phase, recorded."""

    def __init__(self) -> None:
        self.added: list[tuple[Any, Any]] = []

    def refuse(self) -> None:
        raise RunError("refused")

    def add(self, start: Any, end: Any) -> None:
        self.added.append((start, end))


def active_window(host: bool) -> tuple[FakeClock, Owner, ComputeWindow]:
    """(clock at 100.0 s, owner, a window on that clock, active)."""
    clock = FakeClock()
    owner = Owner()
    window = ComputeWindow(owner.refuse, owner.add, clock, host)
    window.active = True
    return clock, owner, window


def test_host_windows_sum_per_step() -> None:
    clock, owner, window = active_window(host=True)
    window.in_step = True  # what the step loop does
    with window:
        clock.advance(0.25)
    clock.advance(1.0)  # between windows: not counted
    with window:
        clock.advance(0.5)
    window.in_step = False
    assert window.marked
    assert (window.count, window.seconds, window.io_s) == (2, 0.75, 0.0)  # 0.25 + 0.5; no IO
    with window:  # outside a step: handed to the phase as marks
        clock.advance(2.0)
    assert owner.added == [(101.75, 103.75)]  # 100 + 0.25 + 1.0 + 0.5 = 101.75, then + 2.0


def test_device_windows_go_to_the_phase() -> None:
    clock, owner, window = active_window(host=False)
    window.in_step = True
    with window:
        clock.advance(0.5)
    # on a device the seconds come when the marks resolve: the window only says "used"
    assert window.marked and (window.count, window.seconds) == (1, 0.0)
    assert owner.added == [(100.0, 100.5)]


def test_refusals_and_exceptions() -> None:
    clock = FakeClock()
    owner = Owner()
    window = ComputeWindow(owner.refuse, owner.add, clock, True)
    with pytest.raises(RunError, match="refused"), window:  # not active yet
        pass
    window.active = True
    with window, pytest.raises(RunError, match="refused"), window:  # nested
        pass
    assert not window.open
    window.in_step = True
    with pytest.raises(ValueError, match="body"), window:  # the body's error propagates
        clock.advance(0.125)
        raise ValueError("body")
    assert (window.count, window.seconds) == (1, 0.125)
