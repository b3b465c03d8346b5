"""PerfkitCallback on a real Lightning Trainer (CPU, a 4 -> 2 linear model): phases, samples
from the batches, the Trainer's logged metrics, and a failing training step."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl  # the "lightning" extra (in dev)
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from perfkit.integrations.lightning import PerfkitCallback

LOAD_S = 0.004  # per sample, in the dataset
STEP_S = 0.03  # per training step, in training_step


class Slow(Dataset):
    """``n`` samples of 4 features; each read sleeps LOAD_S and adds its time to ``loaded_s``."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.loaded_s = 0.0
        generator = torch.Generator().manual_seed(n)
        self.x = torch.randn(n, 4, generator=generator)
        self.y = torch.randint(0, 2, (n,), generator=generator)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = time.perf_counter()
        time.sleep(LOAD_S)
        self.loaded_s += time.perf_counter() - start
        return self.x[i], self.y[i]


class Tiny(pl.LightningModule):
    def __init__(self, fail_at_step: int | None = None) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)
        self.step_s = 0.0
        self.fail_at_step = fail_at_step

    def training_step(self, batch, batch_idx):
        start = time.perf_counter()
        if self.global_step == self.fail_at_step:
            raise RuntimeError("the user's step failed")
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.layer(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        time.sleep(STEP_S)
        self.step_s += time.perf_counter() - start
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.layer(x)
        self.log("val_loss", torch.nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def test_step(self, batch, batch_idx):
        self.validation_step(batch, batch_idx)

    def predict_step(self, batch, batch_idx):
        return self.layer(batch[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def trainer_with(callback: PerfkitCallback) -> pl.Trainer:
    """A quiet 2-epoch CPU Trainer with one sanity batch."""
    return pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=1,  # a sanity batch, which perfkit leaves out
        callbacks=[callback],
    )


def fit(tmp_path: Path, module: Tiny, train: Slow) -> tuple[PerfkitCallback, pl.Trainer]:
    callback = PerfkitCallback(
        name="tiny", out_dir=tmp_path, config={"bs": 4}, device="cpu", probes=None
    )
    trainer = trainer_with(callback)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(
            module,
            DataLoader(train, batch_size=4),  # 12 samples: 3 batches per epoch
            DataLoader(Slow(6), batch_size=4),  # 6 samples: batches of 4 and 2
        )
    return callback, trainer


def test_fit_records_train_and_val_phases(tmp_path):
    module, train = Tiny(), Slow(12)
    callback, trainer = fit(tmp_path, module, train)
    summary = callback.summary
    assert summary is not None and summary["status"] == "ok"
    assert (summary["train_samples"], summary["train_steps"]) == (24, 6)  # 2 epochs x 12
    assert (summary["val_samples"], summary["val_steps"]) == (12, 4)  # sanity batch left out
    assert [p["kind"] for p in summary["phases"]] == ["train", "val", "train", "val"]
    # the body of each step is at least training_step; the gaps hold at least the loading
    assert summary["train_compute_s"] >= module.step_s >= 6 * STEP_S
    # IO holds the train reads from each epoch's start: all but epoch 0's first batch, which
    # Lightning reads while setting up, before any epoch starts: (24 - 4) x LOAD_S at least
    assert summary["train_io_s"] >= 20 * LOAD_S
    assert train.loaded_s >= 24 * LOAD_S
    assert summary["train_io_s"] + summary["train_compute_s"] <= summary["train_wall_s"] + 1e-9
    assert summary["p_train"] == pytest.approx(24 / summary["train_wall_s"])
    # the Trainer's logged metrics reach the summary (last values)
    logged = {k: float(v) for k, v in trainer.logged_metrics.items()}
    for key in ("train_loss", "val_loss", "val_acc"):
        assert summary[key] == pytest.approx(logged[key])
    assert callback.run.run_dir is not None
    on_disk = json.loads((callback.run.run_dir / "summary.json").read_text())
    assert on_disk["train_samples"] == 24


@pytest.mark.parametrize(("stage", "kind"), [("test", "val"), ("predict", "infer")])
def test_test_and_predict_batches_make_their_phase(tmp_path, stage, kind):
    callback = PerfkitCallback(name="tiny", out_dir=tmp_path, device="cpu", probes=None)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        getattr(trainer_with(callback), stage)(Tiny(), DataLoader(Slow(6), batch_size=4))
    summary = callback.summary
    assert summary is not None and summary["status"] == "ok"
    assert [p["kind"] for p in summary["phases"]] == [kind]
    assert (summary[f"{kind}_samples"], summary[f"{kind}_steps"]) == (6, 2)  # batches of 4, 2


def test_a_failing_step_marks_the_run_failed_and_keeps_the_records(tmp_path):
    with pytest.raises(RuntimeError, match="the user's step failed"):  # the user's error
        fit(tmp_path, Tiny(fail_at_step=4), Slow(12))
    (run_dir,) = tmp_path.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "the user's step failed" in summary["error"]
    # epoch 1's 3 steps and epoch 2's first step count; the step that raised does not
    assert summary["train_steps"] == 4 and summary["train_samples"] == 16


def test_a_perfkit_failure_is_logged_and_training_goes_on(tmp_path, caplog):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")  # out_dir is a file: the run cannot start
    module = Tiny()
    callback = PerfkitCallback(name="tiny", out_dir=blocked, device="cpu", probes=None)
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[callback],
    )  # fmt: skip
    with caplog.at_level("WARNING", logger="perfkit"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(module, DataLoader(Slow(8), batch_size=4))
    assert module.step_s > 0 and trainer.global_step == 2  # training ran to its end
    assert callback.summary is None
    (message,) = [r.getMessage() for r in caplog.records if r.name == "perfkit"]
    assert "starting the run failed" in message and "not-a-folder" in message


def quiet_trainer(callbacks: list, **overrides) -> pl.Trainer:
    settings: dict = dict(
        max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    settings.update(overrides)
    return pl.Trainer(callbacks=callbacks, **settings)


class Spans(pl.Callback):
    """perf_counter spans of each training epoch and each validation: clocks outside perfkit."""

    def __init__(self) -> None:
        self.epochs: list[float] = []
        self.validations: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self._epoch = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.epochs.append(time.perf_counter() - self._epoch)

    def on_validation_start(self, trainer, pl_module):
        self._validation = time.perf_counter()

    def on_validation_end(self, trainer, pl_module):
        self.validations.append(time.perf_counter() - self._validation)


def test_validation_mid_epoch_pauses_the_epochs_train_phase(tmp_path):
    from perfkit.analysis import mllog_lines

    spans = Spans()
    callback = PerfkitCallback(name="tiny", out_dir=tmp_path, device="cpu", probes=None)
    trainer = quiet_trainer([spans, callback], val_check_interval=0.5)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        # 16 train samples: 4 batches per epoch, a validation after batches 2 and 4; the
        # validation reads 12 slow samples (3 batches): longer than the training between
        trainer.fit(Tiny(), DataLoader(Slow(16), batch_size=4), DataLoader(Slow(12), batch_size=4))
    s = callback.summary
    assert s is not None and s["status"] == "ok"
    assert len(spans.validations) == 4 and len(spans.epochs) == 2
    # one train phase per epoch, the validations inside them as val phases
    kinds = [p["kind"] for p in s["phases"]]
    assert kinds == ["train", "val", "val", "train", "val", "val"]
    assert (s["train_samples"], s["train_steps"]) == (32, 8)
    assert (s["val_samples"], s["val_steps"]) == (48, 12)
    train_s = sum(spans.epochs) - sum(spans.validations)  # every validation ran in an epoch
    assert s["train_wall_s"] == pytest.approx(train_s, rel=0.05)
    assert s["val_wall_s"] == pytest.approx(sum(spans.validations), rel=0.05)
    assert s["p_whole"] < s["p_train"]
    # mllog: the Trainer's 2 epochs (not 4 half epochs), each of 16 samples
    events = [json.loads(line.split(" ", 1)[1]) for line in mllog_lines(callback.run.run_dir)]
    assert sum(e["key"] == "epoch_start" for e in events) == 2
    (train_samples,) = [e["value"] for e in events if e["key"] == "train_samples"]
    assert train_samples == 16
    # Lightning's val_acc is the accuracy MLPerf logs: once per validation, in its epoch
    accuracy = [e for e in events if e["key"] == "eval_accuracy"]
    assert [e["metadata"]["epoch_num"] for e in accuracy] == [1, 1, 2, 2]
    assert accuracy[-1]["value"] == pytest.approx(float(trainer.logged_metrics["val_acc"]))


def test_fit_validate_test_predict_on_one_callback(tmp_path):
    callback = PerfkitCallback(name="tiny", out_dir=tmp_path, device="cpu", probes=None)
    trainer = quiet_trainer([callback], max_epochs=1)
    module = Tiny()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(module, DataLoader(Slow(8), batch_size=4), DataLoader(Slow(6), batch_size=4))
        trainer.validate(module, DataLoader(Slow(6), batch_size=4))
        tested = trainer.test(module, DataLoader(Slow(10), batch_size=4))
        trainer.predict(module, DataLoader(Slow(6), batch_size=4))
    names = [run.name for run in callback.runs]
    assert names == ["tiny", "tiny-validate", "tiny-test", "tiny-predict"]
    summaries = [json.loads((run.run_dir / "summary.json").read_text()) for run in callback.runs]
    assert [[p["kind"] for p in s["phases"]] for s in summaries] == [
        ["train", "val"], ["val"], ["val"], ["infer"],
    ]  # fmt: skip
    assert all(s["status"] == "ok" for s in summaries)
    fit_s, validate_s, test_s, predict_s = summaries
    assert (fit_s["train_samples"], fit_s["val_samples"]) == (8, 6)
    assert (validate_s["val_samples"], validate_s["val_steps"]) == (6, 2)
    assert (test_s["val_samples"], test_s["val_steps"]) == (10, 3)  # batches of 4, 4, 2
    assert test_s["val_acc"] == pytest.approx(tested[0]["val_acc"])
    assert (predict_s["infer_samples"], predict_s["infer_steps"]) == (6, 2)
    # the report's acc column reads Lightning's val_acc (as acc_val)
    from perfkit.analysis import summaries

    (row,) = summaries(callback.runs[2].run_dir).to_dict("records")
    assert row["acc_val"] == pytest.approx(tested[0]["val_acc"])


def test_a_step_is_an_optimizer_step_and_settings_fill_the_config(tmp_path, monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")  # restored after the test
    pl.seed_everything(7)
    callback = PerfkitCallback(
        name="tiny", out_dir=tmp_path, config={"lr": 0.5}, device="cpu", probes=None
    )
    trainer = quiet_trainer([callback], accumulate_grad_batches=2)
    module = Tiny()
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(module, DataLoader(Slow(12), batch_size=4))  # 3 micro-batches per epoch
    fit_s = time.perf_counter() - started
    s = callback.summary
    assert s is not None
    # e2e_time counts from the process's start (FlagPerf's), so it holds all of fit()
    assert s["meta"]["e2e_from"] == "process" and s["e2e_time"] > fit_s
    # per epoch: optimizer steps of 2 micro-batches (8 samples) and 1 (4 samples)
    assert trainer.global_step == 4
    assert (s["train_steps"], s["train_samples"]) == (4, 24)
    config = callback.run.config
    assert (config["bs"], config["gradient_accumulation_steps"], config["world_size"]) == (4, 2, 1)
    assert config["global_batch_size"] == 8 and config["precision"] == "fp32"
    assert config["lr"] == 0.5  # the user's config wins over the optimizer's 0.1
    assert config["max_epochs"] == 2 and config["model"] == "Tiny"
    assert config["params"] == 4 * 2 + 2
    assert config["seed"] == 7  # seed_everything's


def test_the_example_runs_as_written(tmp_path, capsys):
    from examples import lightning_trainer

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        assert lightning_trainer.main(["--out-dir", str(tmp_path), "--epochs", "1"]) == 0
    runs = sorted(
        p.name.rsplit("-", 4)[0] for p in tmp_path.glob("cnn-small*")
    )  # name-date-time-pid-hex
    assert runs == ["cnn-small", "cnn-small-predict", "cnn-small-test", "cnn-small-validate"]
    fit_dir = next(p for p in tmp_path.glob("cnn-small-2*"))
    s = json.loads((fit_dir / "summary.json").read_text())
    # 128 samples in batches of 16: 8 steps; validations of 32 after batches 4 and 8
    assert (s["train_samples"], s["train_steps"], s["val_samples"]) == (128, 8, 64)
    assert "cnn-small-test" in capsys.readouterr().out


def fit_with_loggers(tmp_path: Path, loggers: list) -> dict:
    """2 epochs of 8 samples, each with a validation, logged to ``loggers``: the summary."""
    callback = PerfkitCallback(name="tiny", out_dir=tmp_path / "runs", device="cpu", probes=None)
    trainer = quiet_trainer([callback], logger=loggers)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(Tiny(), DataLoader(Slow(8), batch_size=4), DataLoader(Slow(4), batch_size=4))
    (run,) = callback.runs
    final = json.loads((run.run_dir / "summary.json").read_text())
    assert final["p_train"] == pytest.approx(16 / final["train_wall_s"])
    return final


def test_figures_reach_the_trainers_csv_logger(tmp_path):
    import csv

    from lightning.pytorch.loggers import CSVLogger

    final = fit_with_loggers(tmp_path, [CSVLogger(tmp_path / "csv")])
    # CSV: a row per phase end; the last p_train is the run's (2 epochs x 8 samples)
    (metrics_csv,) = (tmp_path / "csv").rglob("metrics.csv")
    rows = list(csv.DictReader(metrics_csv.open()))
    p_train = [float(r["perfkit/p_train"]) for r in rows if r.get("perfkit/p_train")]
    assert len(p_train) == 4  # after each epoch's validation and after each epoch
    assert p_train[-1] == pytest.approx(final["p_train"])


def test_figures_reach_the_trainers_tensorboard_logger(tmp_path):
    pytest.importorskip("tensorboard")
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    final = fit_with_loggers(tmp_path, [TensorBoardLogger(tmp_path / "tb")])
    # TensorBoard: the same scalars, read back from its event file
    (events,) = (tmp_path / "tb").rglob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    assert {"perfkit/p_train", "perfkit/p_core", "perfkit/train_io_fraction"} <= set(tags)
    assert "perfkit/p_val_whole" in tags
    last = accumulator.Scalars("perfkit/p_core")[-1].value
    assert last == pytest.approx(final["p_core"], rel=1e-6)  # float32 in the event file


def test_figures_during_a_phase_at_most_every_n_seconds(tmp_path):
    import csv

    from lightning.pytorch.loggers import CSVLogger

    callback = PerfkitCallback(
        name="tiny", out_dir=tmp_path / "runs", device="cpu", probes=None, figures_every_s=1e-9
    )
    trainer = quiet_trainer([callback], max_epochs=1, logger=CSVLogger(tmp_path / "csv"))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(Tiny(), DataLoader(Slow(12), batch_size=4))  # 3 batches, no validation
    (metrics_csv,) = (tmp_path / "csv").rglob("metrics.csv")
    rows = [r for r in csv.DictReader(metrics_csv.open()) if r.get("perfkit/train_io_fraction")]
    assert len(rows) == 3 + 1  # after each of the 3 batches (1e-9 s apart), and the epoch's end
    with pytest.raises(ValueError, match="Expected argument `figures_every_s`"):
        PerfkitCallback(name="tiny", out_dir=tmp_path, figures_every_s=-1)


def test_mfus_dtype_is_the_trainers_precision(tmp_path):
    """flops_per_sample given to the callback: MFU's peak is taken for the Trainer's precision
    (the config's, as for a Run), not fp32 - unless the user's config names one."""
    runs = []
    for config in ({}, {"precision": "fp16"}):
        callback = PerfkitCallback(
            name="tiny", out_dir=tmp_path, config=config, device="cpu", probes=None,
            flops_per_sample=1e6, peak_flops=1e12,
        )  # fmt: skip
        trainer = quiet_trainer([callback], max_epochs=1, precision="bf16-mixed")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            trainer.fit(Tiny(), DataLoader(Slow(8), batch_size=4))
        (run,) = callback.runs
        runs.append(json.loads((run.run_dir / "meta.json").read_text()))
    trainers, users = runs
    assert trainers["config"]["precision"] == trainers["flops"]["dtype"] == "bf16"
    assert users["config"]["precision"] == users["flops"]["dtype"] == "fp16"


class TokenBatches(Dataset):
    """Right-padded sequences of 1 to 8 tokens (seeded lengths) as dicts, as a collator makes."""

    def __init__(self, n: int) -> None:
        self.lengths = torch.randint(1, 9, (n,), generator=torch.Generator().manual_seed(n))

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        mask = (torch.arange(8) < self.lengths[i]).long()
        return {"input_ids": torch.zeros(8, dtype=torch.long), "attention_mask": mask}


class TinyLM(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(4, 2)

    def training_step(self, batch, batch_idx):
        return self.embed(batch["input_ids"]).float().mean()

    def validation_step(self, batch, batch_idx):
        self.embed(batch["input_ids"])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_tokens_of_every_micro_batch(tmp_path):
    """Optimizer steps of 2 micro-batches of 3 sequences: a step's tokens are both micro-batches'
    mask sums, the sums the dataset's lengths give."""
    train, val = TokenBatches(12), TokenBatches(5)
    callback = PerfkitCallback(name="lm", out_dir=tmp_path, device="cpu", probes=None)
    trainer = quiet_trainer([callback], max_epochs=1, accumulate_grad_batches=2)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(TinyLM(), DataLoader(train, batch_size=3), DataLoader(val, batch_size=3))
    s = callback.summary
    assert s is not None and s["train_steps"] == 2  # 4 micro-batches of 3, 2 per step
    assert s["train_tokens"] == int(train.lengths.sum())
    assert s["val_tokens"] == int(val.lengths.sum())
    assert s["train_tokens_from"] == s["val_tokens_from"] == "attention_mask"
