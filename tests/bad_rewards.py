"""Reward functions with the bugs users make, importable by ``data.reward_fn`` (CLI tests)."""

from __future__ import annotations

from ppo.tasks import TaskExample


def nan_reward(response: str, example: TaskExample) -> float:
    return float("nan")


def string_reward(response: str, example: TaskExample) -> str:
    return "1"


def raising_reward(response: str, example: TaskExample) -> float:
    raise RuntimeError("reward server unreachable")
