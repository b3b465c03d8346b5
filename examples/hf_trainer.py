"""A Hugging Face Trainer recorded by perfkit's callback: a small BERT built from a config (no
download) trained on random token data, evaluated every ``--eval-steps`` steps, then evaluated
and asked for predictions through the callback - three runs, reported at the end.

    python -m examples.hf_trainer --out-dir runs
    torchrun --nproc_per_node=2 -m examples.hf_trainer --out-dir runs   # 1x2, gloo on the CPU
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out-dir", default="runs", help="perfkit run directories")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--samples", type=int, default=64, help="training samples")
    p.add_argument("--eval-steps", type=int, default=4)
    args = p.parse_args(argv)

    import torch
    import transformers

    from perfkit.analysis import report_text
    from perfkit.integrations.transformers import PerfkitCallback

    config = transformers.BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=32,
    )  # fmt: skip
    config.num_labels = 2
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)

    def rows(n: int) -> list[dict[str, torch.Tensor]]:
        ids, labels = torch.randint(0, 64, (n, 16)), torch.randint(0, 2, (n,))
        return [{"input_ids": ids[i], "labels": labels[i]} for i in range(n)]

    def accuracy(prediction: transformers.EvalPrediction) -> dict[str, float]:
        predicted = prediction.predictions.argmax(-1)  # type: ignore[union-attr]
        return {"accuracy": float((predicted == prediction.label_ids).mean())}

    callback = PerfkitCallback(name="bert-tiny", out_dir=args.out_dir)
    training = transformers.TrainingArguments(
        output_dir=f"{args.out_dir}/hf", per_device_train_batch_size=8,
        per_device_eval_batch_size=8, gradient_accumulation_steps=2,
        num_train_epochs=args.epochs, eval_strategy="steps", eval_steps=args.eval_steps,
        logging_steps=args.eval_steps, save_strategy="no", report_to=[], use_cpu=True,
        disable_tqdm=True, ddp_backend="gloo" if "WORLD_SIZE" in os.environ else None,
    )  # fmt: skip
    trainer = transformers.Trainer(
        model=model, args=training, train_dataset=rows(args.samples), eval_dataset=rows(32),
        compute_metrics=accuracy,
    )  # fmt: skip
    callback.attach(trainer)  # added as callbacks=[...] would; figures reach report_to too
    trainer.train()  # run "bert-tiny": train phases, a val phase per evaluation inside them
    callback.evaluate(trainer)  # run "bert-tiny-evaluate"
    callback.predict(trainer, rows(32))  # run "bert-tiny-predict"
    if training.process_index == 0:
        print(report_text([run.run_dir for run in callback.runs if run.run_dir is not None]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
