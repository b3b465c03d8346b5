"""The run directory held open, so its files are written through it, never through a path.

A symbolic link put in place of the run directory (or of one of its files) while the run goes
on is never followed: files are opened relative to the directory's descriptor with
``O_NOFOLLOW``. A run directory moved away keeps receiving the run's files; one deleted is made
again by name in the same parent, unless something else has taken the name (a link, a file):
then writing fails with an OSError, which the writers record as a fault.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
#: Added to every open of a run directory's file or of the directory itself.
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class RunDirectory:
    """The directory ``path``, opened (not following a link) and kept open until
    :meth:`close`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._parent = os.open(path.parent, _DIR_FLAGS)
        try:
            self._fd = os.open(path.name, _DIR_FLAGS | NOFOLLOW, dir_fd=self._parent)
        except BaseException:
            os.close(self._parent)
            raise
        #: How many times the directory was made again after it was deleted.
        self.recreated = 0

    def fd(self) -> int:
        """The directory's descriptor; a deleted directory is made again first (OSError when
        its name is taken by something else: never followed)."""
        if os.fstat(self._fd).st_nlink > 0:
            return self._fd
        with contextlib.suppress(FileExistsError):  # a link there fails the open below
            os.mkdir(self.path.name, dir_fd=self._parent)
        fd = os.open(self.path.name, _DIR_FLAGS | NOFOLLOW, dir_fd=self._parent)
        os.close(self._fd)
        self._fd = fd
        self.recreated += 1
        return fd

    def close(self) -> None:
        """Close both descriptors (idempotent)."""
        for fd in (self._fd, self._parent):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._parent = -1

    def detach(self) -> None:
        """In a forked child: close this process's copies."""
        self.close()
