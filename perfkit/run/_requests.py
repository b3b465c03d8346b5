"""Requests of a generation / serving run: the per-request timing context and the run's log of
finished requests (kept for the summary, written to requests.jsonl as each one ends)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from perfkit import checks
from perfkit.records import REQUESTS_FILE, RecordWriter, rank_file
from perfkit.run._errors import RunError
from perfkit.serving import RequestTiming, to_record

if TYPE_CHECKING:
    from perfkit.run._run import Run

#: The error of a request still open when its run stopped.
UNFINISHED = "the run ended before the request finished"


def _count(name: str, value: Any, allow_none: bool) -> int | None:
    expected = "a non-negative int" + (" or None" if allow_none else "")
    if value is None and allow_none:
        return None
    checks.check_type(name, value, int, expected)
    if value < 0:
        raise checks.wrong_value(name, expected, value)
    return int(value)


class Request:
    """One request, timed on its run's host clock: a context manager, or ``start()`` then
    ``token()`` per produced token and ``finish()`` / ``fail()``.

    ``with run.request(prompt_tokens=n) as r:`` takes the send time at entry; ``r.token()`` the
    arrival of one token (``r.token(k)``: a chunk of k tokens, one ITL gap); leaving the block
    ends the request (an exception leaving it marks it failed, and goes on). A failed request
    is recorded with its error and left out of every figure but ``requests_failed``.
    """

    def __init__(self, log: RequestLog, prompt_tokens: int | None) -> None:
        self._log = log
        self.prompt_tokens = _count("prompt_tokens", prompt_tokens, allow_none=True)
        self.send_t: float | None = None
        self.token_t: list[float] = []
        self.output_tokens = 0
        self.done = False

    def start(self, t: float | None = None) -> Request:
        """Send the request: its send time is now (or ``t``, s since run start: one time for
        the rows of a batch); returns the request."""
        if self.send_t is not None:
            raise RunError("request.start() called twice; make a new request")
        self._log.opened(self)
        self.send_t = self._log.now() if t is None else t
        return self

    def token(self, count: int = 1) -> None:
        """``count`` tokens arrived now (one token, or a chunk of ``count``)."""
        count = _count("count", count, allow_none=False) or 0
        self.add_token(self._log.now(), count)

    def add_token(self, t: float, count: int = 1) -> None:
        """``count`` tokens arrived at ``t`` (s since run start; the streamer's shared time)."""
        if self.send_t is None:
            self.start()
        if not self.done:
            self.token_t.append(t)
            self.output_tokens += count

    def finish(self, t: float | None = None) -> None:
        """The request completed (now, or at ``t``, s since run start)."""
        self._end(t, None)

    def fail(self, error: str = "failed", t: float | None = None) -> None:
        """The request failed (``error`` says why); recorded as failed."""
        self._end(t, str(error))

    def _end(self, t: float | None, error: str | None) -> None:
        if self.done:
            return
        if self.send_t is None:
            self.start()
        assert self.send_t is not None
        self.done = True
        end = self._log.now() if t is None else t
        timing = RequestTiming(
            send_t=self.send_t,
            end_t=end,
            first_token_t=self.token_t[0] if self.token_t else None,
            output_tokens=self.output_tokens,
            prompt_tokens=self.prompt_tokens,
            token_t=tuple(self.token_t),
            error=error,
        )
        self._log.add(timing, self)

    def __enter__(self) -> Request:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.finish()
        else:
            self.fail(f"{type(exc).__name__}: {exc}")


def _times(name: str, values: Sequence[Any]) -> list[float]:
    return [checks.check_finite(f"{name}[{i}]", v) for i, v in enumerate(values)]


def handed_in(
    t0: float,
    *,
    send_t: float,
    token_t: Sequence[float] = (),
    first_token_t: float | None = None,
    end_t: float | None = None,
    output_tokens: int | None = None,
    prompt_tokens: int | None = None,
    error: str | None = None,
) -> RequestTiming:
    """A :class:`RequestTiming` from timestamps on the run's clock (``t0``: its reading at the
    run's start); see :meth:`perfkit.Run.add_request`."""
    send = checks.check_finite("send_t", send_t)
    if isinstance(token_t, (str, bytes)) or not isinstance(token_t, Sequence):
        raise checks.wrong_type("token_t", "a sequence of clock readings (s)", token_t)
    tokens = _times("token_t", token_t)
    if any(b < a for a, b in itertools.pairwise(tokens)):
        raise checks.wrong_value("token_t", "non-decreasing clock readings", token_t)
    first = tokens[0] if tokens else None
    if first_token_t is not None:
        first = checks.check_finite("first_token_t", first_token_t)
        if tokens and first != tokens[0]:
            raise checks.wrong_value("first_token_t", f"token_t[0] ({tokens[0]})", first_token_t)
    last = tokens[-1] if tokens else first
    end = last if end_t is None else checks.check_finite("end_t", end_t)
    if end is None:
        raise checks.wrong_value("end_t", "a clock reading when no token time is given", end_t)
    if (first is not None and not send <= first <= end) or send > end:
        raise checks.wrong_value(
            "send_t, first_token_t and end_t", "in order send_t <= first_token_t <= end_t",
            (send_t, first, end),
        )  # fmt: skip
    if last is not None and last > end:
        raise checks.wrong_value("end_t", f"at or after the last token ({last})", end_t)
    count = _count("output_tokens", output_tokens, allow_none=True)
    if count is None:
        count = len(tokens) if tokens else int(first is not None)
    if count == 0 and first is not None:
        raise checks.wrong_value("output_tokens", "at least 1 when a token arrived", count)
    return RequestTiming(
        send_t=send - t0,
        end_t=end - t0,
        first_token_t=None if first is None else first - t0,
        output_tokens=count,
        prompt_tokens=_count("prompt_tokens", prompt_tokens, allow_none=True),
        token_t=tuple(t - t0 for t in tokens),
        error=None if error is None else str(error),
    )


class RequestLog:
    """A run's finished requests (kept in memory for the summary: about 32 bytes a token) and
    their requests.jsonl writer (made at the first request, so runs without requests have no
    file); thread-safe."""

    def __init__(
        self,
        run: Run,
        phase_name: Callable[[], str | None],
        new_writer: Callable[[Path], RecordWriter],
    ) -> None:
        """``phase_name()``: the run's running phase; ``new_writer(path)``: a record file's
        writer in the run directory."""
        self._run = run
        self._phase_name = phase_name
        self._new_writer = new_writer
        self._lock = threading.Lock()
        self.timings: list[RequestTiming] = []
        self._open: dict[int, Request] = {}
        self._writer: RecordWriter | None = None
        self._detached = False

    def now(self) -> float:
        """Seconds since the run started, on its host clock."""
        return self._run.elapsed()

    def opened(self, request: Request) -> None:
        """A request was sent: kept until it ends (failed if the run stops first)."""
        with self._lock:
            self._open[id(request)] = request

    def add(self, timing: RequestTiming, request: Request | None = None) -> None:
        """Keep a finished request and queue its line (never raises: a write failure is the
        run's flush_error)."""
        if self._detached:
            return
        run = self._run
        phase = self._phase_name()
        with self._lock:
            if request is not None:
                self._open.pop(id(request), None)
            index = len(self.timings)
            self.timings.append(timing)
            if self._writer is None and run.run_dir is not None:
                path = run.run_dir / rank_file(REQUESTS_FILE, run.rank)
                self._writer = self._new_writer(path)
            writer = self._writer
        if writer is not None:
            writer.write(to_record(timing, run.run_id, run.rank, index, phase))

    def fail_open(self) -> None:
        """Record the requests still open as failed (the run is stopping)."""
        with self._lock:
            still = list(self._open.values())
        for request in still:
            request.fail(UNFINISHED)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    @property
    def error(self) -> str | None:
        """The first write failure of requests.jsonl, None when all worked."""
        return self._writer.error if self._writer is not None else None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def detach(self) -> None:
        """In a forked child: record nothing (the requests are the parent's)."""
        self._detached = True
        self._lock = threading.Lock()
        if self._writer is not None:
            self._writer.detach()
