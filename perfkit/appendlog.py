"""An append-only file written in whole pieces, that never raises into the run.

Both record files of a run (``records.jsonl``, ``steps.bin``) are written through it. A write
that fails (a full disk) is cut back to the last whole piece and kept to be written again at
the next :meth:`AppendLog.flush`, so when space returns nothing is lost, torn or written twice.
The first failure is kept in :attr:`AppendLog.error` and logged once (logger "perfkit"). A file
deleted under the writer (the run directory removed mid-run) is recreated at the next flush
with everything written so far. Unwritten data is bounded (:data:`MAX_UNWRITTEN_BYTES`): beyond
it new pieces are dropped and counted, so a disk that stays full cannot exhaust memory.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from perfkit._messages import logger
from perfkit.rundir import NOFOLLOW

if TYPE_CHECKING:
    from perfkit.rundir import RunDirectory


#: Most bytes kept in memory while the disk refuses them (then pieces are dropped and counted).
MAX_UNWRITTEN_BYTES = 64 * 2**20


def open_for_append(path: Path, directory: RunDirectory | None = None) -> int:
    """Open ``path`` for appending (created with mode 0666 less the umask, as open() does),
    never through a symbolic link: relative to ``directory`` (by name) when given."""
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | NOFOLLOW
    if directory is None:
        return os.open(path, flags, 0o666)
    return os.open(path.name, flags, 0o666, dir_fd=directory.fd())


class AppendLog:
    """Whole pieces of bytes appended to ``path``; not thread-safe (callers hold their lock).

    ``header`` is written first when the file is new (and again when it is recreated empty).
    ``on_recreated(message)`` is called when the file was deleted and has been recreated.
    ``directory``: the run directory held open; the file is opened (and recreated) in it.
    """

    def __init__(
        self,
        path: Path,
        header: bytes = b"",
        on_recreated: Callable[[str], None] | None = None,
        directory: RunDirectory | None = None,
    ) -> None:
        self.path = path
        self._directory = directory
        self._fd: int | None = open_for_append(path, directory)
        self._size = os.fstat(self._fd).st_size  # bytes of whole pieces on disk
        self._unwritten = bytearray(header if self._size == 0 else b"")
        self._on_recreated = on_recreated
        #: The first write failure ("OSError: ... writing <path>"), None when every write worked.
        self.error: str | None = None
        self._failed = False
        self._dropped_bytes = 0

    def add(self, piece: bytes | memoryview) -> None:
        """Queue ``piece`` (whole records or rows) for the next :meth:`flush`."""
        if self._fd is None or not piece:
            return
        if len(self._unwritten) + len(piece) > MAX_UNWRITTEN_BYTES:
            self._dropped_bytes += len(piece)
            return
        self._unwritten += piece

    def write(self, piece: bytes | memoryview) -> bool:
        """:meth:`add` then :meth:`flush`, but written straight from ``piece`` (not copied into
        the queue) when nothing waits to be retried. False when the write failed (``piece``
        stays queued)."""
        if self._fd is None or self._unwritten or self._failed or not piece:
            self.add(piece)
            return self.flush()
        try:
            self._reopen_if_deleted()
            self._append(piece)
        except OSError as err:
            self._fail(err)
            self.add(piece)
            return False
        return True

    def flush(self) -> bool:
        """Write what is queued (the OS has it then: a killed process keeps it). False when a
        write failed (the data stays queued for the next flush)."""
        if self._fd is None or not self._unwritten:
            return True
        try:
            self._reopen_if_deleted()
            self._append(bytes(self._unwritten))
        except OSError as err:
            self._fail(err)
            return False
        self._unwritten.clear()
        if self._failed:
            self._failed = False
            assert self.error is not None
            if self._dropped_bytes:
                self.error += f"; written later, but {self._dropped_bytes} bytes were dropped"
            else:
                self.error += "; written later: no record was lost"
            logger.warning("writing to %s works again", self.path)
        return True

    def _append(self, data: bytes | memoryview) -> None:
        """Append ``data`` whole or, on failure, leave the file at its last whole piece."""
        assert self._fd is not None
        fd = self._fd
        if os.fstat(fd).st_size != self._size:  # a torn tail an earlier cut could not remove
            os.ftruncate(fd, self._size)
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                written += os.write(fd, view[written:])
        except OSError:
            with contextlib.suppress(OSError):  # else cut again before the next write
                os.ftruncate(fd, self._size)
            raise
        self._size += written

    def _reopen_if_deleted(self) -> None:
        """Recreate the file (and its folder) with what was written so far when it was deleted
        under the writer."""
        assert self._fd is not None
        if os.fstat(self._fd).st_nlink > 0:
            return
        written = os.pread(self._fd, self._size, 0)
        if self._directory is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = open_for_append(self.path, self._directory)
        os.ftruncate(fd, 0)
        os.close(self._fd)
        self._fd, self._size = fd, 0
        self._append(written)
        if self._on_recreated is not None:
            self._on_recreated(
                f"{self.path} was deleted while the run was running (the run directory "
                f"removed?); recreated it with the {len(written)} bytes written so far"
            )

    def _fail(self, err: OSError) -> None:
        if self.error is None:
            self.error = f"{type(err).__name__}: {err} (writing {self.path})"
            logger.warning("not written, kept to retry: %s", self.error)
        self._failed = True

    def detach(self) -> None:
        """In a forked child: close this process's copy of the file without writing anything;
        later pieces are ignored (the parent writes the file)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None
        self._unwritten = bytearray()

    def close(self) -> None:
        """Flush and close (never raises: what could not be written is named in :attr:`error`);
        later pieces are ignored (the run ended)."""
        self.flush()
        if self._fd is None:
            return
        try:
            self._reopen_if_deleted()
        except OSError as err:
            self._fail(err)
        lost = len(self._unwritten) + self._dropped_bytes
        if lost and self.error is not None:
            self.error += f"; {lost} bytes were never written"
        os.close(self._fd)
        self._fd = None
