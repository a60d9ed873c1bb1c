"""Prompt encoding, a short supervised warm-up, and greedy/sampled accuracy.

RL from a random policy never sees a reward on these tasks, so the trainer can first teach the
output format (and some of the task) by teacher forcing on ``prompt + answer + EOS``, with the
loss on the answer and EOS only. The batch layout is the one the RL loop uses (see
:mod:`ppo.lm`): a left-padded prompt block followed by a right-padded response block.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ppo.lm import LanguageModel, sequence_log_probs
from ppo.rollout import HFRolloutEngine, PromptBatch, SamplingParams
from ppo.tasks import RewardFn, TaskExample, exact_match_score
from ppo.tokenizer import Prompt, Tokenizer

__all__ = [
    "encode_examples",
    "encode_prompts",
    "evaluate_accuracy",
    "example_prompt",
    "supervised_warmup",
]


def example_prompt(example: TaskExample, prompt_format: str) -> Prompt:
    """What the model is conditioned on: the raw ``prompt``, or chat messages."""
    return example.chat() if prompt_format == "chat" else example.prompt


def encode_prompts(
    tokenizer: Tokenizer,
    prompts: Sequence[Prompt],
    max_len: int,
    *,
    encode: Callable[[Prompt], list[int]] | None = None,
) -> tuple[Tensor, Tensor]:
    """Encode ``prompts`` (text or chat messages) as one LEFT-padded batch.

    Each row is ``tokenizer.encode_prompt(prompt)`` (special tokens and chat template as the
    tokenizer puts them), padded on the left with ``pad_id`` to the longest row. ``encode``
    replaces ``tokenizer.encode_prompt`` and must return the same ids (the trainer passes a
    :class:`ppo.tokenizer.PromptCache`).

    Returns:
        ``(ids, mask)``, both ``(B, L)`` long with ``L <= max_len``; ``mask`` is 1 on real tokens.

    Raises:
        ValueError: no prompts, or a prompt that encodes to more than ``max_len`` tokens
            (special tokens and template included: the message says so and names
            ``data.max_prompt_len``) or to nothing.
    """
    if not prompts:
        raise ValueError("encode_prompts needs at least one prompt, got none")
    encode_one = encode if encode is not None else tokenizer.encode_prompt
    rows: list[list[int]] = []
    for i, prompt in enumerate(prompts):
        ids = encode_one(prompt)
        if len(ids) > max_len:
            raise ValueError(
                f"prompt {i} {prompt!r} is {len(ids)} tokens (special tokens and chat template "
                f"included), longer than data.max_prompt_len={max_len}; shorten it or raise "
                "data.max_prompt_len"
            )
        if not ids:
            raise ValueError(f"prompt {i} {prompt!r} encodes to no tokens")
        rows.append(ids)
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_id
    # One tensor from padded lists (not a small tensor and two slice writes per row).
    ids_t = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long)
    mask_t = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
    return ids_t, mask_t


def encode_examples(
    tokenizer: Tokenizer,
    examples: Sequence[TaskExample],
    *,
    max_prompt_len: int,
    max_response_len: int,
    prompt_format: str = "raw",
) -> tuple[Tensor, Tensor, int]:
    """Teacher-forcing batch: the left-padded prompt, then right-padded ``answer + EOS``.

    Returns:
        ``(ids, mask, R)``: ``(B, P + R)`` long ids and mask, where the last ``R`` columns are
        the response block (``R`` = longest ``answer + EOS``).

    Raises:
        ValueError: a prompt longer than ``max_prompt_len`` (specials included) or an answer
            longer than ``max_response_len`` (EOS included); the message names the example.
    """
    prompt_ids, prompt_mask = encode_prompts(
        tokenizer, [example_prompt(ex, prompt_format) for ex in examples], max_prompt_len
    )
    responses: list[list[int]] = []
    for i, ex in enumerate(examples):
        r = [*tokenizer.encode_text(ex.answer), tokenizer.eos_id]
        if len(r) > max_response_len:
            raise ValueError(
                f"example {i} answer {ex.answer!r} is {len(r)} tokens with EOS, longer than "
                f"max_response_len={max_response_len}"
            )
        responses.append(r)
    width = max(len(r) for r in responses)
    resp_ids = torch.full((len(responses), width), tokenizer.pad_id, dtype=torch.long)
    resp_mask = torch.zeros(len(responses), width, dtype=torch.long)
    for i, r in enumerate(responses):
        resp_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        resp_mask[i, : len(r)] = 1
    return (
        torch.cat((prompt_ids, resp_ids), dim=1),
        torch.cat((prompt_mask, resp_mask), dim=1),
        width,
    )


def supervised_warmup(
    model: nn.Module,
    tokenizer: Tokenizer,
    examples: Sequence[TaskExample],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    max_prompt_len: int,
    max_response_len: int,
    weight_decay: float = 0.0,
    grad_clip: float = 1.0,
    prompt_format: str = "raw",
) -> list[float]:
    """Teacher-force ``model`` on ``examples`` for ``steps`` AdamW steps; return the losses.

    Each step takes the next ``batch_size`` examples of a shuffled pass over ``examples``
    (reshuffled every pass; the order comes from ``seed`` only) and minimises the mean negative
    log-likelihood of the answer tokens and EOS (prompt tokens carry no loss). Gradients are
    clipped to ``grad_clip`` in norm. The model is in train mode during the run and its
    previous mode is restored afterwards.

    Returns:
        The loss of each step (``len == steps``).

    Raises:
        ValueError: no examples, non-positive ``steps``/``batch_size``/``lr``, or an example
            that does not fit the length limits.
    """
    if not examples:
        raise ValueError("supervised_warmup needs at least one example, got none")
    if steps < 0 or batch_size < 1:
        raise ValueError(f"need steps >= 0 and batch_size >= 1, got {steps!r} and {batch_size!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    ids, mask, resp_len = encode_examples(
        tokenizer,
        examples,
        max_prompt_len=max_prompt_len,
        max_response_len=max_response_len,
        prompt_format=prompt_format,
    )
    lm: LanguageModel = model
    loss_mask = mask[:, -resp_len:].float()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    rng = random.Random(seed)
    order: list[int] = []
    losses: list[float] = []
    was_training = model.training
    model.train(True)
    try:
        for _ in range(steps):
            while len(order) < batch_size:
                perm = list(range(len(examples)))
                rng.shuffle(perm)
                order.extend(perm)
            idx = torch.tensor(order[:batch_size])
            del order[:batch_size]
            log_probs, _ = sequence_log_probs(lm, ids[idx], mask[idx], resp_len)
            m = loss_mask[idx]
            loss = -(log_probs * m).sum() / m.sum()
            optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            losses.append(float(loss.detach()))
    finally:
        model.train(was_training)
    return losses


def evaluate_accuracy(
    engine: HFRolloutEngine,
    tokenizer: Tokenizer,
    examples: Sequence[TaskExample],
    *,
    max_new_tokens: int,
    greedy: bool = True,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 256,
    max_prompt_len: int | None = None,
    reward_fn: RewardFn | None = None,
    prompt_format: str = "raw",
) -> float:
    """Mean reward of the engine's responses on ``examples`` (exact-match accuracy by default).

    Generates greedily (or by sampling at ``temperature``, row ``i`` seeded with ``seed + i``),
    decodes each response up to EOS and scores it with ``reward_fn`` (default:
    :func:`~ppo.tasks.exact_match_score` against ``example.answer``).

    Raises:
        ValueError: no examples, or a prompt longer than ``max_prompt_len``.
    """
    if not examples:
        raise ValueError("evaluate_accuracy needs at least one example, got none")
    score: RewardFn = reward_fn or (lambda response, ex: exact_match_score(response, ex.answer))
    limit = max_prompt_len if max_prompt_len is not None else 1 << 30
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, greedy=greedy)
    total = 0.0
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        ids, mask = encode_prompts(
            tokenizer, [example_prompt(ex, prompt_format) for ex in chunk], limit
        )
        seeds = torch.arange(start, start + len(chunk)) + seed
        out = engine.generate(PromptBatch(ids=ids, mask=mask, seeds=seeds), params)
        for row, ex in zip(out.responses.tolist(), chunk, strict=True):
            total += float(score(tokenizer.decode(row), ex))
    return total / len(examples)
