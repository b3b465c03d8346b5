"""The metric contract shared by perfkit's metrics (torchmetrics' ``Metric`` in miniature).

A metric declares each piece of state once, with its default and its distributed reduction
(``"sum"``: added over ranks; ``"cat"``: lists concatenated in rank order). ``update`` changes the
local state only; ``compute`` gathers the state of every rank with
:func:`perfkit.distributed.all_gather_object`, reduces it and leaves the local state unchanged;
``reset`` restores the defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from perfkit import distributed
from perfkit._messages import warn

Reduction = Literal["sum", "cat"]


class Metric:
    """Base class: state declared once with its reduction, ``reset``, gathering, update counting."""

    def __init__(self) -> None:
        self._states: dict[str, tuple[Callable[[], Any], Reduction]] = {}
        self._updates = 0

    def add_state(self, name: str, default: Callable[[], Any], reduction: Reduction) -> None:
        """Declare a state attribute: ``default()`` makes its initial value."""
        if name in self._states:
            raise ValueError(f"state {name!r} is already declared")
        if reduction not in ("sum", "cat"):
            raise ValueError(f"reduction must be 'sum' or 'cat', got {reduction!r}")
        self._states[name] = (default, reduction)
        setattr(self, name, default())

    @property
    def update_count(self) -> int:
        """Number of ``update`` calls on this rank since construction or the last ``reset``."""
        return self._updates

    def reset(self) -> None:
        """Restore every state to its default (frees what ``update`` stored)."""
        for name, (default, _) in self._states.items():
            setattr(self, name, default())
        self._updates = 0

    def _updated(self) -> None:
        self._updates += 1

    def _host_state(self, name: str) -> Any:
        """The local value of a state as it is sent to other ranks (override to move it to host)."""
        return getattr(self, name)

    def _synced_state(self) -> dict[str, Any]:
        """Every state reduced over all ranks; warns when this rank has seen no ``update``."""
        if self._updates == 0:
            warn(
                f"{type(self).__name__}.compute() was called before any update(); "
                "the result describes no data"
            )
        gathered = distributed.all_gather_object(
            {name: self._host_state(name) for name in self._states}
        )
        out: dict[str, Any] = {}
        for name, (_, reduction) in self._states.items():
            values = [rank_state[name] for rank_state in gathered]
            if reduction == "cat":
                out[name] = [item for value in values for item in value]
            else:
                total = values[0]
                for value in values[1:]:
                    total = total + value
                out[name] = total
        return out
