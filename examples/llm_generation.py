"""LLM generation timed as a serving benchmark: batched Hugging Face ``generate`` over synthetic
prompts of varied lengths, each batch row one request (perfkit.generation.Streamer), then the
serving table - TTFT / TPOT / ITL / E2EL mean, p50, p90, p99, requests/s, output and total
tokens/s, goodput under MLPerf's llama2-70b server SLOs (TTFT <= 2 s, TPOT <= 0.2 s).

The model is a small Llama built from a config with random weights (no download); ``--model
PATH`` loads a real checkpoint (a folder ``from_pretrained`` reads) instead.

    python -m examples.llm_generation --out-dir runs
    python -m examples.llm_generation --model /models/llama-2-7b --device cuda --batch-size 8 \\
        --requests 256 --max-new-tokens 256 --prompt-len 128 1024
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import perfkit


def tiny_llama(layers: int, hidden: int) -> Any:
    """A random-init Llama from a config: vocabulary 512, ``layers`` layers of width
    ``hidden``, grouped-query attention (4 heads, 2 key-value heads)."""
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=512, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=2048, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config)


def prompts(n: int, shortest: int, longest: int, vocab: int, seed: int) -> list[list[int]]:
    """``n`` synthetic prompts of lengths uniform in [shortest, longest], token ids from 3 up
    (0-2 are pad, bos and eos)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(shortest, longest + 1, (n,), generator=generator).tolist()
    return [torch.randint(3, vocab, (length,), generator=generator).tolist() for length in lengths]


def left_padded(batch: list[list[int]], pad: int) -> tuple[Any, Any]:
    """(input_ids, attention_mask) of ``batch``, left-padded (decoder-only generation)."""
    import torch

    width = max(len(p) for p in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, prompt in enumerate(batch):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    return ids, mask


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out-dir", default="runs", help="perfkit run directories")
    p.add_argument("--model", help="a Hugging Face checkpoint folder; default: a tiny random Llama")
    p.add_argument("--device", default="cpu")
    p.add_argument("--requests", type=int, default=16, help="prompts to generate for")
    p.add_argument("--batch-size", type=int, default=4, help="requests per generate call")
    p.add_argument("--prompt-len", type=int, nargs=2, default=(8, 64), metavar=("MIN", "MAX"))
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--layers", type=int, default=2, help="tiny model's layers")
    p.add_argument("--hidden", type=int, default=128, help="tiny model's width")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import torch
    import transformers

    from perfkit.analysis import report_text

    torch.manual_seed(args.seed)
    if args.model:
        model = transformers.AutoModelForCausalLM.from_pretrained(args.model)
    else:
        model = tiny_llama(args.layers, args.hidden)
    model = model.to(args.device).eval()
    config = model.generation_config
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    eos = config.eos_token_id
    shortest, longest = args.prompt_len
    work = prompts(args.requests, shortest, longest, model.config.vocab_size, args.seed)
    settings = {"model": args.model or "tiny-llama", "batch_size": args.batch_size}
    with perfkit.Run("llm-generation", out_dir=args.out_dir, config=settings) as run:
        streamer = perfkit.generation.Streamer(run, eos_token_id=eos)
        batches = [work[i : i + args.batch_size] for i in range(0, len(work), args.batch_size)]
        with run.phase("infer") as infer, torch.inference_mode():
            for batch in infer.iterate(batches, samples=len):
                ids, mask = left_padded(batch, pad)
                streamer.set_prompt_tokens([len(prompt) for prompt in batch])
                model.generate(
                    input_ids=ids.to(args.device),
                    attention_mask=mask.to(args.device),
                    max_new_tokens=args.max_new_tokens,
                    do_sample=True,
                    pad_token_id=pad,
                    streamer=streamer,
                )
    assert run.run_dir is not None
    print(report_text(run.run_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
