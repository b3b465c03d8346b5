"""The perfkit command line: output of each command, exit codes and messages for bad input."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

import perfkit
from perfkit.cli import main
from tests.conftest import FakeClock
from tests.test_analysis import infer_run, train_run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("cli")
    return {
        "slow": train_run(out / "a", "slow"),
        "fast": train_run(out / "b", "fast", compute_s=0.5),
        "infer": infer_run(out / "c"),
    }


def run_cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_report_markdown_and_kinds(runs, capsys):
    code, out, err = run_cli(capsys, "report", runs["slow"], runs["infer"])
    assert code == 0 and err == ""
    assert "## Training runs" in out and "## Inference runs" in out
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("| run ") and "p_whole" in line)
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "run", "config", "precision", "fix_hp", "e2e_time", "p_whole", "p_train", "p_core",
        "mAP", "mem", "status",
    ]  # fmt: skip
    row = next(line for line in lines if line.startswith(f"| {runs['slow'].name}"))
    # 26 s; 64/21 samples/s; 64/16; 64/12; mAP; no memory probe
    assert [c.strip() for c in row.strip("|").split("|")][1:] == [
        "1x1", "fp32", "bs=8,lr=0.04", "26.0", "3.05", "4.0", "5.33", "0.3461", "/", "ok",
    ]  # fmt: skip


def test_report_csv_and_json(runs, capsys):
    code, out, _ = run_cli(capsys, "report", runs["infer"], "--format", "csv")
    assert code == 0
    (row,) = csv.DictReader(io.StringIO(out))
    # 768 images / 12 s wall, / 9 s compute; MFU 1e10 x 85.33 / 1e12
    assert (row["p_infer_whole"], row["p_infer_core"], row["MFU"]) == ("64.0", "85.3", "85.3%")
    code, out, _ = run_cli(capsys, "report", runs["slow"], runs["fast"], "--format", "json")
    assert code == 0
    table = json.loads(out)
    assert list(table) == ["train"]
    assert [r["p_train"] for r in table["train"]] == [4.0, 8.0]  # 64/16 s, 64/8 s: numbers
    code, out, _ = run_cli(capsys, "report", runs["infer"], "--format", "json")
    (row,) = json.loads(out)["infer"]
    # MFU 1e10 FLOPs x 768 / 9 s / 1e12 = 0.85333 (a fraction); 12 s e2e; no val phase: null
    assert row["MFU"] == pytest.approx(1e10 * 768 / 9 / 1e12) and row["e2e_time"] == 12.0
    assert row["p_val_whole"] is None and row["precision"] == "fp16"


def test_failed_runs_are_listed_by_what_they_ran(capsys, tmp_path):
    clock = FakeClock()
    with pytest.raises(RuntimeError, match="boom"):  # a training run that crashed in its loop
        with perfkit.Run("crashed", out_dir=tmp_path, clock=clock, device="cpu", probes=None) as r:
            with r.phase("train"):
                clock.advance(1.0)
                raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="early"):  # one that crashed before any phase
        with perfkit.Run("early", out_dir=tmp_path, clock=clock, device="cpu", probes=None):
            raise RuntimeError("early")
    code, out, _ = run_cli(capsys, "report", tmp_path)
    assert code == 0
    training = out.split("## Training runs")[1].split("##")[0]
    assert "crashed-" in training and "| failed |" in training
    before = out.split("## Runs that ended before any phase")[1]
    assert "early-" in before and "| failed |" in before
    assert "Inference runs" not in out


def test_runs_in_natural_order_and_from_stdin(capsys, tmp_path, monkeypatch):
    for name in ("r10", "r2", "r1"):
        train_run(tmp_path / name, name)
    code, out, _ = run_cli(capsys, "report", tmp_path)
    names = [line.split("|")[1].strip().split("-")[0] for line in out.splitlines()[2:]]
    assert code == 0 and names == ["r1", "r2", "r10"]  # as text r10 came before r2
    runs = sorted(p.parent for p in tmp_path.rglob("meta.json"))
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{runs[2]}\n\n{runs[0]}\n"))
    code, out, _ = run_cli(capsys, "compare", runs[1], "-", "--format", "json")
    assert code == 0 and [c for c in json.loads(out)["status"]] == [
        runs[1].name, runs[2].name, runs[0].name,
        f"{runs[2].name}/baseline", f"{runs[0].name}/baseline",
    ]  # fmt: skip
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = run_cli(capsys, "report", "-")
    assert code == 2 and "standard input named none" in err


def test_debug_shows_the_traceback_and_help_lists_exit_codes(capsys, tmp_path):
    code, _, err = run_cli(capsys, "report", tmp_path / "nope")
    assert code == 2 and "Traceback" not in err
    code, _, err = run_cli(capsys, "--debug", "report", tmp_path / "nope")
    assert code == 2 and "Traceback (most recent call last)" in err
    assert "FileNotFoundError: no such run directory" in err
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    assert "exit status:\n  0  success\n  1  compare --fail-if-slower" in help_text
    assert "  2  bad input" in help_text


def test_compare_prints_ratios(runs, capsys):
    code, out, _ = run_cli(capsys, "compare", runs["slow"], runs["fast"], "--format", "json")
    assert code == 0
    rows = json.loads(out)
    ratio = f"{runs['fast'].name}/baseline"
    assert rows["p_train"][ratio] == pytest.approx(2.0)  # 8.0 / 4.0 samples/s
    assert rows["status"][ratio] is None
    code, out, _ = run_cli(capsys, "compare", runs["slow"], runs["fast"])
    assert code == 0
    p_core = next(line for line in out.splitlines() if line.startswith("| p_core "))
    # 64/12 = 5.33333, 64/4 = 16, ratio 3
    assert [c.strip() for c in p_core.strip("|").split("|")] == ["p_core", "5.33333", "16", "3"]


def test_plot_trace_and_mllog_write_files(runs, capsys, tmp_path):
    code, out, _ = run_cli(capsys, "plot", runs["slow"], "-o", tmp_path / "run.png")
    assert code == 0 and out.startswith("wrote ")
    assert (tmp_path / "run.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, _ = run_cli(capsys, "trace", runs["slow"], "-o", tmp_path / "trace.json")
    assert code == 0 and "ui.perfetto.dev" in out
    trace = json.loads((tmp_path / "trace.json").read_text())
    assert sum(e.get("cat") == "step" for e in trace["traceEvents"]) == 12  # 2 x (4 + 2)
    code, out, _ = run_cli(capsys, "mllog", runs["slow"])
    assert code == 0
    keys = [json.loads(line.removeprefix(":::MLLOG "))["key"] for line in out.splitlines()]
    assert keys[:2] == ["cache_clear", "init_start"] and keys[-1] == "run_stop"
    assert keys.count("epoch_start") == 2


@pytest.mark.parametrize("command", ["report", "compare", "plot", "trace", "mllog"])
def test_missing_run_is_named_and_exits_2(command, capsys, tmp_path):
    missing = tmp_path / "nonexistent"
    argv = {
        "report": ["report", missing],
        "compare": ["compare", missing, missing],
        "plot": ["plot", missing, "-o", tmp_path / "x.png"],
        "trace": ["trace", missing, "-o", tmp_path / "x.json"],
        "mllog": ["mllog", missing],
    }[command]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err == f"perfkit: error: no such run directory or folder: {str(missing)!r}\n"


def test_bad_files_and_arguments_exit_2(runs, capsys, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "records.jsonl").write_text('{"hello": 1}\n{"hello": 2}\n')
    code, _, err = run_cli(capsys, "report", bad)
    assert code == 2
    assert err.startswith(f"perfkit: error: {bad / 'records.jsonl'}:1 is not a perfkit record")
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(capsys, "report", empty)
    assert code == 2 and "holds no perfkit run" in err
    code, _, err = run_cli(capsys, "plot", runs["slow"].parent.parent, "-o", tmp_path / "x.png")
    assert code == 2 and "holds 3 runs; give one run directory" in err
    out_path = tmp_path / "no-such-folder" / "trace.json"
    code, _, err = run_cli(capsys, "trace", runs["slow"], "-o", out_path)
    assert code == 2 and str(out_path) in err
    with pytest.raises(SystemExit) as exited:
        main(["report", runs["slow"].as_posix(), "--format", "xml"])
    assert exited.value.code == 2
    assert "invalid choice: 'xml'" in capsys.readouterr().err


def test_module_entry_point(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "perfkit.cli", "report", str(tmp_path / "nope")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("perfkit: error: no such run directory")
