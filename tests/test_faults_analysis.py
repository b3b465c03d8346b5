"""Analysis of hostile run directories (issue 23): record files that are FIFOs, devices or
symbolic links, huge sparse files, malformed or big-endian step-log headers, and terminal
escapes in a run directory's name. Each is refused with a RecordError naming the file (exit 2
on the command line), never a hang, a traceback or unbounded memory."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import perfkit
from perfkit.analysis._read import read_run
from perfkit.cli import main
from perfkit.records import RecordError
from perfkit.steplog import MAGIC, encode_header
from tests.conftest import FakeClock, timed_batches

ROOT = Path(__file__).resolve().parents[1]


def cli(*argv: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def recorded_run(folder: Path, name: str = "hostile") -> Path:
    """A real schema-2 run: 4 train steps of 0.3 s (0.1 s IO each), 2 samples each."""
    clock = FakeClock()
    with perfkit.Run(name, out_dir=folder, device="cpu", clock=clock, probes=None) as run:
        with run.phase("train") as train:
            for _ in train.iterate(timed_batches(clock, [0, 1, 2, 3], 0.1), samples=2):
                clock.advance(0.2)
    assert run.run_dir is not None
    return run.run_dir


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return recorded_run(tmp_path)


def test_a_fifo_step_log_is_refused_not_waited_on(run_dir):
    # Before issue 23 `perfkit trace` blocked forever opening the FIFO for reading.
    (run_dir / "steps.bin").unlink()
    os.mkfifo(run_dir / "steps.bin")
    done = subprocess.run(
        [sys.executable, "-m", "perfkit.cli", "trace", str(run_dir), "-o", str(run_dir / "t")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 2, done.stderr
    assert "steps.bin is not a regular file" in done.stderr and "Traceback" not in done.stderr


def test_a_step_log_linked_to_dev_zero_is_refused(run_dir):
    # Before issue 23 it was read until MemoryError.
    (run_dir / "steps.bin").unlink()
    (run_dir / "steps.bin").symlink_to("/dev/zero")
    with pytest.raises(RecordError, match=r"steps\.bin is a symbolic link"):
        read_run(run_dir).steps  # noqa: B018 - reading is the test
    code, _out, err = cli("trace", run_dir, "-o", run_dir / "trace.json")
    assert code == 2 and "symbolic link" in err


def test_a_records_file_linked_out_of_the_run_directory_is_refused(run_dir, tmp_path):
    outside = tmp_path / "elsewhere.jsonl"
    (run_dir / "records.jsonl").rename(outside)
    (run_dir / "records.jsonl").symlink_to(outside)
    with pytest.raises(RecordError, match=r"records\.jsonl is a symbolic link"):
        read_run(run_dir).records  # noqa: B018


def test_a_huge_sparse_records_file_is_read_in_bounded_memory(run_dir):
    # 256 MiB of holes (no newline) after the real records. Before issue 23 `report` grew by
    # about 1 GB (the whole file, then its split); now a line at a time, a long line skipped.
    records = run_dir / "records.jsonl"
    with open(records, "r+b") as handle:
        handle.truncate(records.stat().st_size + 256 * 2**20)
    assert records.stat().st_blocks * 512 < 2**20  # sparse: nothing allocated
    script = f"""
import resource, sys
from pathlib import Path
import pandas  # imported before the measurement: only the reading counts
from perfkit.analysis._read import read_run
run = read_run(Path({str(run_dir)!r}))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
names = list(run.records["name"])
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(names.count("phase_start"), grown)
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    starts, grown_kib = map(int, done.stdout.split())
    assert starts == 1  # the records before the holes are read
    assert grown_kib < 32 * 1024  # 9 MiB measured for 512 MiB; not the file's 256 MiB


def test_a_line_longer_than_the_limit_is_a_bad_line_and_the_rest_is_read(run_dir, caplog):
    records = run_dir / "records.jsonl"
    lines = records.read_bytes().splitlines(keepends=True)
    records.write_bytes(lines[0] + b"x" * (3 * 2**20) + b"\n" + b"".join(lines[1:]))
    run = read_run(run_dir)
    assert len(run.records) == len(lines)
    (bad,) = run.bad_lines
    assert "records.jsonl:2" in bad and "longer than" in bad


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"columns": []}, "columns must name each"),
        ({"columns": "phase"}, "columns must be a list"),
        ({"byteorder": "middle"}, "byteorder must be"),
        ({"dtype": "float32"}, "dtype must be"),
        ({"rank": -1}, "rank must be"),
    ],
)
def test_a_malformed_step_log_header_is_a_record_error(run_dir, fields, problem):
    # Before issue 23 a header without columns raised ZeroDivisionError.
    path = run_dir / "steps.bin"
    header, rows = split_step_log(path)
    path.write_bytes(encode_header({**header, **fields}) + rows)
    with pytest.raises(RecordError, match=problem):
        read_run(run_dir).steps  # noqa: B018
    code, _out, err = cli("trace", run_dir, "-o", run_dir / "trace.json")
    assert code == 2 and problem in err


def split_step_log(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    start = len(MAGIC) + 4
    length = int.from_bytes(data[len(MAGIC) : start], "little")
    return json.loads(data[start : start + length]), data[start + length :]


def test_a_big_endian_step_log_reads_as_the_little_endian_one(run_dir):
    # Before issue 23: "Big-endian buffer not supported" from pandas.
    expected = read_run(run_dir).steps
    path = run_dir / "steps.bin"
    header, rows = split_step_log(path)
    swapped = np.frombuffer(rows, dtype="<f8").astype(">f8").tobytes()
    path.write_bytes(encode_header({**header, "byteorder": "big"}) + swapped)
    steps = read_run(run_dir).steps
    assert list(steps["step_time"]) == pytest.approx([0.3] * 4)  # the FakeClock's steps
    assert steps.equals(expected)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tail=st.binary(max_size=120), length=st.integers(0, 2**32 - 1))
def test_any_bytes_after_the_magic_read_or_raise_a_record_error(tmp_path, tail, length):
    path = tmp_path / "steps.bin"
    path.write_bytes(MAGIC + length.to_bytes(4, "little") + tail)
    from perfkit.steplog import read_step_log

    with contextlib.suppress(RecordError):
        read_step_log(path)


def test_escapes_in_a_run_directory_name_never_reach_stderr_raw(tmp_path):
    # A bad line makes the reader warn, naming the file; before issue 23 the ESC went raw.
    run_dir = recorded_run(tmp_path, "red\x1b[31m")
    with open(run_dir / "records.jsonl", "ab") as handle:
        handle.write(b"not json\n")
    with open(run_dir / "records.jsonl", "ab") as handle:
        handle.write((run_dir / "records.jsonl").read_bytes().splitlines(keepends=True)[0])
    code, _out, err = cli("trace", run_dir, "-o", tmp_path / "trace.json")
    assert code == 0 and "skipped 1 bad line" in err
    assert "\x1b" not in err and "\\x1b[31m" in err
    code, _out, err = cli("report", tmp_path / "missing\x1b[2J")
    assert code == 2 and "\x1b" not in err
