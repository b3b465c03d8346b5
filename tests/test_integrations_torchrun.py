"""Both trainer callbacks under ``torchrun --nproc_per_node=2`` on the CPU (gloo): one summary
(rank 0's), layout 1x2, samples global, steps per rank, the global batch with accumulation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]

HF = textwrap.dedent(
    """
    import sys, torch, transformers
    from perfkit.integrations.transformers import PerfkitCallback

    out = sys.argv[1]
    config = transformers.BertConfig(
        vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=16, max_position_embeddings=16, num_labels=2)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    ids, labels = torch.randint(0, 32, (32, 6)), torch.randint(0, 2, (32,))
    data = [{"input_ids": ids[i], "labels": labels[i]} for i in range(32)]
    args = transformers.TrainingArguments(
        output_dir=out + "/hf", per_device_train_batch_size=4, gradient_accumulation_steps=2,
        num_train_epochs=2, save_strategy="no", logging_strategy="no", report_to=[],
        use_cpu=True, disable_tqdm=True, ddp_backend="gloo")
    callback = PerfkitCallback(name="hf", out_dir=out, device="cpu", probes=None)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data,
                                   callbacks=[callback])
    trainer.train()
    print("GLOBAL_STEP", trainer.state.global_step)
    """
)

LIGHTNING = textwrap.dedent(
    """
    import sys, torch, lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset
    from perfkit.integrations.lightning import PerfkitCallback

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 2)
        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.layer(x), y)
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    out = sys.argv[1]
    data = TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,)))
    callback = PerfkitCallback(name="pl", out_dir=out, device="cpu", probes=None)
    trainer = pl.Trainer(
        max_epochs=2, accelerator="cpu", devices=2, strategy="ddp", logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[callback])
    trainer.fit(Tiny(), DataLoader(data, batch_size=4))
    print("GLOBAL_STEP", trainer.global_step)
    """
)


def torchrun(tmp_path: Path, source: str) -> tuple[Path, str]:
    script = tmp_path / "job.py"
    script.write_text(source)
    out = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={free_port()}", str(script), str(out),
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done.stdout


def only_summary(out: Path) -> dict:
    (summary,) = list(out.glob("*/summary.json"))  # one run, one summary: rank 0's
    return json.loads(summary.read_text())


@pytest.mark.slow
def test_hugging_face_under_torchrun(tmp_path):
    import torch

    if not hasattr(torch.cpu, "set_device"):
        pytest.skip("accelerate's CPU DDP calls torch.cpu.set_device, which torch < 2.2 lacks")
    from perfkit.analysis import mllog_lines

    out, stdout = torchrun(tmp_path, HF)
    s = only_summary(out)
    assert s["status"] == "ok" and s["meta"]["layout"] == "1x2"
    # 32 samples a epoch over 2 ranks: 16 per rank, micro-batches of 4, accumulation 2: 2
    # optimizer steps of 8 per rank and epoch - the Trainer's own global_step counts 4
    assert "GLOBAL_STEP 4" in stdout
    assert (s["train_samples"], s["train_steps"]) == (64, 4)
    config = s["meta"]["config"]
    assert (config["world_size"], config["global_batch_size"]) == (2, 16)  # 4 x 2 x 2
    (run_dir,) = [p.parent for p in out.glob("*/summary.json")]
    events = [json.loads(line.split(" ", 1)[1]) for line in mllog_lines(run_dir)]
    assert [e["value"] for e in events if e["key"] == "global_batch_size"] == [16]


@pytest.mark.slow
def test_lightning_under_torchrun(tmp_path):
    out, stdout = torchrun(tmp_path, LIGHTNING)
    s = only_summary(out)
    assert s["status"] == "ok" and s["meta"]["layout"] == "1x2"
    # 32 samples a epoch over 2 ranks: 4 batches of 4 per rank and epoch
    assert "GLOBAL_STEP 8" in stdout
    assert (s["train_samples"], s["train_steps"]) == (64, 8)
    config = s["meta"]["config"]
    assert (config["world_size"], config["global_batch_size"]) == (2, 8)
