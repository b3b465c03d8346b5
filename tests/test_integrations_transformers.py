"""PerfkitCallback on a real Hugging Face Trainer (CPU, a 1-layer BERT built from a config, no
downloads): a train phase per epoch, samples per optimizer step, the Trainer's logs."""

from __future__ import annotations

import json
import time

import pytest
import torch
import transformers  # the "transformers" extra (in dev)

from perfkit.integrations.transformers import PerfkitCallback

COLLATE_S = 0.01  # per batch, in the data collator


def tiny_bert() -> transformers.BertForSequenceClassification:
    config = transformers.BertConfig(
        vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=16, max_position_embeddings=16, num_labels=2,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config)


def examples(n: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(n)
    ids = torch.randint(0, 32, (n, 6), generator=generator)
    labels = torch.randint(0, 2, (n,), generator=generator)
    return [{"input_ids": ids[i], "labels": labels[i]} for i in range(n)]


class SlowCollator:
    """Stacks a batch, sleeping COLLATE_S; ``seconds`` sums its time."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self, rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        start = time.perf_counter()
        time.sleep(COLLATE_S)
        batch = {key: torch.stack([r[key] for r in rows]) for key in rows[0]}
        self.seconds += time.perf_counter() - start
        return batch


def test_train_records_a_phase_per_epoch(tmp_path):
    model = tiny_bert()
    forward_s = [0.0]  # training forwards, timed by hooks: a lower bound of compute
    started: list[float] = []
    model.register_forward_pre_hook(lambda m, a: started.append(time.perf_counter()))
    model.register_forward_hook(
        lambda m, a, o: forward_s.__setitem__(0, forward_s[0] + time.perf_counter() - started[-1])
        if m.training else None
    )  # fmt: skip
    callback = PerfkitCallback(name="bert", out_dir=tmp_path / "runs", device="cpu", probes=None)
    collator = SlowCollator()
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        num_train_epochs=2,
        eval_strategy="epoch",
        logging_strategy="epoch",
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = transformers.Trainer(
        model=model,
        args=args,
        train_dataset=examples(10),  # batches of 4, 4, 2 per epoch
        eval_dataset=examples(6),
        data_collator=collator,
        callbacks=[callback],
    )
    trainer.train()
    summary = callback.summary
    assert summary is not None and summary["status"] == "ok"
    assert (summary["train_samples"], summary["train_steps"]) == (20, 6)  # 2 x (4 + 4 + 2)
    assert [p["kind"] for p in summary["phases"]] == ["train", "train"]
    assert [p["samples"] for p in summary["phases"]] == [10, 10]
    assert summary["train_compute_s"] >= forward_s[0] > 0
    # 6 train batches collated in the gaps between steps (eval collates outside the phases)
    assert summary["train_io_s"] >= 6 * COLLATE_S
    assert summary["train_io_s"] + summary["train_compute_s"] <= summary["train_wall_s"] + 1e-9
    history = trainer.state.log_history
    last_eval = [h for h in history if "eval_loss" in h][-1]
    assert summary["eval_loss"] == pytest.approx(last_eval["eval_loss"])
    assert summary["train_loss"] == pytest.approx(history[-1]["train_loss"])
    assert callback.run.run_dir is not None
    on_disk = json.loads((callback.run.run_dir / "summary.json").read_text())
    assert on_disk["train_steps"] == 6


def test_a_run_the_user_started_is_marked_failed(tmp_path):
    callback = PerfkitCallback(name="bert", out_dir=tmp_path, device="cpu", probes=None)

    class Broken(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise RuntimeError("the user's job failed")

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), per_device_train_batch_size=4, num_train_epochs=1,
        save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    trainer = transformers.Trainer(
        model=tiny_bert(), args=args, train_dataset=examples(12),
        data_collator=SlowCollator(), callbacks=[callback, Broken()],
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="the user's job failed"):
        with callback.run:
            trainer.train()
    assert callback.run.run_dir is not None
    summary = json.loads((callback.run.run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "the user's job failed" in summary["error"]
    assert summary["train_steps"] == 1  # step 2 raised at its end: only step 1 counts
