"""``perfkit mllog`` output checked by mlperf-logging's own compliance checker (training ruleset
5.0.0) on a RetinaNet-style run: two epochs with a val pass each and mAP 0.3461 logged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from perfkit.analysis import mllog_lines
from perfkit.cli import main
from tests.test_analysis import train_run

#: What a closed-division RetinaNet log needs beyond what perfkit knows (training_5.0.0/
#: closed_retinanet.yaml): given as config entries of the run.
CLOSED_CONFIG = {
    "gradient_accumulation_steps": 1,
    "opt_name": "adam",
    "opt_weight_decay": 0.0,
    "opt_learning_rate_warmup_epochs": 1,
    "opt_learning_rate_warmup_factor": 0.001,
}


def check(lines: list[str], tmp_path: Path) -> tuple[bool, str]:
    """Run ``python -m mlperf_logging.compliance_checker`` on the lines; (passed, its output)."""
    log = tmp_path / "result_0.txt"
    log.write_text("\n".join(lines) + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "mlperf_logging.compliance_checker", "--usage", "training",
         "--ruleset", "5.0.0", "--log_output", str(tmp_path / "checker.log"), str(log)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert ("SUCCESS" in output) == (proc.returncode == 0), output
    return proc.returncode == 0, output


@pytest.fixture(scope="module")
def retinanet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("mllog")
    return {
        "open": train_run(out / "open", "retinanet"),
        "closed": train_run(out / "closed", "retinanet", **CLOSED_CONFIG),
    }


def test_open_division_passes_the_checker(retinanet, tmp_path):
    passed, output = check(mllog_lines(retinanet["open"]), tmp_path)
    assert not passed and "submission_division" in output  # the keys only the user knows
    lines = mllog_lines(retinanet["open"], submission_org="perfkit", division="open")
    passed, output = check(lines, tmp_path)
    assert passed, output
    # closed rules need the hyperparameters perfkit cannot know
    lines = mllog_lines(retinanet["open"], submission_org="perfkit", division="closed")
    passed, output = check(lines, tmp_path)
    assert not passed and "opt_name" in output


def test_closed_division_passes_with_the_hyperparameters_in_the_config(retinanet, tmp_path, capsys):
    argv = ["mllog", str(retinanet["closed"]), "--submission-org", "perfkit", "--division",
            "closed", "--submission-status", "onprem", "--cache-clear"]  # fmt: skip
    code = main(argv)
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    passed, output = check(lines, tmp_path)
    assert passed, output
    entries = {e["key"]: e for e in (json.loads(line.split(" ", 1)[1]) for line in lines)}
    assert entries["cache_clear"]["value"] is True
    assert entries["opt_name"]["value"] == "adam"
    assert entries["submission_org"]["value"] == "perfkit"
    assert entries["submission_status"]["value"] == "onprem"


def test_bad_division_is_refused(retinanet):
    with pytest.raises(ValueError, match="`division` to be one of"):
        mllog_lines(retinanet["open"], division="premium")


def test_a_validation_inside_each_epoch_passes_the_checker(tmp_path):
    """A val phase run inside each train phase (pausing it, as the trainer callbacks do): its
    eval_start / eval_stop fall inside the epoch, which stays one epoch."""
    import numpy as np

    import perfkit
    from tests.conftest import FakeClock, timed_batches

    clock = FakeClock()
    with perfkit.Run("retinanet", out_dir=tmp_path / "runs", clock=clock, device="cpu",
                     probes=None) as run:  # fmt: skip
        for _ in range(2):
            with run.phase("train") as train:
                batches = timed_batches(clock, [np.zeros((8, 3))] * 4, io_s=0.5)
                for i, _ in enumerate(train.iterate(batches)):
                    clock.advance(1.0)
                    if i == 1:  # mid-epoch
                        with run.phase("val") as val:
                            for _ in val.iterate(timed_batches(clock, [np.zeros((4, 3))], 0.1)):
                                clock.advance(0.5)
                            run.log(mAP=0.3461)
    assert run.run_dir is not None
    lines = mllog_lines(run.run_dir, submission_org="perfkit", division="open")
    entries = [json.loads(line.split(" ", 1)[1]) for line in lines]
    keys = [e["key"] for e in entries if e["key"].endswith(("_start", "_stop"))]
    assert keys.count("epoch_start") == 2 and keys.count("eval_start") == 2
    assert keys.index("eval_start") < keys.index("epoch_stop")  # inside the first epoch
    passed, output = check(lines, tmp_path)
    assert passed, output


def test_the_names_trainers_log_and_a_runs_own_metric_names(tmp_path):
    """The report's acc / mAP and mllog's eval_accuracy read a trainer's names (eval_map as
    mAP, val_acc as acc_val), a run's config ``metric_names`` first (docs/analysis.md)."""
    import numpy as np

    import perfkit
    from perfkit.analysis import summaries
    from tests.conftest import FakeClock

    def run_logging(name: str, config: dict, **logged: float) -> Path:
        clock = FakeClock()
        with perfkit.Run(name, out_dir=tmp_path / name, clock=clock, device="cpu",
                         probes=None, config=config) as run:  # fmt: skip
            with run.phase("train") as train:
                for _ in train.iterate([np.zeros((4, 3))] * 2):
                    clock.advance(1.0)
            with run.phase("val") as val:
                for _ in val.iterate([np.zeros((4, 3))]):
                    clock.advance(0.5)
                run.log(**logged)
        assert run.run_dir is not None
        return run.run_dir

    def eval_accuracy(run_dir: Path) -> set[tuple[str, float]]:  # (logged name, value)
        entries = [json.loads(line.split(" ", 1)[1]) for line in mllog_lines(run_dir)]
        return {
            (e["metadata"]["metric"], e["value"]) for e in entries if e["key"] == "eval_accuracy"
        }

    trainer = run_logging("trainer", {}, val_acc=0.9, eval_map=0.42)
    (row,) = summaries(trainer).to_dict("records")
    assert (row["acc_val"], row["mAP"]) == (0.9, 0.42)
    assert eval_accuracy(trainer) == {("val_acc", 0.9), ("eval_map", 0.42)}
    own = {"metric_names": {"acc_val": "my_top1", "mAP": ["bbox_ap"]}}
    renamed = run_logging("own", own, val_acc=0.9, my_top1=0.5, bbox_ap=0.3, eval_map=0.42)
    (row,) = summaries(renamed).to_dict("records")
    assert (row["acc_val"], row["mAP"]) == (0.5, 0.3)  # the config's names before the table's
    assert eval_accuracy(renamed) == {("my_top1", 0.5), ("bbox_ap", 0.3)}
