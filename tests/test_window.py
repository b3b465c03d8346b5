"""The compute window: the C class behaves exactly as the Python reference."""

from __future__ import annotations

import shutil
import sysconfig
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perfkit.run import RunError
from perfkit.timing import window as window_module
from perfkit.timing.window import ComputeWindow, NativeComputeWindow
from tests.conftest import FakeClock


class Owner:
    """The two calls a window makes into its phase, recorded."""

    def __init__(self) -> None:
        self.added: list[tuple[Any, Any]] = []

    def _refuse_compute(self) -> None:
        raise RunError("refused")

    def _add_window(self, start: Any, end: Any) -> None:
        self.added.append((start, end))


def active_window(cls: type[ComputeWindow], host: bool) -> tuple[FakeClock, Owner, ComputeWindow]:
    """(clock at 100.0 s, owner, a window of class ``cls`` on that clock, active)."""
    clock = FakeClock()
    owner = Owner()
    window = cls(owner, clock, host)
    window.active = True
    return clock, owner, window


def test_the_c_window_is_built_where_a_compiler_is() -> None:
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler):
        assert NativeComputeWindow is not None, "C compiler present but _cwindow not built"
        assert window_module.window_class is NativeComputeWindow
    else:
        assert window_module.window_class is ComputeWindow


def test_host_windows_sum_per_step(window_class: type[ComputeWindow]) -> None:
    clock, owner, window = active_window(window_class, host=True)
    window.begin_step()
    assert window.in_step
    with window:
        clock.advance(0.25)
    clock.advance(1.0)  # between windows: not counted
    with window:
        clock.advance(0.5)
    assert window.end_step() == 0.75  # 0.25 + 0.5
    assert not window.in_step
    window.begin_step()
    assert window.end_step() is None  # no window in this step: the body counts instead
    with window:  # outside a step: handed to the phase as marks
        clock.advance(2.0)
    assert owner.added == [(101.75, 103.75)]  # 100 + 0.25 + 1.0 + 0.5 = 101.75, then + 2.0


def test_device_windows_go_to_the_phase(window_class: type[ComputeWindow]) -> None:
    clock, owner, window = active_window(window_class, host=False)
    window.begin_step()
    with window:
        clock.advance(0.5)
    # on a device the seconds come when the marks resolve: end_step only says "used"
    assert window.end_step() == 0.0
    assert owner.added == [(100.0, 100.5)]


def test_refusals_and_exceptions(window_class: type[ComputeWindow]) -> None:
    clock = FakeClock()
    window = window_class(Owner(), clock, True)
    with pytest.raises(RunError, match="refused"), window:  # not active yet
        pass
    window.active = True
    with window, pytest.raises(RunError, match="refused"), window:  # nested
        pass
    assert not window.open
    window.begin_step()
    with pytest.raises(ValueError, match="body"), window:  # the body's error propagates
        clock.advance(0.125)
        raise ValueError("body")
    assert window.end_step() == 0.125


OPS = st.lists(
    st.tuples(
        st.sampled_from(["begin", "end", "window", "raising", "nested", "inactive"]),
        st.sampled_from([0.0, 0.125, 0.3, 1.0, 2.5]),
    ),
    max_size=30,
)


def drive(cls: type[ComputeWindow], host: bool, ops: list[tuple[str, float]]) -> list[Any]:
    """Apply ``ops`` to a window; everything observable, in order."""
    clock, owner, window = active_window(cls, host)
    seen: list[Any] = []
    for op, seconds in ops:
        try:
            if op == "begin":
                window.begin_step()
            elif op == "end":
                seen.append(window.end_step())
            elif op == "window":
                with window:
                    clock.advance(seconds)
            elif op == "raising":
                with window:
                    clock.advance(seconds)
                    raise ValueError
            elif op == "nested":
                with window, window:
                    pass
            else:
                window.active = False
                with window:
                    pass
        except (ValueError, RunError) as err:
            seen.append(type(err).__name__)
        finally:
            window.active = True
        seen.append((window.in_step, window.open))
    return [*seen, owner.added]


@pytest.mark.skipif(NativeComputeWindow is None, reason="the C window was not built")
@settings(max_examples=300, deadline=None)
@given(ops=OPS, host=st.booleans())
def test_c_window_matches_the_python_reference(ops: list[tuple[str, float]], host: bool) -> None:
    assert NativeComputeWindow is not None
    assert drive(NativeComputeWindow, host, ops) == drive(ComputeWindow, host, ops)
