"""A Lightning Trainer recorded by perfkit's callback: a small CNN on random images, validated
twice an epoch (``val_check_interval=0.5``), then tested and asked for predictions with the
same callback - four runs (fit, validate, test, predict), reported at the end.

    python -m examples.lightning_trainer --out-dir runs
    torchrun --nproc_per_node=2 -m examples.lightning_trainer --out-dir runs --devices 2
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out-dir", default="runs", help="perfkit run directories")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--samples", type=int, default=128, help="training samples")
    p.add_argument("--devices", type=int, default=1, help="processes (under torchrun: its count)")
    args = p.parse_args(argv)

    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from perfkit.analysis import report_text
    from perfkit.integrations.lightning import PerfkitCallback

    class SmallCNN(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10),
            )  # fmt: skip

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.net(x), y)
            self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("val_acc", (self.net(x).argmax(1) == y).float().mean(), sync_dist=True)

        def test_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("test_acc", (self.net(x).argmax(1) == y).float().mean(), sync_dist=True)

        def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return self.net(batch[0]).argmax(1)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.05)

    def loader(n: int, seed: int) -> DataLoader:
        generator = torch.Generator().manual_seed(seed)
        images = torch.randn(n, 3, 32, 32, generator=generator)
        labels = torch.randint(0, 10, (n,), generator=generator)
        return DataLoader(TensorDataset(images, labels), batch_size=16)

    pl.seed_everything(0, verbose=False)
    callback = PerfkitCallback(name="cnn-small", out_dir=args.out_dir)
    trainer = pl.Trainer(
        max_epochs=args.epochs, accelerator="cpu", devices=args.devices, val_check_interval=0.5,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[callback],
    )  # fmt: skip
    model = SmallCNN()
    trainer.fit(model, loader(args.samples, 1), loader(32, 2))  # run "cnn-small"
    trainer.validate(model, loader(32, 2))  # run "cnn-small-validate"
    trainer.test(model, loader(32, 3))  # run "cnn-small-test": a val phase, test_acc
    trainer.predict(model, loader(32, 4))  # run "cnn-small-predict": an infer phase
    if trainer.global_rank == 0:
        print(report_text([run.run_dir for run in callback.runs if run.run_dir is not None]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
