"""PerfkitCallback on a real Hugging Face Trainer (CPU, a 1-layer BERT built from a config, no
downloads): a train phase per epoch, samples per optimizer step, the Trainer's logs."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import torch
import transformers  # the "transformers" extra (in dev)

from perfkit.analysis import mllog_lines, summaries
from perfkit.analysis._read import read_run
from perfkit.integrations._steps import TokenTally
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
    # each epoch's evaluation (after on_epoch_end) is a val phase of 2 prediction steps (4 + 2)
    assert [p["kind"] for p in summary["phases"]] == ["train", "val", "train", "val"]
    assert [p["samples"] for p in summary["phases"]] == [10, 6, 10, 6]
    assert (summary["val_steps"], summary["val_samples"]) == (4, 12)
    assert summary["train_compute_s"] >= forward_s[0] > 0
    # 6 train batches collated in the gaps between steps (eval collates in the val phases)
    assert summary["train_io_s"] >= 6 * COLLATE_S
    assert summary["train_io_s"] + summary["train_compute_s"] <= summary["train_wall_s"] + 1e-9
    history = trainer.state.log_history
    last_eval = [h for h in history if "eval_loss" in h][-1]
    assert summary["eval_loss"] == pytest.approx(last_eval["eval_loss"])
    assert summary["train_loss"] == pytest.approx(history[-1]["train_loss"])
    assert callback.run.run_dir is not None
    on_disk = json.loads((callback.run.run_dir / "summary.json").read_text())
    assert on_disk["train_steps"] == 6
    # the Trainer's settings in the config: 4 per device x 1 accumulation x 1 rank
    config = callback.run.config
    assert (config["bs"], config["gradient_accumulation_steps"], config["world_size"]) == (4, 1, 1)
    assert config["global_batch_size"] == 4 and config["precision"] == "fp32"
    assert config["lr"] == args.learning_rate and config["max_steps"] == trainer.state.max_steps
    assert config["params"] == sum(p.numel() for p in model.parameters())
    assert config["model"] == "BertForSequenceClassification"
    assert (config["seed"], config["epochs"]) == (args.seed, 2)
    assert config["eval_bs"] == 4


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


class Clock(transformers.TrainerCallback):
    """perf_counter at the Trainer's train begin and end: a clock outside perfkit."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.begin = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        self.end = time.perf_counter()


def hf_args(tmp_path, **overrides) -> transformers.TrainingArguments:
    settings = dict(
        output_dir=str(tmp_path / "hf"), per_device_train_batch_size=4,
        per_device_eval_batch_size=4, num_train_epochs=1, logging_strategy="no",
        save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    settings.update(overrides)
    return transformers.TrainingArguments(**settings)


def test_evaluation_every_n_steps_is_not_train_time(tmp_path):
    train_collate, eval_collate = SlowCollator(), SlowCollator()
    eval_collate_s = 0.1  # an evaluation far slower than training, as the issue saw

    def collate(rows):
        # the Trainer's model is in eval mode while it evaluates
        if not trainer.model.training:
            time.sleep(eval_collate_s)
            return eval_collate(rows)
        return train_collate(rows)

    callback = PerfkitCallback(name="bert", out_dir=tmp_path / "runs", device="cpu", probes=None)
    clock = Clock()
    args = hf_args(tmp_path, eval_strategy="steps", eval_steps=8, num_train_epochs=2)
    trainer = transformers.Trainer(
        model=tiny_bert(), args=args, train_dataset=examples(32), eval_dataset=examples(8),
        data_collator=collate, callbacks=[clock, callback],
    )  # fmt: skip
    evaluations: list[float] = []
    evaluate = trainer.evaluate

    def timed_evaluate(*a, **kw):  # a clock around each of the Trainer's evaluations
        start = time.perf_counter()
        try:
            return evaluate(*a, **kw)
        finally:
            evaluations.append(time.perf_counter() - start)

    trainer.evaluate = timed_evaluate  # type: ignore[method-assign]
    started = time.perf_counter()
    trainer.train()
    train_call_s = time.perf_counter() - started
    s = callback.summary
    assert s is not None and s["status"] == "ok"
    # 2 epochs of 8 steps of 4: an evaluation after steps 8 and 16 (each 2 batches of 4)
    assert trainer.state.global_step == 16 and len(evaluations) == 2
    assert (s["train_samples"], s["train_steps"]) == (64, 16)
    assert (s["val_samples"], s["val_steps"]) == (16, 4)
    assert sum(evaluations) > 4 * eval_collate_s
    train_s = clock.end - clock.begin - sum(evaluations)
    assert s["p_train"] == pytest.approx(64 / train_s, rel=0.05)
    # the val phases run from the step's end to on_evaluate, inside evaluate(): the clock
    # around evaluate() differs by the Trainer's own work on either side (ms)
    assert abs(s["val_wall_s"] - sum(evaluations)) < 0.1
    assert s["train_io_s"] / s["train_wall_s"] < 0.9  # was 0.92 with evaluation counted as IO
    # p_whole keeps the evaluations: 64 samples over (nearly) the whole training
    assert s["p_whole"] == pytest.approx(64 / (clock.end - clock.begin), rel=0.05)
    assert s["p_whole"] < s["p_train"]
    # e2e_time counts from the process's start (FlagPerf's), so it holds all of train()
    assert s["meta"]["e2e_from"] == "process" and s["e2e_time"] > train_call_s


def test_accumulation_with_a_short_last_group(tmp_path):
    callback = PerfkitCallback(name="bert", out_dir=tmp_path / "runs", device="cpu", probes=None)
    args = hf_args(tmp_path, per_device_train_batch_size=2, gradient_accumulation_steps=2)
    trainer = transformers.Trainer(
        model=tiny_bert(), args=args, train_dataset=examples(10),
        data_collator=SlowCollator(), callbacks=[callback],
    )  # fmt: skip
    trainer.train()
    s = callback.summary
    assert s is not None
    # 10 samples in micro-batches of 2: optimizer steps of 4, 4 and 2 samples - transformers
    # 4.46 (the oldest stack) plans 5 // 2 = 2 steps and stops there: 4 + 4 samples
    expected = {3: 10, 2: 8}
    assert trainer.state.global_step in expected
    assert s["train_steps"] == trainer.state.global_step
    assert s["train_samples"] == expected[trainer.state.global_step]
    assert callback.run.config["global_batch_size"] == 4  # 2 x 2 accumulation x 1 rank
    lines = [json.loads(line.split(" ", 1)[1]) for line in mllog_lines(callback.run.run_dir)]
    (batch,) = [e["value"] for e in lines if e["key"] == "global_batch_size"]
    assert batch == 4


def test_evaluate_predict_and_a_second_train_are_recorded(tmp_path):
    callback = PerfkitCallback(name="bert", out_dir=tmp_path / "runs", device="cpu", probes=None)

    def accuracy(prediction):  # the Trainer logs it as eval_accuracy
        return {
            "accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())
        }

    trainer = transformers.Trainer(
        model=tiny_bert(), args=hf_args(tmp_path), train_dataset=examples(8),
        eval_dataset=examples(10), data_collator=SlowCollator(), callbacks=[callback],
        compute_metrics=accuracy,
    )  # fmt: skip
    trainer.train()
    first = callback.summary
    metrics = callback.evaluate(trainer)  # 10 samples: batches of 4, 4, 2
    evaluated = callback.summary
    output = callback.predict(trainer, examples(6))  # batches of 4, 2
    predicted = callback.summary
    trainer.train()
    second = callback.summary
    assert [r.name for r in callback.runs] == ["bert", "bert-evaluate", "bert-predict", "bert"]
    assert first is not None and second is not None and first["run_id"] != second["run_id"]
    assert (first["train_samples"], second["train_samples"]) == (8, 8)
    assert evaluated is not None and predicted is not None
    assert (evaluated["val_steps"], evaluated["val_samples"]) == (3, 10)
    assert evaluated["eval_loss"] == pytest.approx(metrics["eval_loss"])
    # each evaluation metric logged once; the report reads eval_accuracy as acc_val
    records = read_run(callback.runs[1].run_dir).records
    assert (records["name"] == "eval_accuracy").sum() == 1
    (row,) = summaries(callback.runs[1].run_dir).to_dict("records")
    assert row["acc_val"] == pytest.approx(metrics["eval_accuracy"])
    assert (predicted["infer_steps"], predicted["infer_samples"]) == (2, 6)
    assert output.predictions.shape[0] == 6
    assert predicted["test_loss"] == pytest.approx(output.metrics["test_loss"])
    with pytest.warns(UserWarning, match="outside training is not recorded"):
        trainer.evaluate()  # a bare call: no callback says it starts


def test_the_example_runs_as_written(tmp_path, capsys):
    from examples import hf_trainer

    argv = ["--out-dir", str(tmp_path), "--epochs", "1", "--samples", "32", "--eval-steps", "1"]
    assert hf_trainer.main(argv) == 0
    runs = sorted(
        p.name.rsplit("-", 4)[0] for p in tmp_path.glob("bert-tiny*")
    )  # name-date-time-pid-hex
    assert runs == ["bert-tiny", "bert-tiny-evaluate", "bert-tiny-predict"]
    train_dir = next(p for p in tmp_path.glob("bert-tiny-2*"))
    s = json.loads((train_dir / "summary.json").read_text())
    # 32 samples, micro-batches of 8, accumulation 2: 2 optimizer steps, each followed by an
    # evaluation of 32 samples (a val phase inside the train phase)
    assert (s["train_samples"], s["train_steps"], s["val_samples"]) == (32, 2, 64)
    assert "bert-tiny-predict" in capsys.readouterr().out


def test_figures_reach_the_trainers_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    callback = PerfkitCallback(name="bert", out_dir=tmp_path / "runs", device="cpu", probes=None)
    report = ["tensorboard"]
    args = hf_args(tmp_path, num_train_epochs=2, eval_strategy="epoch", report_to=report)
    trainer = transformers.Trainer(
        model=tiny_bert(), args=args, train_dataset=examples(8), eval_dataset=examples(4),
        data_collator=SlowCollator(),
    )  # fmt: skip
    callback.attach(trainer)
    trainer.train()
    final = callback.summary
    assert final is not None and final["train_samples"] == 16
    (events,) = (tmp_path / "hf").rglob("events.out.tfevents.*")  # in output_dir/runs/
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"perfkit/p_train", "perfkit/p_core", "perfkit/p_val_whole"} <= {
        tag.removeprefix("train/") for tag in tags
    }
    tag = next(t for t in tags if t.endswith("perfkit/p_train"))
    values = [s.value for s in accumulator.Scalars(tag)]
    assert len(values) == 4  # after each epoch's train phase and each evaluation
    assert values[-1] == pytest.approx(final["p_train"], rel=1e-6)  # float32 in the file
    assert final["p_train"] == pytest.approx(16 / final["train_wall_s"])
    # perfkit's own figures are not logged back into the run
    assert not any(key.startswith("perfkit/") for key in callback.run.logged)


def test_an_unattached_callback_says_its_figures_miss_report_to(tmp_path):
    pytest.importorskip("tensorboard")
    callback = PerfkitCallback(name="bert", out_dir=tmp_path / "runs", device="cpu", probes=None)
    args = hf_args(tmp_path, report_to=["tensorboard"])
    trainer = transformers.Trainer(
        model=tiny_bert(), args=args, train_dataset=examples(4),
        data_collator=SlowCollator(), callbacks=[callback],
    )  # fmt: skip
    with pytest.warns(UserWarning, match=r"callback.attach\(trainer\)"):
        trainer.train()
    assert callback.summary is not None and callback.summary["train_samples"] == 4


@pytest.mark.parametrize("attached", [True, False])
def test_several_eval_datasets_each_make_a_val_phase(tmp_path, attached):
    callback = PerfkitCallback(name="bert", out_dir=tmp_path / "runs", device="cpu", probes=None)
    args = hf_args(tmp_path, eval_strategy="epoch")
    trainer = transformers.Trainer(
        model=tiny_bert(), args=args, train_dataset=examples(4),
        eval_dataset={"a": examples(8), "b": examples(6)}, data_collator=SlowCollator(),
        callbacks=None if attached else [callback],
    )  # fmt: skip
    if attached:
        callback.attach(trainer)
    trainer.train()
    s = callback.summary
    assert s is not None
    assert [p["kind"] for p in s["phases"]] == ["train", "val", "val"]
    # "a": batches of 4 + 4; "b": 4 + 2 - without the Trainer in hand, the callback learns of
    # "b"'s evaluation at its first batch's end and times it from there (its 4 samples out)
    b_samples, b_steps = (6, 2) if attached else (2, 1)
    assert [p["samples"] for p in s["phases"]] == [4, 8, b_samples]
    assert [p["steps"] for p in s["phases"]] == [1, 2, b_steps]
    assert "eval_a_loss" in s and "eval_b_loss" in s


def test_an_evaluation_before_training_is_a_val_phase(tmp_path):
    callback = PerfkitCallback(name="bert", out_dir=tmp_path / "runs", device="cpu", probes=None)
    args = hf_args(tmp_path, eval_strategy="epoch", eval_on_start=True)
    trainer = transformers.Trainer(
        model=tiny_bert(), args=args, train_dataset=examples(4), eval_dataset=examples(6),
        data_collator=SlowCollator(), callbacks=[callback],
    )  # fmt: skip
    trainer.train()
    s = callback.summary
    assert s is not None
    # eval_on_start, then the epoch and its evaluation: 6 samples each (batches of 4 and 2)
    assert [(p["kind"], p["samples"]) for p in s["phases"]] == [
        ("val", 6), ("train", 4), ("val", 6),
    ]  # fmt: skip
    assert s["val_steps"] == 4


@pytest.mark.parametrize("several", [False, True])
def test_tokens_of_train_and_evaluation_forwards(tmp_path, several):
    """Tokens from the model's forward calls: the attention masks' sums of the batches the
    collator made, training and evaluation apart (an evaluation inside training included).
    ``several``: two eval datasets; the callback, without the Trainer in hand, learns of the
    second's evaluation at its first batch's end - that batch's tokens are no train step's."""
    made: dict[bool, list[int]] = {True: [], False: []}  # training? -> each batch's real tokens
    train_rows, eval_rows = examples(24), examples(8)
    evaluated = {id(row["input_ids"]) for row in eval_rows}
    eval_dataset: Any = {"a": eval_rows[:4], "b": eval_rows[4:]} if several else eval_rows

    def collate(rows):
        generator = torch.Generator().manual_seed(len(made[True]) + 100 * len(made[False]))
        lengths = torch.randint(1, 7, (len(rows),), generator=generator)
        mask = (torch.arange(6)[None, :] < lengths[:, None]).long()
        made[id(rows[0]["input_ids"]) not in evaluated].append(int(lengths.sum()))
        batch = {key: torch.stack([r[key] for r in rows]) for key in rows[0]}
        return {**batch, "attention_mask": mask}

    callback = PerfkitCallback(name="bert", out_dir=tmp_path / "runs", device="cpu", probes=None)
    args = hf_args(tmp_path, eval_strategy="steps", eval_steps=3)
    trainer = transformers.Trainer(
        model=tiny_bert(), args=args, train_dataset=train_rows, eval_dataset=eval_dataset,
        data_collator=collate, callbacks=[callback],
    )  # fmt: skip
    trainer.train()
    train = [p for p in callback.run.phases if p.kind == "train"]
    evals = [p for p in callback.run.phases if p.kind == "val"]
    # 6 steps of 4; evaluations after 3 and 6 (each of "a" and "b": one batch of 4)
    assert len(made[True]) == 6 and len(evals) == (4 if several else 2)
    assert sum(p.tokens for p in train) == sum(made[True])
    # "b"'s batches (the 2nd and 4th of evaluation) are in no phase when several
    assert sum(p.tokens for p in evals) == sum(made[False][0::2] if several else made[False])
    assert {p.tokens_from for p in [*train, *evals]} == {"attention_mask"}
    rows = read_run(callback.run.run_dir).steps
    assert rows.loc[rows["phase"] == "train", "tokens"].tolist() == made[True]


def test_tokens_of_a_generate_call_count_each_position_once():
    """generate's cached decoding steps pass the whole attention mask (past included) with one
    new id per row: the forward hook counts the new positions only. Reference: 8 real prompt
    tokens (rows of 5 and 3, left-padded), then 3 decoding forwards of one token per row (the
    4th new token is never fed back) - 8 + 3 * 2 = 14 (the whole masks would give 44)."""
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, pad_token_id=0, eos_token_id=2,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    tally = TokenTally()
    model.register_forward_pre_hook(tally.hook, with_kwargs=True)
    ids = torch.randint(3, 64, (2, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=4, min_new_tokens=4,
        do_sample=False, pad_token_id=0,
    )  # fmt: skip
    tally.end_step()
    assert (tally(), tally.source) == (14, "attention_mask")
