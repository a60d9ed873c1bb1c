"""How learnable is a built-in task: accuracy after N supervised warm-up steps, then RL.

Picks the trainer's warm-up defaults: we want warm-up alone to leave greedy accuracy around
30-50 % so RL has 20+ points to add. For each seed and each warm-up length N, a fresh model
(seeded) is warmed up for N steps from scratch (one ``supervised_warmup`` call, as the trainer
would do) and evaluated greedily and by sampling (temperature 1) on a held-out set.

With ``--rl-steps K`` it then checks learnability by RL from the ``--rl-from`` warm-up: a
minimal on-policy GRPO loop (group-normalised advantages, one gradient step per batch, so the
PPO ratio is 1 and clipping is moot) written here with the ``ppo.lm`` and ``ppo.rollout``
primitives only. This is a sanity check of the task and model, not the trainer.

Single-threaded (``torch.set_num_threads(1)``) so numbers are comparable across machines::

    .venv/bin/python benchmarks/bench_task_learnability.py
    .venv/bin/python benchmarks/bench_task_learnability.py --rl-steps 150 --seeds 0,1
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
from transformers import PreTrainedModel

from ppo.config import load_config
from ppo.lm import build_policy, sequence_log_probs
from ppo.rollout import HFRolloutEngine, PromptBatch, SamplingParams
from ppo.tasks import Task, TaskExample, get_task, make_dataset
from ppo.tokenizer import load_tokenizer
from ppo.warmup import encode_prompts, evaluate_accuracy, supervised_warmup

TOK = load_tokenizer(None)

MAX_PROMPT_LEN = 24
MAX_RESPONSE_LEN = 8


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _model(args: argparse.Namespace, seed: int) -> PreTrainedModel:
    section = load_config(
        None,
        [
            f"model.config.hidden_size={args.d_model}",
            f"model.config.num_hidden_layers={args.n_layers}",
        ],
    ).model
    return build_policy(
        section,
        vocab_size=TOK.vocab_size,
        special_ids={"eos_token_id": TOK.eos_id, "pad_token_id": TOK.pad_id},
        max_positions=MAX_PROMPT_LEN + MAX_RESPONSE_LEN,
        seed=seed,
        device=torch.device("cpu"),
    )


def _engine(model: PreTrainedModel) -> HFRolloutEngine:
    return HFRolloutEngine(model, eos_id=TOK.eos_id, pad_id=TOK.pad_id, shares_weights=True)


def _warm_model(
    task_train: list[TaskExample], args: argparse.Namespace, seed: int, steps: int
) -> tuple[PreTrainedModel, float, float]:
    model = _model(args, seed)
    t0 = time.perf_counter()
    losses = supervised_warmup(
        model,
        TOK,
        task_train,
        steps=steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=seed,
        max_prompt_len=MAX_PROMPT_LEN,
        max_response_len=MAX_RESPONSE_LEN,
    )
    seconds = time.perf_counter() - t0
    last = statistics.fmean(losses[-10:]) if losses else float("nan")
    return model, last, seconds


def _grpo(
    model: PreTrainedModel,
    task: Task,
    eval_set: list[TaskExample],
    args: argparse.Namespace,
    seed: int,
) -> None:
    tok = TOK
    rng = random.Random(seed + 1000)
    opt = torch.optim.AdamW(model.parameters(), lr=args.rl_lr, weight_decay=0.0)
    n, g = args.rl_prompts, args.rl_group
    t0 = time.perf_counter()
    for step in range(1, args.rl_steps + 1):
        examples = [task.sample(rng) for _ in range(n)]
        repeated = [ex for ex in examples for _ in range(g)]  # interleaved: aabbcc
        ids, mask = encode_prompts(tok, [ex.prompt for ex in repeated], MAX_PROMPT_LEN)
        seeds = torch.arange(len(repeated)) + (seed + 2000) * 100_003 + step * len(repeated)
        out = _engine(model).generate(
            PromptBatch(ids=ids, mask=mask, seeds=seeds),
            SamplingParams(max_new_tokens=MAX_RESPONSE_LEN),
        )
        scores = torch.tensor(
            [
                task.score(tok.decode(row), ex)
                for row, ex in zip(out.responses.tolist(), repeated, strict=True)
            ]
        ).view(n, g)
        adv = (scores - scores.mean(1, keepdim=True)) / (scores.std(1, keepdim=True) + 1e-6)
        logp, _ = sequence_log_probs(model, out.sequences, out.attention_mask, MAX_RESPONSE_LEN)
        m = out.response_mask.float()
        loss = -(adv.view(-1, 1) * logp * m).sum() / m.sum()
        opt.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % args.rl_eval_every == 0 or step == args.rl_steps:
            acc = evaluate_accuracy(_engine(model), tok, eval_set, max_new_tokens=MAX_RESPONSE_LEN)
            print(
                f"  rl step {step:4d}  batch reward {scores.mean():.2f}  greedy acc {acc:.2f}  "
                f"rl seconds {time.perf_counter() - t0:.1f}",
                flush=True,
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="addition")
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2])
    p.add_argument("--steps", type=_ints, default=[0, 25, 50, 75, 100, 150, 200])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-eval", type=int, default=400)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--rl-steps", type=int, default=0)
    p.add_argument("--rl-from", type=int, default=75, help="warm-up steps before RL")
    p.add_argument("--rl-prompts", type=int, default=32)
    p.add_argument("--rl-group", type=int, default=8)
    p.add_argument("--rl-lr", type=float, default=3e-4)
    p.add_argument("--rl-eval-every", type=int, default=50)
    args = p.parse_args()

    torch.set_num_threads(1)
    task = get_task(args.task)
    train = make_dataset(task, args.n_train, seed=0)
    eval_set = make_dataset(task, args.n_eval, seed=1_000_003)
    tok = TOK
    n_params = sum(p.numel() for p in _model(args, 0).parameters())
    print(
        f"task={task!r} params={n_params:,} batch={args.batch_size} lr={args.lr} "
        f"n_train={args.n_train} n_eval={args.n_eval} threads={torch.get_num_threads()}"
    )
    # Pay torch's one-time optimizer import (torch._dynamo, ~2 s) outside the timings.
    _warm_model(train, args, seed=0, steps=1)

    print(f"{'steps':>5} {'greedy':>13} {'sampled':>13} {'loss':>6} {'seconds':>7}")
    for steps in args.steps:
        greedy, sampled, losses, secs = [], [], [], []
        for seed in args.seeds:
            model, loss, seconds = _warm_model(train, args, seed, steps)
            greedy.append(
                evaluate_accuracy(_engine(model), tok, eval_set, max_new_tokens=MAX_RESPONSE_LEN)
            )
            sampled.append(
                evaluate_accuracy(
                    _engine(model),
                    tok,
                    eval_set,
                    max_new_tokens=MAX_RESPONSE_LEN,
                    greedy=False,
                    seed=seed,
                )
            )
            losses.append(loss)
            secs.append(seconds)
        print(
            f"{steps:5d} {statistics.fmean(greedy):5.2f} [{min(greedy):.2f}-{max(greedy):.2f}] "
            f"{statistics.fmean(sampled):5.2f} [{min(sampled):.2f}-{max(sampled):.2f}] "
            f"{statistics.fmean(losses) if steps else float('nan'):6.3f} "
            f"{statistics.fmean(secs):7.2f}",
            flush=True,
        )

    if args.rl_steps:
        for seed in args.seeds:
            model, _, seconds = _warm_model(train, args, seed, args.rl_from)
            acc = evaluate_accuracy(_engine(model), tok, eval_set, max_new_tokens=MAX_RESPONSE_LEN)
            print(
                f"seed {seed}: warm-up {args.rl_from} steps ({seconds:.1f} s) greedy acc {acc:.2f}"
            )
            _grpo(model, task, eval_set, args, seed)


if __name__ == "__main__":
    main()
