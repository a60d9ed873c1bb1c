"""Names of the batch columns and meta keys that pass between the trainer and its workers.

One place, so a worker written by a user (or a new stage) spells them like the trainer does.
Tensor columns are ``(B, ...)``; ``P`` is the prompt width, ``R`` the response width
(``data.max_response_len``), ``T = P + R``.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ACC",
    "ADVANTAGES",
    "ANSWER",
    "ATTENTION_MASK",
    "DATA_SOURCE",
    "ENDS_WITH_EOS",
    "ENTROPY",
    "GREEDY",
    "INPUT_IDS",
    "METADATA",
    "OLD_LOG_PROBS",
    "PROMPT",
    "PROMPT_IDS",
    "PROMPT_MASK",
    "REF_LOG_PROBS",
    "RESPONSES",
    "RESPONSE_MASK",
    "RESPONSE_TEXT",
    "RETURNS",
    "RETURN_COLUMNS",
    "ROLLOUT_LOG_PROBS",
    "ROLLOUT_SEED",
    "SCORE",
    "SEED",
    "TEMPERATURE",
    "TOKEN_LEVEL_REWARDS",
    "TOKEN_LEVEL_SCORES",
    "UID",
    "VALUES",
]

# --- prompts (trainer -> rollout)
PROMPT_IDS: Final = "prompt_ids"  # (B, P) long, left-padded
PROMPT_MASK: Final = "prompt_mask"  # (B, P) long
ROLLOUT_SEED: Final = "rollout_seed"  # (B,) long, one sampling seed per row

# --- rollout (rollout -> trainer)
INPUT_IDS: Final = "input_ids"  # (B, T) prompt then response
ATTENTION_MASK: Final = "attention_mask"  # (B, T)
RESPONSES: Final = "responses"  # (B, R), pad after EOS
RESPONSE_MASK: Final = "response_mask"  # (B, R), 1 up to and including EOS
ROLLOUT_LOG_PROBS: Final = "rollout_log_probs"  # (B, R) log-probs the rollout sampled with

# --- scoring and log-probs (workers -> trainer)
TOKEN_LEVEL_SCORES: Final = "token_level_scores"  # (B, R) score on the last response token
SCORE: Final = "score"  # (B,) sequence score
ACC: Final = "acc"  # (B,) correctness in [0, 1]
ENDS_WITH_EOS: Final = "ends_with_eos"  # (B,) bool: the last response position holds EOS
OLD_LOG_PROBS: Final = "old_log_probs"  # (B, R) under the policy before the update
REF_LOG_PROBS: Final = "ref_log_probs"  # (B, R) under the frozen reference
ENTROPY: Final = "entropy"  # (B, R)
VALUES: Final = "values"  # (B, R) critic values

# --- advantages (trainer -> update)
TOKEN_LEVEL_REWARDS: Final = "token_level_rewards"  # (B, R) scores after the KL penalty
ADVANTAGES: Final = "advantages"  # (B, R)
RETURNS: Final = "returns"  # (B, R)

# --- non-tensor columns (object arrays)
UID: Final = "uid"  # prompt id shared by the rollout.n samples of one prompt
PROMPT: Final = "prompt"  # prompt text (for chat prompts: the last user message)
ANSWER: Final = "answer"  # reference answer
DATA_SOURCE: Final = "data_source"
METADATA: Final = "metadata"  # per-example mapping (verl's extra_info), passed to the scorer
RESPONSE_TEXT: Final = "response_text"  # decoded response, added by the reward worker

# --- meta keys
TEMPERATURE: Final = "temperature"
GREEDY: Final = "greedy"
SEED: Final = "seed"  # shuffling seed of an update
RETURN_COLUMNS: Final = "return_columns"  # rollout columns the reward worker hands back
