"""The command line on malformed run directories (issue 16): exit 0 or 2 with a message naming
the file, never a traceback or a hang; a bad line in the middle is skipped and counted; text
from a run cannot forge a table row."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import perfkit
import perfkit.analysis
from perfkit.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run: 2 epochs of a train phase (5 steps of 4 samples, 10 ms each) and a val phase
    (2 steps of 2 samples in 5 ms compute() windows), the host probe every 50 ms, a logged acc
    after each epoch, on the CPU."""
    with perfkit.Run(
        "recorded",
        out_dir=tmp_path_factory.mktemp("runs"),
        device="cpu",
        probes=["host"],
        sample_interval_s=0.05,
        config={"bs": 4, "precision": "fp32"},
    ) as run:
        for epoch in range(2):
            with run.phase("train") as train:
                for _ in train.iterate([np.zeros((4, 3))] * 5):
                    time.sleep(0.01)
            with run.phase("val") as val:
                for _ in val.iterate([np.zeros((2, 3))] * 2):
                    with val.compute():
                        time.sleep(0.005)
            run.log(acc=0.5 + epoch / 10)
    assert run.run_dir is not None
    return run.run_dir


def cli(*argv: object) -> tuple[int, str, str]:
    """Run the CLI in this process; an exception escaping main fails the test (a traceback)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def run_dir(recorded: Path, tmp_path: Path) -> Path:
    """A copy of the recorded run."""
    return Path(shutil.copytree(recorded, tmp_path / recorded.name))


def commands(run: Path, out: Path, baseline: Path) -> list[list[object]]:
    return [
        ["report", run],
        ["report", "--format", "csv", run],
        ["compare", baseline, run],
        ["mllog", run],
        ["trace", run, "-o", out / "trace.json"],
    ]


def assert_clean(code: int, err: str, run: Path) -> None:
    assert code in (0, 2), err
    assert "Traceback" not in err
    if code == 2:
        last = err.strip().splitlines()[-1]  # after any warning about skipped lines
        assert last.startswith("perfkit: error: ") and run.name in last, err


# ------------------------------------------------------------------- the cases


@pytest.mark.parametrize(
    ("file", "text"),
    [
        ("summary.json", '{"status": "ok", "e2e_time": 1e999, "p_train": 1e999}'),
        ("summary.json", "[" * 100_000 + "]" * 100_000),
        ("meta.json", '{"world_size": "two", "config": [1], "name": 5, "device": 3}'),
        ("meta.json", '{"world_size": 1000000000000}'),
        ("summary.json", '{"status": 1, "phases": 7, "p_train": "fast", "mem": [1]}'),
        ("summary.json", '{"phases": [1, "x", null, {"name": 3}], "acc": {"a": 1}}'),
        ("summary.json", '{"e2e_time": ' + "9" * 400 + ', "p_core": ' + "9" * 400 + "}"),
        ("meta.json", '{"started_at": 5, "flops": {"flops_per_sample": "x"}}'),
    ],
)
def test_malformed_files_exit_cleanly(recorded, run_dir, tmp_path, file, text):
    (run_dir / file).write_text(text)
    for argv in commands(run_dir, tmp_path, recorded):
        code, _out, err = cli(*argv)
        assert_clean(code, err, run_dir)


def test_one_bad_line_in_the_middle_is_skipped_and_counted(run_dir, caplog):
    (run_dir / "summary.json").unlink()  # a killed run: its table is rebuilt from the records
    path = run_dir / "records.jsonl"
    lines = path.read_text().splitlines()
    middle = len(lines) // 2
    lines[middle] = '{"name": "step_time", "value": 1e999, "t": "soon", "rank": 0}'
    lines.insert(middle, "not json at all")
    path.write_text("\n".join(lines) + "\n")
    code, out, err = cli("report", "--format", "json", run_dir)
    assert code == 0, err
    assert "recorded" in out and "partial" in out
    assert "skipped 2 bad line(s)" in caplog.text and "records.jsonl:" in caplog.text
    assert perfkit.analysis.summaries(run_dir).loc[0, "bad_lines"] == 2


def test_a_fifo_named_records_jsonl_does_not_hang(tmp_path):
    run = tmp_path / "fifo-run"
    run.mkdir()
    os.mkfifo(run / "records.jsonl")
    for argv in (["report", run], ["mllog", run], ["trace", run, "-o", tmp_path / "t.json"]):
        code, _out, err = cli(*argv)
        assert code == 2 and "records.jsonl is not a regular file" in err, err


def test_compare_a_run_with_itself_names_it(run_dir):
    code, _out, err = cli("compare", run_dir, run_dir)
    assert code == 2 and "is given twice" in err and run_dir.name in err


def test_control_characters_cannot_forge_table_rows(recorded, run_dir):
    meta = json.loads((run_dir / "meta.json").read_text())
    forged = "x\n| forged | row |\x1b[31m"
    meta["config"] = {"fix_hp": forged, "precision": "fp32\r\nforged,row"}
    (run_dir / "meta.json").write_text(json.dumps(meta))
    code, md, err = cli("report", run_dir)
    assert code == 0, err
    assert len(md.strip().splitlines()) == 3  # header, rule, one run
    assert "\x1b" not in md and "\\x1b" in md and "\\| forged \\|" in md
    code, text, err = cli("report", "--format", "csv", run_dir)
    assert code == 0, err
    assert len(text.strip().splitlines()) == 2
    (row,) = list(csv.DictReader(io.StringIO(text)))
    assert row["fix_hp"] == "x\\n| forged | row |\\x1b[31m"
    code, text, err = cli("compare", "--format", "csv", recorded, run_dir)
    assert code == 0 and "\x1b" not in text and "\r" not in text


def test_the_cli_process_on_a_deeply_nested_summary_prints_no_traceback(run_dir):
    (run_dir / "summary.json").write_text("[" * 50_000 + "]" * 50_000)
    done = subprocess.run(
        [sys.executable, "-m", "perfkit.cli", "report", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "summary.json" in done.stderr


# ------------------------------------------------------------------------------ fuzzing

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
_keys = st.sampled_from(
    ["status", "e2e_time", "p_train", "p_core", "phases", "mem", "acc", "world_size",
     "config", "name", "device", "started_at", "flops", "layout", "e2e_from", "run_id"]
)  # fmt: skip
_record_keys = st.sampled_from(
    ["run_id", "rank", "phase", "step", "name", "value", "unit", "t", "device", "note", "kind"]
)


@st.composite
def damage(draw: st.DrawFn) -> tuple[str, object]:
    """One change to a run directory: a field of meta / summary / a record set to any JSON
    value, a line replaced by garbage, or a file cut short."""
    what = draw(st.sampled_from(["meta", "summary", "record", "garbage", "cut"]))
    if what in ("meta", "summary"):
        return what, (draw(_keys), draw(_json))
    if what == "record":
        return what, (draw(st.integers(0, 60)), draw(_record_keys), draw(_json))
    if what == "garbage":
        return what, (draw(st.integers(0, 60)), draw(st.binary(max_size=20)))
    return what, (draw(st.sampled_from(["meta.json", "summary.json", "records.jsonl"])),
                  draw(st.integers(0, 4000)))  # fmt: skip


def apply(run: Path, change: tuple[str, object]) -> None:
    what, args = change
    if what in ("meta", "summary"):
        key, value = args  # type: ignore[misc]
        path = run / f"{what}.json"
        with contextlib.suppress(ValueError):  # an earlier change cut the file
            obj = json.loads(path.read_text())
            if isinstance(obj, dict):
                obj[key] = value
                path.write_text(json.dumps(obj))
    elif what in ("record", "garbage"):
        path = run / "records.jsonl"
        lines = path.read_bytes().splitlines() or [b""]  # an earlier change may have cut it
        at = args[0] % len(lines)  # type: ignore[index]
        if what == "record":
            _, key, value = args  # type: ignore[misc]
            with contextlib.suppress(ValueError):  # the line is garbage already
                record = json.loads(lines[at])
                if isinstance(record, dict):
                    record[key] = value
                    lines[at] = json.dumps(record).encode()
        else:
            lines[at] = args[1].replace(b"\n", b" ")  # type: ignore[index]
        path.write_bytes(b"\n".join(lines) + b"\n")
    else:
        name, size = args  # type: ignore[misc]
        path = run / name
        path.write_bytes(path.read_bytes()[:size])


@contextlib.contextmanager
def damaged_copy(recorded: Path, changes: list[tuple[str, object]]) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        run = Path(shutil.copytree(recorded, Path(folder) / recorded.name))
        for change in changes:
            apply(run, change)
        yield run


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.lists(damage(), min_size=1, max_size=3))
def test_fuzz_the_cli_over_malformed_run_directories(recorded, changes):
    with damaged_copy(recorded, changes) as run:
        for argv in commands(run, run.parent, recorded):
            code, _out, err = cli(*argv)
            assert_clean(code, err, run)
