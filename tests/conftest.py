"""Shared test helpers: a fake clock and a fake device-event timer."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

#: Real vendor-tool outputs (their README says where each comes from).
SMI_SAMPLES = Path(__file__).resolve().parent / "fixtures_probes" / "smi-samples"


@pytest.fixture(autouse=True, scope="session")
def _peak_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Measured peaks go to a cache of this test session, not the user's ~/.cache/perfkit."""
    import os

    before = os.environ.get("PERFKIT_CACHE_DIR")
    os.environ["PERFKIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("perfkit-cache"))
    yield
    if before is None:
        del os.environ["PERFKIT_CACHE_DIR"]
    else:
        os.environ["PERFKIT_CACHE_DIR"] = before


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for torchrun's rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FakeClock:
    """A host clock that moves only when told to (seconds)."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def timed_batches(clock: FakeClock, batches: list[Any], io_s: float) -> Iterator[Any]:
    """Yield ``batches``, spending ``io_s`` fake seconds producing each (the data loader)."""
    for batch in batches:
        clock.advance(io_s)
        yield batch


@dataclass
class FakeMark:
    seq: int
    device_t: float


@dataclass
class FakeEventTimer:
    """Stands in for device events: marks carry a device timestamp set by the test and become
    ready only when the test (or ``synchronize``) says the device got that far."""

    device_now: float = 0.0
    completed: int = -1
    syncs: int = 0
    marks: list[FakeMark] = field(default_factory=list)
    released: int = 0

    def mark(self) -> FakeMark:
        mark = FakeMark(len(self.marks), self.device_now)
        self.marks.append(mark)
        return mark

    def ready(self, mark: FakeMark) -> bool:
        return mark.seq <= self.completed

    def elapsed_s(self, start: FakeMark, end: FakeMark) -> float:
        assert self.ready(start) and self.ready(end), "resolved a mark the device had not reached"
        return end.device_t - start.device_t

    def release(self, mark: FakeMark) -> None:
        self.released += 1

    def synchronize(self) -> None:
        self.syncs += 1
        self.completed = len(self.marks) - 1

    def complete_all(self) -> None:
        self.completed = len(self.marks) - 1


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def assert_rebuilt_equals_live(run_dir: Path, live: dict[str, Any] | None = None) -> dict[str, Any]:
    """The summary rebuilt from ``run_dir``'s records equals its summary.json (or ``live``,
    the summary a killed run took before the kill) key for key, e2e_time (the rebuilt one is
    the last record's time) and status ("partial") aside. Returns the live summary."""
    from perfkit.analysis._read import read_run
    from perfkit.analysis._rebuild import rebuild_summary

    run = read_run(run_dir)
    if live is None:
        live = run.summary
        assert live is not None and live["status"] == "ok"
    rebuilt = json.loads(json.dumps(rebuild_summary(run), default=str))
    assert rebuilt["status"] == "partial"
    assert rebuilt["e2e_time"] <= live["e2e_time"]
    aside = ("e2e_time", "status")
    live_rest = {k: v for k, v in live.items() if k not in aside}
    rebuilt_rest = {k: v for k, v in rebuilt.items() if k not in aside}
    assert sorted(rebuilt_rest) == sorted(live_rest)
    for key, value in live_rest.items():
        assert rebuilt_rest[key] == value, key
    return live


def read_step_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of one steps.bin as dicts (perfkit.records.STEP_COLUMNS; phase, step and
    samples as ints)."""
    from perfkit.steplog import read_step_log

    header, rows = read_step_log(path)
    ints = {"phase", "step", "samples"}
    return [
        {c: int(v) if c in ints else v for c, v in zip(header["columns"], row, strict=True)}
        for row in rows.tolist()
    ]


@pytest.fixture
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A local MLflow file store's tracking URI, with MLflow's telemetry off (nothing leaves
    the machine) and its file store allowed (MLflow 3 asks for the opt-in)."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return (tmp_path / "mlruns").as_uri()
