"""The background thread that writes finished steps and queued records to disk."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Flusher:
    """Daemon thread calling ``flush()`` every ``interval_s`` seconds, so records reach the disk
    even while one step runs for a long time, and encoding them stays off the loop's thread. A
    failure to write is kept in :attr:`error` (the summary's "flush_error"), never raised into
    the user's loop."""

    def __init__(self, flush: Callable[[], None], interval_s: float) -> None:
        self._flush = flush
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="perfkit-flush", daemon=True)
        # Flushes begun and finished, counted under _done, so catch_up can wait for one.
        self._done = threading.Condition(threading.Lock())
        self._begun = 0
        self._finished = 0
        self.error: str | None = None

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def wake(self) -> None:
        """Flush now rather than at the end of the interval (a backlog is building up)."""
        self._wake.set()

    def catch_up(self, timeout_s: float) -> bool:
        """Wake the thread and wait, at most ``timeout_s`` seconds, until a flush begun after
        this call has finished; False when none did. A loop that outruns the flusher waits here
        rather than encoding the steps itself: its wait releases the GIL, which the flusher
        otherwise gets back only every switch interval (5 ms) between its syscalls and numpy
        calls, so on a busy machine it falls behind a tight loop that the disk would keep up
        with."""
        with self._done:
            target = self._begun + 1
            self.wake()
            return self._done.wait_for(lambda: self._finished >= target, timeout_s)

    def stop(self) -> None:
        """Stop the thread and wait for it (a flush under way finishes first)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while True:
            self._wake.wait(self._interval_s)
            with self._done:
                self._begun += 1
                self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._flush()
            except OSError as err:  # kept once; the next interval tries again
                if self.error is None:
                    self.error = f"{type(err).__name__}: {err}"
            finally:
                with self._done:
                    self._finished += 1
                    self._done.notify_all()
