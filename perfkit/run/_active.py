"""The Run currently started in this process (runs do not nest)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from perfkit.run._run import Run

_active_run: Run | None = None


def active_run() -> Run | None:
    """The Run currently started in this process, or None."""
    return _active_run


def set_active_run(run: Run | None) -> None:
    """Make ``run`` the active run (None when it stops)."""
    global _active_run
    _active_run = run
