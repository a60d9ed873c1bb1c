"""Each reward is checked where it is produced: a reward function that raises, or returns
something that is not a finite real number of sane size, is reported naming the sample.

Any real number is accepted (``int``, ``float``, ``bool``, numpy scalars). A string such as
``"1"`` is refused (not converted), as are NaN, infinities and magnitudes above
:data:`MAX_ABS_REWARD` (a reward of 1e30 is a bug, and would swamp every other sample's
advantage).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

from ppo.tasks import RewardFn, TaskExample

__all__ = ["MAX_ABS_REWARD", "RewardError", "check_reward_count", "checked_reward"]

#: The largest reward magnitude accepted.
MAX_ABS_REWARD = 1e6


class RewardError(ValueError):
    """A reward function failed or returned an unusable value; names the sample and prompt."""


def _where(index: int, example: TaskExample, response: str) -> str:
    return f"sample {index} (prompt {example.prompt!r}, response {response!r})"


def checked_reward(fn: RewardFn, response: str, example: TaskExample, index: int) -> float:
    """``fn(response, example)`` as a float, or :class:`RewardError` naming sample ``index``."""
    try:
        value: object = fn(response, example)
    except Exception as exc:
        name = getattr(fn, "__qualname__", repr(fn))
        raise RewardError(
            f"the reward function {name} raised {type(exc).__name__}: {exc} on "
            f"{_where(index, example, response)}; fix the function so it returns a float for "
            "every response"
        ) from exc
    if not isinstance(value, numbers.Real):
        raise RewardError(
            f"the reward function returned {value!r} ({type(value).__name__}) for "
            f"{_where(index, example, response)}; it must return a float"
        )
    reward = float(value)
    if not math.isfinite(reward) or abs(reward) > MAX_ABS_REWARD:
        raise RewardError(
            f"the reward function returned {reward!r} for {_where(index, example, response)}; "
            f"rewards must be finite and within +/-{MAX_ABS_REWARD:g}"
        )
    return reward


def check_reward_count(rewards: Sequence[object], examples: Sequence[TaskExample]) -> None:
    """For batched reward functions: one reward per sample, else :class:`RewardError`."""
    if len(rewards) != len(examples):
        first = examples[0].prompt if examples else None
        raise RewardError(
            f"the reward function returned {len(rewards)} reward(s) for {len(examples)} "
            f"sample(s) (first prompt {first!r}); it must return exactly one per sample"
        )
