"""A Run and the process it lives in: forked children and the interpreter's exit.

- **Fork.** A child forked while a run is active (a DataLoader worker, ``os.fork()``) gets a
  copy of the Run but none of its threads, and possibly locks those threads held at the fork.
  In the child every live Run is *detached* (:meth:`Run._detach_after_fork`): it records and
  writes nothing (``perfkit.timed``, ``run.log``, its phases and ``stop()`` are no-ops there), its
  locks are new and its copies of the record files' descriptors are closed; no run is active,
  so the child may start a Run of its own. The parent's records and summary are the parent's
  alone.
- **Exit.** At interpreter exit (``atexit``) a run still open is closed: its steps and events
  are flushed and its summary written, with status ``failed`` when an uncaught exception ended
  the program (``sys.last_value``), else ``unfinished`` (:meth:`Run._close_at_exit`); a
  ``stop()`` cut short by an interrupt is finished.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from perfkit._messages import logger
from perfkit.run._active import set_active_run

if TYPE_CHECKING:
    from perfkit.run._run import Run


#: Runs started in this process and not completely stopped yet: {run: (detach, close)}.
_live: dict[Run, tuple[Callable[[], None], Callable[[], None]]] = {}


def add_live(run: Run, detach: Callable[[], None], close: Callable[[], None]) -> None:
    """``run`` has started: ``close()`` it at exit, ``detach()`` it in forked children."""
    _live[run] = (detach, close)


def discard_live(run: Run) -> None:
    """``run`` has stopped completely."""
    _live.pop(run, None)


def _after_fork_in_child() -> None:
    set_active_run(None)
    for detach, _close in list(_live.values()):
        detach()
    _live.clear()


def _at_exit() -> None:
    for run, (_detach, close) in list(_live.items()):
        try:
            close()
        except BaseException:  # never raise at exit; the records flushed so far stay
            logger.exception("perfkit: run %s could not be closed at exit", run.name)


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
