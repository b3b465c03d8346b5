"""``@perfkit.timed``: named regions timed on the host clock inside the active run."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from perfkit import checks
from perfkit.run._active import active_run

if TYPE_CHECKING:
    from perfkit.run._run import Run

_F = TypeVar("_F", bound=Callable[..., Any])


class timed:
    """A named region timed on the host clock inside the active run.

    Decorator (``@perfkit.timed("preprocess")``) or context manager
    (``with perfkit.timed("decode"):``). Each call writes a record named ``region/<label>`` with
    its duration in seconds. Outside an active run it does nothing, so library code can keep the
    decorator. One instance may be shared by threads: each thread times its own calls. In a
    forked child (a DataLoader worker) no run is active: it does nothing there either.
    """

    def __init__(self, label: str) -> None:
        self.label = checks.non_empty_str("label", label)
        self._local = threading.local()  # one start stack per thread: one timed, many threads

    def __reduce__(self) -> tuple[type[timed], tuple[str]]:
        """Pickled by its label (a dataset holding one goes to spawn / forkserver workers)."""
        return (timed, (self.label,))

    def _starts(self) -> list[tuple[Run | None, float]]:
        starts: list[tuple[Run | None, float]] | None = getattr(self._local, "starts", None)
        if starts is None:
            starts = self._local.starts = []
        return starts

    def __call__(self, func: _F) -> _F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    def __enter__(self) -> timed:
        run = active_run()
        self._starts().append((run, run.clock() if run is not None else 0.0))
        return self

    def __exit__(self, *exc: object) -> None:
        run, start = self._starts().pop()
        if run is not None and run.status == "running":
            run.record_region(self.label, start, run.clock())
