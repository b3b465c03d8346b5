"""Llama pretraining under the Hugging Face Trainer, recorded by perfkit's callback: FlagPerf's
metric set for LLM training (token/p/s, MFU, mem, e2e_time) and MFU in each convention.

By default a tiny Llama is built from a LlamaConfig (random weights, no download) and trained
on packed sequences of synthetic tokens; real sizes come by flags, a real checkpoint by
``--model`` (a Hugging Face model folder) and real tokens by ``--data`` (a 1-D array of token
ids: a .npy file, or a .bin of uint16 as nanoGPT's prepare scripts write). Tokens are counted
from the model's forward calls (their attention_mask: packed sequences have no padding); the
first ``--warmup-steps`` steps are left out of the figures, as FlagPerf drops its first step.

    python -m examples.llama_pretraining --out-dir runs
    python -m examples.llama_pretraining --layers 32 --hidden 4096 --heads 32 --kv-heads 8 \\
        --intermediate 11008 --vocab 32000 --seq-len 4096 --precision bf16   # llama2-7b-sized
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from perfkit.flops import TokenConvention

CONVENTIONS: tuple[TokenConvention, ...] = ("flagperf-6n", "palm", "megatron", "counted")


def flags(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out-dir", default="runs", help="perfkit run directories")
    p.add_argument("--model", type=Path, help="a Hugging Face causal LM folder (no download)")
    p.add_argument("--data", type=Path, help="token ids: a 1-D .npy, or a .bin of uint16")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps")
    p.add_argument("--warmup-steps", type=int, default=1, help="steps left out of the figures")
    p.add_argument("--batch-size", type=int, default=4, help="sequences per device and step")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per packed sequence")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--mfu-convention", choices=CONVENTIONS, default="flagperf-6n")
    p.add_argument("--peak-flops", type=float, help="FLOP/s; default: the table's, else measured")
    for name, default in (("layers", 2), ("hidden", 64), ("heads", 4), ("kv-heads", 2),
                          ("intermediate", 172), ("vocab", 1024)):  # fmt: skip
        p.add_argument(f"--{name}", type=int, default=default, help="the built model's size")
    return p.parse_args(argv)


def build_model(args: argparse.Namespace) -> Any:
    """The model: ``--model``'s checkpoint, else a random Llama of the flags' sizes."""
    import torch
    import transformers

    if args.model is not None:
        return transformers.AutoModelForCausalLM.from_pretrained(args.model, local_files_only=True)
    config = transformers.LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads, max_position_embeddings=args.seq_len,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config)


def token_stream(args: argparse.Namespace, vocab: int, length: int) -> Any:
    """``length`` token ids: ``--data``'s first ones, else random ids (seeded)."""
    import numpy as np
    import torch

    if args.data is None:
        return torch.randint(0, vocab, (length,), generator=torch.Generator().manual_seed(0))
    ids = np.load(args.data) if args.data.suffix == ".npy" else np.memmap(args.data, np.uint16)
    if len(ids) < length:
        raise SystemExit(f"--data {args.data} holds {len(ids)} tokens; {length} are needed")
    return torch.from_numpy(np.asarray(ids[:length], dtype=np.int64))


def packed(stream: Any, seq_len: int) -> list[dict[str, Any]]:
    """The stream cut into sequences of ``seq_len`` tokens, no padding (labels = inputs: the
    model shifts them)."""
    import torch

    blocks = stream[: len(stream) // seq_len * seq_len].view(-1, seq_len)
    mask = torch.ones(seq_len, dtype=torch.long)
    return [{"input_ids": b, "attention_mask": mask, "labels": b} for b in blocks]


def main(argv: Sequence[str] | None = None) -> int:
    args = flags(argv)
    import torch
    import transformers

    import perfkit.flops as pf
    from perfkit.integrations.transformers import PerfkitCallback

    model = build_model(args)
    sequences = args.steps * args.batch_size
    rows = packed(
        token_stream(args, model.config.vocab_size, sequences * args.seq_len), args.seq_len
    )
    shape = pf.transformer_shape(model, seq_len=args.seq_len)
    per_token: dict[str, float] = {
        c: pf.flops_per_token(shape, c) for c in CONVENTIONS if c != "counted"
    }
    one_step = transformers.default_data_collator(rows[: args.batch_size])
    per_token["counted"] = pf.counted_per_token(model.train(), one_step)

    callback = PerfkitCallback(
        name="llama-pretraining", out_dir=args.out_dir, warmup_steps={"train": args.warmup_steps},
        config={"seq_len": args.seq_len, "model": args.model and str(args.model)},
    )  # fmt: skip
    training = transformers.TrainingArguments(
        output_dir=f"{args.out_dir}/hf", per_device_train_batch_size=args.batch_size,
        max_steps=args.steps, learning_rate=3e-4, logging_strategy="no", save_strategy="no",
        report_to=[], use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
        bf16=args.precision == "bf16",
    )  # fmt: skip
    trainer = transformers.Trainer(
        model=model, args=training, train_dataset=rows, callbacks=[callback]
    )
    with callback.run as run:  # started here, so the work per token is known before training
        work = per_token["counted"] if args.mfu_convention == "counted" else shape
        run.set_token_flops(work, convention=args.mfu_convention, dtype=args.precision,
                            peak_flops=args.peak_flops)  # fmt: skip
        trainer.train()
    if training.process_index == 0:
        print_tables(run, per_token, shape)
    return 0


def print_tables(run: Any, per_token: dict[str, float], shape: Any) -> None:
    """The LLM report table, then MFU in every convention from the same token/p/s."""
    from perfkit.analysis import report_text

    s = run.summary()
    print(report_text([run.run_dir]))
    print(
        f"\ntokens: {s.get('train_tokens')} ({s.get('train_tokens_from')}); N = {shape.params} "
        f"parameters ({shape.matmul_params} without embedding tables), L = {shape.layers}, "
        f"H = {shape.heads}, Q = {shape.head_dim}, T = {shape.seq_len}"
    )
    tps, peak = s.get("tps_train_per_device"), s.get("peak_flops")
    print(f"\n| convention | FLOPs per token | MFU ({s.get('mfu_peak_source')} peak) |")
    print("|---|---|---|")
    for convention, flops in per_token.items():
        mfu = f"{100 * flops * tps / peak:.2f}%" if tps and peak else "/"
        print(f"| {convention} | {flops:.4g} | {mfu} |")


if __name__ == "__main__":
    raise SystemExit(main())
