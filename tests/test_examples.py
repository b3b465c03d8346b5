"""The seed examples end to end on tiny built-in data: every metric of each seed's table present
and finite, computed through the real paths (torch.compile, COCO evaluation, probes)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from examples import (
    common,
    fasterrcnn_training,
    resnet50_inference,
    retinanet_training,
    ssd_resnet50,
)
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]
TINY = ["--batch-size", "2", "--steps", "2", "--workers", "0", "--sample-interval", "0.1"]
MEM = re.compile(r"^\d+(\.\d+)?/\d+(\.\d+)?$")  # the seeds' "18.7/32.0"
TRAINING_TABLE = ("e2e_time", "p_whole", "p_train", "p_core", "mAP")


def assert_table(summary: dict[str, Any], metrics: tuple[str, ...]) -> None:
    assert summary["status"] == "ok"
    for name in metrics:
        assert name in summary and math.isfinite(summary[name]), name
    assert MEM.match(summary["mem"]), summary.get("mem")


@pytest.mark.slow
def test_resnet50_inference_reports_the_seed_table(tmp_path, capsys):
    summary = resnet50_inference.main(
        [*TINY, "--image-size", "64", "--out-dir", str(tmp_path), "--peak-flops", "1e12"]
    )
    assert_table(
        summary,
        ("e2e_time", "p_val_whole", "p_val_core", "p_infer_whole", "p_infer_core", "MFU"),
    )
    assert summary["val_samples"] == summary["infer_samples"] == 4  # 2 steps x 2 images
    assert summary["meta"]["config"]["backend"] == "compile" and summary["build_s"] > 0
    for acc in ("acc_val", "acc_infer"):
        assert 0 <= summary[acc] <= 1
    # MFU = FLOPs per image x core images/s / peak FLOP/s, one device
    expected = summary["flops_per_sample"] * summary["p_infer_core"] / 1e12
    assert summary["MFU"] == pytest.approx(expected, rel=1e-12)
    assert "p_infer_core" in capsys.readouterr().out  # the table was printed


@pytest.mark.slow
def test_retinanet_training_reports_the_seed_table(tmp_path, capsys):
    args = [*TINY, "--steps", "3", "--warmup-steps", "1", "--image-size", "128"]
    summary = retinanet_training.main([*args, "--out-dir", str(tmp_path)])
    assert_table(summary, TRAINING_TABLE)
    # built-in data, no weights: the detection probe, said in the output, fitted before the
    # first train phase (run clock), so out of p_whole's window (train start to val end)
    out = capsys.readouterr().out
    assert "RetinaNet heads fitted to the 32 built-in training images (a detection probe" in out
    assert "mAP shows the evaluation path, not training quality" in out
    train, val = summary["phases"]
    assert 0 < summary["probe_fit_s"] <= train["start_t"]
    window = (summary["train_samples"] + summary["train_warmup_samples"]) / summary["p_whole"]
    assert window == pytest.approx(val["end_t"] - train["start_t"], rel=1e-9)
    # 3 steps of 2 images: the first train step is warm-up, val has none
    assert summary["train_warmup_samples"] == 2 and summary["train_samples"] == 4
    assert summary["val_samples"] == 6 and "val_warmup_steps" not in summary
    config = summary["meta"]["config"]
    assert config["lr"] == pytest.approx(0.04 * 2 / 64)  # the seed's lr, scaled to a batch of 2


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["train", "evaluation"])
def test_ssd_resnet50_in_both_modes(tmp_path, mode):
    summary = ssd_resnet50.main([*TINY, "--mode", mode, "--out-dir", str(tmp_path)])
    if mode == "train":
        assert_table(summary, TRAINING_TABLE)
        assert summary["meta"]["config"]["lr"] == pytest.approx(2.6e-3 * 2 / 32)
    else:
        assert_table(summary, ("e2e_time", "p_infer_whole", "p_infer_core", "mAP"))
        assert "p_train" not in summary  # no training phase: absent, not zero


@pytest.mark.slow
def test_fasterrcnn_prints_the_seed_loss_line_and_coco_summary(tmp_path, capsys):
    summary = fasterrcnn_training.main([*TINY, "--image-size", "128", "--out-dir", str(tmp_path)])
    assert_table(summary, TRAINING_TABLE)
    out = capsys.readouterr().out
    number = r"\d+\.\d{5}"
    names = "rpn_loss rcnn_loss rpn_cls_loss rpn_reg_loss rcnn_cls_loss rcnn_reg_loss total_loss"
    line = "epoch: 1 step: 2, " + ", ".join(f"{n}: {number}" for n in names.split())
    assert re.search(line, out), out
    assert re.search(r"speed: \d+\.\d\d ms/step", out)
    summary_lines = re.findall(r"^ Average (Precision|Recall) .* = (-?\d\.\d{3})$", out, re.M)
    assert len(summary_lines) == 12
    assert float(summary_lines[0][1]) == pytest.approx(summary["mAP"], abs=5e-4)


@pytest.mark.slow
def test_torchrun_launches_an_example_file_on_two_processes(tmp_path):
    """`torchrun --nproc_per_node=2 examples/retinanet_training.py`, as the README shows."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={free_port()}", "examples/retinanet_training.py",
           *TINY, "--steps", "1", "--image-size", "96", "--out-dir", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (summary_path,) = tmp_path.glob("retinanet-*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["meta"]["layout"] == "1x2"
    assert summary["train_samples"] == 2 * 2  # 1 step x 2 images x 2 ranks
    assert summary["meta"]["config"]["global_bs"] == 4
    assert math.isfinite(summary["mAP"])


def test_a_missing_dataset_is_one_clear_line_and_exit_status_2(tmp_path):
    cmd = [sys.executable, "-m", "examples.retinanet_training", "--data", str(tmp_path / "coco")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: --data:")
    assert "annotations_trainval2017.zip" in proc.stderr and "Traceback" not in proc.stderr


def args_for(tmp_path: Path, *extra: str) -> Any:
    return ssd_resnet50.build_parser().parse_args(["--out-dir", str(tmp_path), *extra])


def test_backbone_weights_load_and_a_wrong_file_is_named(tmp_path):
    import torchvision

    reference = torchvision.models.resnet50()
    path = tmp_path / "resnet50-19c8e357.pth"
    torch.save(reference.state_dict(), path)
    args = args_for(tmp_path, "--backbone-weights", str(path))
    args.image_size = 300
    model = ssd_resnet50.build_model(args)
    loaded = model.backbone.features[0].weight  # conv1
    assert torch.equal(loaded, reference.conv1.weight)

    torch.save({"model": {"conv1.weight": torch.zeros(1)}}, path)
    with pytest.raises(common.ExampleError, match="--backbone-weights: the checkpoint does not"):
        ssd_resnet50.build_model(args)
    args.backbone_weights = tmp_path / "missing.pth"
    with pytest.raises(common.ExampleError, match=r"--backbone-weights: no such file .*download"):
        ssd_resnet50.build_model(args)


def test_whole_model_weights_round_trip(tmp_path):
    args = retinanet_training.build_parser().parse_args(["--out-dir", str(tmp_path)])
    common.detection_defaults(args, epochs=1)
    model = retinanet_training.build_model(args)
    path = tmp_path / "retinanet.pth"
    torch.save({"model": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    args.weights = path
    torch.manual_seed(1)
    again = retinanet_training.build_model(args)
    for (name, a), (_, b) in zip(
        model.state_dict().items(), again.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_ssd_backbone_has_nvidias_feature_maps():
    import torchvision

    backbone = ssd_resnet50.SSDResNet50Backbone(torchvision.models.resnet50()).eval()
    with torch.no_grad():
        maps = backbone(torch.zeros(1, 3, 300, 300))
    shapes = [tuple(m.shape[1:]) for m in maps.values()]
    assert shapes == [(1024, 38, 38), (512, 19, 19), (512, 10, 10), (256, 5, 5), (256, 3, 3),
                      (256, 1, 1)]  # fmt: skip


def test_step_schedule_warms_up_then_decays():
    param = torch.nn.Parameter(torch.zeros(()))
    optimizer = torch.optim.SGD([param], lr=1.0)
    schedule = common.step_schedule(
        optimizer, steps_per_epoch=10, milestones=[2], warmup_steps=4, warmup_factor=0.2
    )
    rates = []
    for _ in range(25):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    # warm-up: 0.2 (1 - s/4) + s/4 for s = 0..3: 0.2, 0.4, 0.6, 0.8; then 1 until epoch 2
    # (step 20), then 0.1
    assert rates[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert rates[19] == 1.0 and rates[20] == pytest.approx(0.1)
    assert common.scaled_milestones((16, 22), 26, 1) == [1, 1]
    assert common.scaled_milestones((43, 54), 65, 65) == [43, 54]


def test_demo_ends_with_mfu_plots_and_traces(tmp_path, capsys):
    from datetime import datetime, timezone

    from examples import demo
    from tests.test_analysis import infer_run, train_run

    before = tmp_path / "old"
    train_run(before, "earlier")  # a run from before the demo: left alone
    since = datetime.now(timezone.utc)
    infer = infer_run(tmp_path / "new")  # MFU 1e10 FLOPs x 768 / 9 s / 1e12 = 85.33 %
    train = train_run(tmp_path / "new", "train")
    demo.show_runs(tmp_path, since)
    out = capsys.readouterr().out
    assert "infer: MFU 85.33% (peak: given by the caller)" in out
    assert "train: no MFU (this case counts no FLOPs)" in out
    for run_dir in (infer, train):
        assert (run_dir / "plot.png").read_bytes()[:4] == b"\x89PNG"
        assert json.loads((run_dir / "trace.json").read_text())["traceEvents"]
        assert f"plot:  {run_dir / 'plot.png'}" in out
    assert "earlier" not in out


@pytest.mark.slow
def test_the_demo_case_on_the_cpu_reports_mfu_from_a_measured_peak(tmp_path, capsys):
    # No --peak-flops and no table figure for a CPU: the run divides by this CPU's measured
    # fp32 peak (here the cache's 5e11 FLOP/s, so nothing is measured), and says so.
    from tests.test_run_peak import cache_a_peak

    cache_a_peak("fp32", 5e11)
    summary = resnet50_inference.main([*TINY, "--image-size", "64", "--out-dir", str(tmp_path)])
    assert summary["mfu_peak_source"] == "measured" and summary["peak_flops"] == 5e11
    expected = summary["flops_per_sample"] * summary["p_infer_core"] / 5e11
    assert summary["MFU"] == pytest.approx(expected, rel=1e-12)
    out = capsys.readouterr().out
    assert "% (measured peak) |" in out and "MFU peak (measured): 0.5 TFLOP/s" in out
