"""A vendor tool as a child process that cannot outlive or flood perfkit.

Each tool runs in its own session, so its own process group: ``kill()`` ends the tool and
everything it started (``sh`` and its ``sleep``), from any thread. Output is read in chunks with
``os.read`` (no text decoding, no line splitting here) and capped: past ``limit_bytes`` the tool
is killed and the rest is never read. Every group still alive when the interpreter exits is
killed. POSIX only (process groups), like the tools themselves.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

#: The most a tool may print in one run (or, looping, in one second) before it is killed.
MAX_OUTPUT_BYTES = 4 * 2**20
#: How much of a tool's stderr is kept (its end), for error messages.
STDERR_TAIL_BYTES = 500

_CHUNK_BYTES = 2**16
_POLL_S = 0.1  # how often a reader checks whether the tool itself has exited
_ORPHAN_GRACE_S = 1.0  # reading after the tool and its group are gone, for what is in the pipe

_live_lock = threading.Lock()
_live_groups: set[int] = set()


def _kill_group(pgid: int) -> None:
    # ProcessLookupError: already gone; PermissionError: macOS, for a group of zombies.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


@atexit.register
def _kill_live_groups() -> None:
    with _live_lock:
        groups = list(_live_groups)
    for pgid in groups:
        _kill_group(pgid)


def _forget_in_child() -> None:
    """A forked child (that exits normally) must not kill the tools its parent runs."""
    global _live_lock
    _live_lock = threading.Lock()  # another thread may have held it at the fork
    _live_groups.clear()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_in_child)


class ToolProcess:
    """``argv`` started in a new session, stdin closed, stdout and stderr piped.

    ``chunks()`` yields stdout as it arrives (one reader at a time), ``run_to_end()`` reads it
    all; ``kill()`` (any thread) ends the whole process group; ``close()`` kills, reaps and
    closes the pipes, once the reader is done. ``overflowed`` is true once the output passed
    ``limit_bytes``, ``timed_out`` once a deadline killed the tool; ``stderr_tail`` holds the
    last ``STDERR_TAIL_BYTES`` of stderr.
    """

    def __init__(self, argv: list[str], limit_bytes: int = MAX_OUTPUT_BYTES) -> None:
        self.argv = argv
        self.limit_bytes = limit_bytes
        self.overflowed = False
        self.timed_out = False
        self.stderr_tail = b""
        with _live_lock:  # registered before an atexit handler could miss it
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            _live_groups.add(self._proc.pid)
        self._closed = False

    @property
    def pid(self) -> int:
        return self._proc.pid

    def poll(self) -> int | None:
        """The tool's exit status (negative: killed by that signal), or None while it runs."""
        return self._proc.poll()

    def kill(self) -> None:
        """SIGKILL the tool's whole process group; safe from any thread, at any time."""
        with _live_lock:
            if self._proc.pid in _live_groups:
                _kill_group(self._proc.pid)

    def chunks(
        self, deadline: float | None = None, window_s: float | None = None
    ) -> Iterator[bytes]:
        """stdout, chunk by chunk, until every writer has closed it, ``deadline``
        (``time.monotonic``) passes or the output passes ``limit_bytes`` (counted per
        ``window_s`` seconds when given, else in all; stderr counts too): then the group is
        killed. Once the tool itself has exited, what it left behind is killed too."""
        assert self._proc.stdout is not None and self._proc.stderr is not None
        stdout, stderr = self._proc.stdout, self._proc.stderr
        counted, window_start = 0, time.monotonic()
        gone_at: float | None = None  # when the tool exited (and its group was killed)
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            selector.register(stderr, selectors.EVENT_READ)
            while selector.get_map():
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    self.timed_out = True
                    self.kill()
                    return
                if gone_at is None and self._proc.poll() is not None:
                    self.kill()  # the tool is done; nothing it started may stay
                    gone_at = now
                if gone_at is not None and now - gone_at > _ORPHAN_GRACE_S:
                    return  # a process outside the group holds the pipe: stop reading
                wait = _POLL_S if deadline is None else min(_POLL_S, deadline - now)
                for key, _ in selector.select(max(0.0, wait)):
                    data = os.read(key.fd, _CHUNK_BYTES)
                    if not data:
                        selector.unregister(key.fileobj)
                        continue
                    if window_s is not None and now - window_start >= window_s:
                        counted, window_start = 0, now
                    counted += len(data)
                    if counted > self.limit_bytes:
                        self.overflowed = True
                        self.kill()
                        return
                    if key.fileobj is stderr:
                        self.stderr_tail = (self.stderr_tail + data)[-STDERR_TAIL_BYTES:]
                    else:
                        yield data

    def run_to_end(self, timeout_s: float) -> bytes:
        """All of stdout, the tool killed at ``timeout_s`` (``timed_out``) or past
        ``limit_bytes`` (``overflowed``); then closed."""
        try:
            return b"".join(self.chunks(time.monotonic() + timeout_s))
        finally:
            self.close()

    def stderr_text(self) -> str:
        return self.stderr_tail.decode("utf-8", errors="replace").strip()

    def close(self, close_pipes: bool = True) -> None:
        """Kill the group and reap the tool; close the pipes unless a reader may still use
        them (``close_pipes=False``). Safe to call more than once."""
        if self._closed:
            return
        self.kill()
        try:
            self._proc.wait(_ORPHAN_GRACE_S)
        except subprocess.TimeoutExpired:
            return  # not reaped yet (uninterruptible sleep); its group stays listed for atexit
        with _live_lock:
            _live_groups.discard(self._proc.pid)
        self._closed = True
        if close_pipes:
            for pipe in (self._proc.stdout, self._proc.stderr):
                if pipe is not None:
                    pipe.close()
