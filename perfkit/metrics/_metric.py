"""The metric contract shared by perfkit's metrics: torchmetrics' ``Metric`` conventions.

A metric declares each piece of state once, with its default and its distributed reduction
(``"sum"``: added over ranks; ``"cat"``: lists concatenated in rank order). ``update`` changes the
local state only; ``compute`` gathers the state of every rank of ``process_group`` with
:func:`perfkit.distributed.all_gather_object` (unless ``sync_on_compute=False``), reduces it and
leaves the local state unchanged; ``reset`` restores the defaults. As in torchmetrics, a metric
can also be called (``forward``: update, and return the value of that batch alone), pickled,
saved and restored (``state_dict`` / ``load_state_dict``) and moved (``to(device)``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

from perfkit import distributed
from perfkit._messages import warn
from perfkit.checks import one_of

Reduction = Literal["sum", "cat"]


def _reduce(values: list[Any], reduction: Reduction) -> Any:
    """Values of one state from several ranks (or several updates), reduced."""
    if reduction == "cat":
        return [item for value in values for item in value]
    total = values[0]
    for value in values[1:]:
        total = total + value
    return total


class Metric:
    """Base class: state declared once with its reduction, ``reset``, gathering, ``forward``,
    ``state_dict``, ``to``.

    Args:
        process_group: the ``torch.distributed`` group ``compute`` gathers over (``None``: the
            job's world).
        sync_on_compute: ``False``: ``compute`` reduces this rank's state only (no collective).
    """

    #: Whether a larger value is better (torchmetrics' attribute); None where it is not a score.
    higher_is_better: ClassVar[bool | None] = None

    def __init__(self, *, process_group: Any = None, sync_on_compute: bool = True) -> None:
        self._states: dict[str, tuple[Callable[[], Any], Reduction]] = {}
        self._updates = 0
        self.process_group = process_group
        self.sync_on_compute = bool(sync_on_compute)

    def add_state(self, name: str, default: Callable[[], Any], reduction: Reduction) -> None:
        """Declare a state attribute: ``default()`` makes its initial value (a picklable
        callable, so that the metric pickles)."""
        if name in self._states:
            raise ValueError(f"state {name!r} is already declared")
        one_of("reduction", reduction, ("sum", "cat"))
        self._states[name] = (default, reduction)
        setattr(self, name, default())

    @property
    def update_count(self) -> int:
        """Number of ``update`` calls on this rank since construction or the last ``reset``."""
        return self._updates

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Add a batch to the local state (each metric defines it)."""
        raise NotImplementedError

    def compute(self) -> Any:
        """The metric over every rank's state (each metric defines it)."""
        raise NotImplementedError

    def _compute(self, state: Mapping[str, Any]) -> Any:
        """The metric's value for ``state`` (every state by name): what ``compute`` returns for
        the synced state and ``forward`` for one batch's."""
        raise NotImplementedError

    def reset(self) -> None:
        """Restore every state to its default (frees what ``update`` stored)."""
        for name, (default, _) in self._states.items():
            setattr(self, name, default())
        self._updates = 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """``update`` with a batch, and return the metric of that batch alone (this rank, no
        gathering), as torchmetrics' ``forward``; the accumulated state includes the batch."""
        before = {
            name: len(getattr(self, name)) if reduction == "cat" else self._host_state(name)
            for name, (_, reduction) in self._states.items()
        }
        self.update(*args, **kwargs)
        batch: dict[str, Any] = {}
        for name, (_, reduction) in self._states.items():
            now = self._host_state(name)
            batch[name] = now[before[name] :] if reduction == "cat" else now - before[name]
        return self._compute(batch)

    __call__ = forward

    def state_dict(self) -> dict[str, Any]:
        """A copy of every state (on the host) and the update count, for ``load_state_dict``."""
        out = {name: copy.deepcopy(self._host_state(name)) for name in self._states}
        out["_update_count"] = self._updates
        return out

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the states of ``state_dict`` (from ``state_dict()`` of a metric of the same
        class and arguments); the metric then continues as the saved one would."""
        missing = [name for name in (*self._states, "_update_count") if name not in state_dict]
        if missing:
            raise ValueError(
                f"Expected argument `state_dict` to hold the states {sorted(missing)} of "
                f"{type(self).__name__} but got one without them"
            )
        for name in self._states:
            setattr(self, name, copy.deepcopy(state_dict[name]))
        self._updates = int(state_dict["_update_count"])

    def to(self, device: Any) -> Metric:
        """Move tensor states to ``device`` (``"cuda:0"``, a ``torch.device``); returns self.
        Host (numpy, list) states stay where they are."""
        for name in self._states:
            value = getattr(self, name)
            if hasattr(value, "to") and hasattr(value, "device"):  # a torch tensor
                setattr(self, name, value.to(device))
        return self

    def _updated(self) -> None:
        self._updates += 1

    def _host_state(self, name: str) -> Any:
        """The local value of a state as it is sent to other ranks (override to move it to host)."""
        return getattr(self, name)

    def _synced_state(self) -> dict[str, Any]:
        """Every state reduced over the ranks of ``process_group`` (this rank's alone with
        ``sync_on_compute=False``); warns when this rank has seen no ``update``."""
        if self._updates == 0:
            warn(
                f"{type(self).__name__}.compute() was called before any update(); "
                "the result describes no data"
            )
        local = {name: self._host_state(name) for name in self._states}
        gathered = (
            distributed.all_gather_object(local, group=self.process_group)
            if self.sync_on_compute
            else [local]
        )
        return {
            name: _reduce([rank_state[name] for rank_state in gathered], reduction)
            for name, (_, reduction) in self._states.items()
        }
