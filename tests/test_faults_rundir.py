"""A symbolic link put in place of the run directory or of one of its files mid-run is never
followed (issue 23): the run's files are written through the directory it holds open."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import perfkit
from tests.conftest import read_step_rows


def start(tmp_path: Path, clock) -> tuple[perfkit.Run, Path]:
    run = perfkit.Run("linked", out_dir=tmp_path / "runs", device="cpu", clock=clock, probes=None)
    run.start()
    with run.phase("train") as train:
        for _ in train.iterate([1, 2, 3], samples=2):
            clock.advance(0.1)
    assert run.run_dir is not None
    return run, run.run_dir


def test_a_run_directory_moved_and_replaced_by_a_link_keeps_the_files(tmp_path, clock):
    run, run_dir = start(tmp_path, clock)
    target = tmp_path / "target"
    target.mkdir()
    moved = tmp_path / "moved"
    run_dir.rename(moved)
    run_dir.symlink_to(target)
    run.log(acc=0.5)
    run.stop()
    assert list(target.iterdir()) == []  # before issue 23: summary.json went there
    summary = json.loads((moved / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["acc"] == 0.5 and summary["train_steps"] == 3
    assert len(read_step_rows(moved / "steps.bin")) == 3


def test_a_deleted_run_directory_replaced_by_a_link_is_never_followed(tmp_path, clock):
    # Before issue 23 the "recreate" path wrote meta.json, records.jsonl, steps.bin and
    # summary.json into the link's target.
    run, run_dir = start(tmp_path, clock)
    target = tmp_path / "target"
    target.mkdir()
    shutil.rmtree(run_dir)
    run_dir.symlink_to(target)
    run.log(acc=0.5)
    summary = run.stop()  # never raises
    assert list(target.iterdir()) == []
    assert summary["status"] == "ok" and summary["acc"] == 0.5
    assert any("summary.json not written" in fault for fault in run.faults)  # after the summary
    assert "records.jsonl" in summary["flush_error"]


def test_a_deleted_record_file_replaced_by_a_link_is_never_followed(tmp_path, clock):
    run, run_dir = start(tmp_path, clock)
    outside = tmp_path / "outside.jsonl"
    outside.write_text("")
    (run_dir / "records.jsonl").unlink()
    (run_dir / "records.jsonl").symlink_to(outside)
    run.log(acc=0.5)
    summary = run.stop()
    assert outside.read_text() == ""
    assert "records.jsonl" in summary["flush_error"]
    assert json.loads((run_dir / "summary.json").read_text())["acc"] == 0.5
