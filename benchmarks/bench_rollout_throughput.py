"""Generation and training tokens/s of the trainer's model path (HF model + rollout engine).

Builds a randomly initialised Qwen2-architecture model from a config (no download) and
measures, with the trainer's own pieces:

* **generation**: ``HFRolloutEngine.generate`` (KV cache, sampling with per-row seeds) on a
  batch of prompts; tokens/s counts generated tokens;
* **training**: one forward + backward of ``sequence_log_probs`` and an AdamW step on
  prompt + response sequences; tokens/s counts every token of the batch.

Each is reported as a ratio against a baseline measured in the same run on the same model:
plain ``model.generate(do_sample=True)`` (transformers' own sampling, one shared RNG) for
generation, and a plain forward + ``cross_entropy`` backward + AdamW step for training. The
ratio is what the trainer's path (per-row seeds, full-vocabulary log-probs, entropy-ready
log-softmax) costs over the library's own.

Sizes: ``tiny`` (the CPU default, seconds) and ``0.5b`` (Qwen2.5-0.5B's shape: 24 layers, 896
wide, 151,936-token vocabulary; for a GPU machine, ``--device cuda --dtype bfloat16``)::

    .venv/bin/python benchmarks/bench_rollout_throughput.py
    .venv/bin/python benchmarks/bench_rollout_throughput.py --size 0.5b --device cuda \\
        --dtype bfloat16 --batch 64 --prompt-len 256 --new-tokens 256

Prints medians over ``--repeats`` runs (after one warm-up run) and writes
``runs/bench/rollout_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from ppo.lm import autocast, sequence_log_probs
from ppo.rollout import HFRolloutEngine, PromptBatch, SamplingParams

REPO = Path(__file__).resolve().parents[1]

SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "vocab_size": 1024,
        "hidden_size": 128,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    },
    "0.5b": {
        "vocab_size": 151_936,
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
    },
}


def build(size: str, device: torch.device, max_positions: int) -> PreTrainedModel:
    cfg = AutoConfig.for_model(
        "qwen2",
        **SIZES[size],
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        eos_token_id=0,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model: PreTrainedModel = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    torch.nn.Module.to(model, device)
    model.eval()
    return model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Any, device: torch.device, repeats: int) -> list[float]:
    fn()  # warm-up (kernels, allocator)
    out = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return out


def parser() -> argparse.ArgumentParser:
    """The command line (the suite reuses its defaults)."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--size", choices=sorted(SIZES), default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    return p


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Time both paths (and their baselines) and return the figures."""
    device = torch.device(args.device)
    b, plen, r = args.batch, args.prompt_len, args.new_tokens
    model = build(args.size, device, plen + r)
    vocab = SIZES[args.size]["vocab_size"]
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, vocab, (b, plen), generator=gen)
    prompts = PromptBatch(ids=ids, mask=torch.ones_like(ids), seeds=torch.arange(b))
    # EOS is an id outside the vocabulary, so it is never sampled: every row generates all r
    # tokens (a fixed amount of work per run).
    engine = HFRolloutEngine(model, eos_id=vocab, pad_id=0, shares_weights=True)
    params = SamplingParams(max_new_tokens=r, temperature=1.0)

    def generate() -> None:
        with autocast(device, args.dtype):
            engine.generate(prompts, params)

    seqs = torch.randint(1, vocab, (b, plen + r), generator=gen).to(device)
    mask = torch.ones_like(seqs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def generate_raw() -> None:
        with autocast(device, args.dtype), torch.no_grad():
            model.generate(  # type: ignore[operator]  # generate is untyped
                input_ids=prompts.ids.to(device),
                attention_mask=prompts.mask.to(device),
                max_new_tokens=r,
                min_new_tokens=r,
                do_sample=True,
                pad_token_id=0,
            )

    def train() -> None:
        model.train()
        with autocast(device, args.dtype):
            logp, _ = sequence_log_probs(model, seqs, mask, r)
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(-logp.mean())
        optimizer.step()
        model.eval()

    def train_raw() -> None:
        model.train()
        with autocast(device, args.dtype):
            logits = model(input_ids=seqs, attention_mask=mask).logits[:, -r - 1 : -1]
            loss = torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, vocab), seqs[:, -r:].reshape(-1)
            )
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        optimizer.step()
        model.eval()

    gen_s = timed(generate, device, args.repeats)
    gen_raw_s = timed(generate_raw, device, args.repeats)
    train_s = timed(train, device, args.repeats)
    train_raw_s = timed(train_raw, device, args.repeats)
    params_n = sum(t.numel() for t in model.parameters())
    result: dict[str, Any] = {
        "size": args.size,
        "parameters": params_n,
        "device": str(device),
        "dtype": args.dtype,
        "batch": b,
        "prompt_len": plen,
        "new_tokens": r,
        "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
        "generation_s_median": statistics.median(gen_s),
        "generation_tokens_per_s": b * r / statistics.median(gen_s),
        "training_s_median": statistics.median(train_s),
        "training_tokens_per_s": b * (plen + r) / statistics.median(train_s),
        "generation_raw_s_median": statistics.median(gen_raw_s),
        "training_raw_s_median": statistics.median(train_raw_s),
        "generation_vs_raw_generate": statistics.median(gen_s) / statistics.median(gen_raw_s),
        "training_vs_raw_step": statistics.median(train_s) / statistics.median(train_raw_s),
        "generation_s": gen_s,
        "generation_raw_s": gen_raw_s,
        "training_s": train_s,
        "training_raw_s": train_raw_s,
    }
    return result


def main() -> int:
    args = parser().parse_args()
    result = measure(args)
    b, plen, r = args.batch, args.prompt_len, args.new_tokens
    gen_s, gen_raw_s = result["generation_s"], result["generation_raw_s"]
    train_s, train_raw_s = result["training_s"], result["training_raw_s"]
    params_n, device = result["parameters"], result["device"]
    print(
        f"{args.size} ({params_n:,} params, {device}, {args.dtype}), batch {b}, prompt {plen}, "
        f"response {r}: generation {result['generation_tokens_per_s']:,.0f} tok/s "
        f"[{min(gen_s):.3f}-{max(gen_s):.3f} s], training "
        f"{result['training_tokens_per_s']:,.0f} tok/s [{min(train_s):.3f}-{max(train_s):.3f} s]"
    )
    print(
        f"against the library's own path, same run: generation "
        f"{result['generation_vs_raw_generate']:.2f}x plain generate(do_sample=True) "
        f"({statistics.median(gen_raw_s):.3f} s), training "
        f"{result['training_vs_raw_step']:.2f}x a plain cross-entropy step "
        f"({statistics.median(train_raw_s):.3f} s)"
    )
    out = REPO / "runs" / "bench" / "rollout_throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
