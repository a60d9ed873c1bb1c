"""Each reward is validated where it is produced, naming the sample and its prompt."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import pytest

from ppo import PPOTrainer, RewardFn, TaskExample
from ppo.metrics import read_metrics
from ppo.rewards_check import RewardError, check_reward_count, checked_reward
from runtime.errors import RemoteMethodError
from runtime.testing import InProcessBackend
from tests.trainer_support import tiny_config

EXAMPLE = TaskExample(prompt="3+4=", answer="7", data_source="addition")


def _returning(value: object) -> RewardFn:
    """A reward function returning ``value`` whatever it is (typed as a RewardFn on purpose)."""

    def reward(response: str, example: TaskExample) -> object:
        return value

    return cast(RewardFn, reward)


def string_reward(response: str, example: TaskExample) -> str:
    """The bug from the issue: a reward returned as text (module level: it must pickle)."""
    return "1"


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("1", r"returned '1' \(str\).*must return a float"),
        (float("nan"), "returned nan.*finite"),
        (float("inf"), "returned inf.*finite"),
        (-float("inf"), "returned -inf.*finite"),
        (1e30, r"returned 1e\+30.*within \+/-1e\+06"),
        ([1.0, 0.0], r"returned \[1\.0, 0\.0\] \(list\)"),
        (None, r"returned None \(NoneType\)"),
    ],
)
def test_bad_reward_values_name_the_sample(value: object, match: str) -> None:
    with pytest.raises(RewardError, match=match) as info:
        checked_reward(_returning(value), "7", EXAMPLE, 5)
    assert "sample 5 (prompt '3+4=', response '7')" in str(info.value)


def test_a_raising_reward_function_names_the_sample() -> None:
    def broken(response: str, example: TaskExample) -> float:
        return float(response) / 0

    with pytest.raises(RewardError, match=r"broken raised ZeroDivisionError.*sample 2") as info:
        checked_reward(broken, "7", EXAMPLE, 2)
    assert isinstance(info.value.__cause__, ZeroDivisionError)


@pytest.mark.parametrize("value", [1, 0.5, True, np.float32(0.25), np.int64(-3), -1e6])
def test_real_numbers_are_accepted(value: float) -> None:
    assert checked_reward(_returning(value), "7", EXAMPLE, 0) == float(value)


def test_wrong_count_is_refused() -> None:
    with pytest.raises(RewardError, match=r"returned 1 reward\(s\) for 2 sample\(s\).*'3\+4='"):
        check_reward_count([1.0], [EXAMPLE, EXAMPLE])
    check_reward_count([1.0, 0.0], [EXAMPLE, EXAMPLE])


def test_training_stops_on_a_bad_reward_before_any_step(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    trainer = PPOTrainer(
        backend=InProcessBackend(), config=cfg, reward_fn=cast(RewardFn, string_reward)
    )
    with trainer, pytest.raises(RemoteMethodError) as info:
        trainer.fit()
    assert info.value.remote_type.endswith("RewardError")
    assert "sample 0 (prompt '" in info.value.remote_message
    assert "compute_score" in str(info.value.method)
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == []
