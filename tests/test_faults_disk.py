"""A full disk (issue 16): a small tmpfs filled up under a live Run, and a writer whose writes
fail half-way. Records on disk stay whole and never duplicated, are written when space returns,
the loop and stop() never raise, and the failure is recorded once."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import perfkit
from perfkit.records import read_records
from perfkit.steplog import ROW_BYTES, encode_header, read_step_log
from tests.conftest import read_step_rows


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (root on Linux only; skipped elsewhere)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path, leave: int) -> Path:
    """Fill the file system of ``folder`` up to ``leave`` free bytes; returns the filler."""
    filler = folder / "filler"
    stats = os.statvfs(folder)
    size = max(0, stats.f_bavail * stats.f_frsize - leave)
    with open(filler, "wb") as handle:
        handle.write(b"\0" * size)
    return filler


def step_numbers(path: Path) -> list[tuple[str, int]]:
    """(phase, step) of every step on disk, for the run whose records file is ``path``: every
    records line and every steps.bin row on disk is whole."""
    for line in path.read_text().splitlines():
        json.loads(line)  # every line on disk is a whole record
    steps = path.with_name("steps.bin")
    if not steps.exists():
        return []
    header_bytes = len(encode_header(read_step_log(steps)[0]))
    assert (steps.stat().st_size - header_bytes) % ROW_BYTES == 0  # no torn row
    names = [r["phase"] for r in read_records(path) if r["name"] == "phase_start"]
    rows = read_step_rows(steps)  # a phase whose phase_start the full disk refused: "?"
    return [(names[r["phase"]] if r["phase"] < len(names) else "?", r["step"]) for r in rows]


def writer_fds(run: perfkit.Run) -> set[int | None]:
    """The file descriptors of the run's record files (events and steps): the writers' seam."""
    return {w._file._fd for w in (run._writer, run._steps) if w is not None}


def test_full_tmpfs_loses_nothing_once_space_returns(small_fs, clock, caplog):
    caplog.set_level(logging.WARNING, logger="perfkit")
    run = perfkit.Run("full", out_dir=small_fs, device="cpu", clock=clock, probes=None)
    run.start()
    filler = fill(small_fs, leave=8 * 1024)
    with run.phase("train", "a") as train:
        for _ in train.iterate(range(400), samples=1):  # about 250 KB of step records
            clock.advance(0.01)
    assert run.run_dir is not None
    records = run.run_dir / "records.jsonl"
    on_disk = step_numbers(records)
    assert len(on_disk) < 400  # the disk was full: some steps are only in memory
    filler.unlink()
    with run.phase("train", "b") as train:
        for _ in train.iterate(range(5), samples=1):
            clock.advance(0.01)
    summary = run.stop()
    steps = step_numbers(records)
    assert Counter(steps) == Counter([("a", i) for i in range(400)] + [("b", i) for i in range(5)])
    assert "No space left on device" in summary["flush_error"]
    assert "written later: no record was lost" in summary["flush_error"]
    assert json.loads((run.run_dir / "summary.json").read_text())["status"] == "ok"
    failed = [m for r in caplog.records if "not written, kept to retry" in (m := r.getMessage())]
    written_to = [m.rsplit("(writing ", 1)[1] for m in failed]
    assert written_to and len(written_to) == len(set(written_to))  # once per file that failed


def test_flusher_retries_in_the_background_when_space_returns(small_fs):
    with perfkit.Run("retry", out_dir=small_fs, device="cpu", flush_interval_s=0.02) as run:
        filler = fill(small_fs, leave=4 * 1024)
        with run.phase("train") as train:
            for _ in train.iterate(range(300), samples=1):
                pass
        assert run.run_dir is not None
        records = run.run_dir / "records.jsonl"
        assert len(step_numbers(records)) < 300
        filler.unlink()
        deadline = time.monotonic() + 10
        while len(step_numbers(records)) < 300 and time.monotonic() < deadline:
            time.sleep(0.02)  # no flush from here: only the flusher thread writes
        assert sorted(s for _, s in step_numbers(records)) == list(range(300))


def test_a_disk_that_stays_full_never_raises_and_keeps_whole_records(small_fs, clock):
    run = perfkit.Run("stays-full", out_dir=small_fs, device="cpu", clock=clock, probes=None)
    run.start()
    fill(small_fs, leave=6 * 1024)
    for _ in range(3):
        with run.phase("train") as train:
            for _ in train.iterate(range(100), samples=1):
                clock.advance(0.01)
        run.log(acc=0.5)
        run.flush()
    summary = run.stop()  # neither the phase ends nor stop() raise
    assert summary["status"] == "ok" and summary["train_steps"] == 300
    assert "never written" in summary["flush_error"]
    assert run.run_dir is not None
    steps = step_numbers(run.run_dir / "records.jsonl")
    assert len(steps) == len(set(steps))  # nothing twice
    assert [s for _, s in steps] == list(range(len(steps)))  # a prefix, nothing torn


def test_writes_failing_half_way_are_cut_back_and_retried(tmp_path, clock, monkeypatch):
    """The writer's seam: its file descriptor takes half of a write, then refuses (ENOSPC)."""
    real_write = os.write
    failing = {"on": False}

    def write(fd: int, data: bytes) -> int:
        if failing["on"] and fd in writer_fds(run):
            if len(data) > 1:
                return real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    run = perfkit.Run("seam", out_dir=tmp_path, device="cpu", clock=clock, probes=None).start()
    assert run.run_dir is not None
    records = run.run_dir / "records.jsonl"
    with run.phase("train") as train:
        for _ in train.iterate(range(10), samples=1):
            clock.advance(0.1)
    failing["on"] = True
    with run.phase("train") as train:
        for _ in train.iterate(range(32), samples=1):
            clock.advance(0.1)
    assert [s for _, s in step_numbers(records)] == list(range(10))  # cut back: nothing torn
    failing["on"] = False
    summary = run.stop()
    steps = [s for _, s in step_numbers(records)]
    assert steps == list(range(10)) + list(range(32))  # the failed batch once, not twice
    assert summary["flush_error"].startswith("OSError: [Errno 28] No space left on device")
    assert json.loads((run.run_dir / "summary.json").read_text())["train_steps"] == 42


def test_stop_writes_the_summary_when_the_records_writer_keeps_failing(
    tmp_path, clock, monkeypatch
):
    real_write = os.write
    run = perfkit.Run("seam2", out_dir=tmp_path, device="cpu", clock=clock, probes=None).start()

    def write(fd: int, data: bytes) -> int:
        if fd in writer_fds(run):
            raise OSError(errno.EIO, "Input/output error")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    with run.phase("train") as train:
        for _ in train.iterate(range(4), samples=1):
            clock.advance(0.1)
    run.stop()
    assert run.run_dir is not None
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["train_steps"] == 4
    assert "Input/output error" in summary["flush_error"]


KILLED = """
import os, signal, sys, time
from pathlib import Path
import perfkit

mount, filler = Path(sys.argv[1]), Path(sys.argv[2])
with perfkit.Run("killed", out_dir=mount, device="cpu", probes=None, flush_interval_s=0.02):
    run = perfkit.run._active.active_run()
    stats = os.statvfs(mount)
    filler.write_bytes(b"\\0" * (stats.f_bavail * stats.f_frsize - 4096))
    with run.phase("train") as train:
        for step in train.iterate(range(200), samples=1):
            if step == 100:
                filler.unlink()  # space returns while the loop runs
            time.sleep(0.001)
        time.sleep(0.5)  # the flusher writes what the full disk refused
        os.kill(os.getpid(), signal.SIGKILL)  # before the phase ends: only the flusher wrote
"""


def test_a_process_killed_after_the_disk_had_room_again_kept_its_steps(small_fs, tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(KILLED)
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(script), str(small_fs), str(small_fs / "filler")],
        env={**os.environ, "PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -9, done.stderr
    (run_dir,) = (p for p in small_fs.iterdir() if p.is_dir())
    steps = [s for _, s in step_numbers(run_dir / "records.jsonl")]
    assert steps == list(range(200))  # every finished step, once, in order
