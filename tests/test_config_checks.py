"""Config validation added for issue 9: finite floats, overrides through a value, a string
passed as the overrides, group estimators with one response per prompt."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ppo import ConfigError, load_config


def test_an_override_through_a_value_names_it(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[data]\ntask = "addition"\n')
    with pytest.raises(ConfigError, match=r"data\.task is a value \('addition'\), not a table"):
        load_config(config, ["data.task.name=x"])


def test_a_string_of_overrides_is_refused() -> None:
    with pytest.raises(TypeError, match=r"wrap it in a list: \['actor\.lr=1'\]"):
        load_config(None, "actor.lr=1")


@pytest.mark.parametrize("field", ["actor.lr", "critic.lr", "algorithm.kl_target", "warmup.lr"])
@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_floats_must_be_finite(field: str, value: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{field} = ")):
        load_config(None, [f"{field}={value}"])


@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo", "rloo"])
def test_group_estimators_need_two_responses(estimator: str) -> None:
    with pytest.raises(ConfigError, match=r"rollout\.n = 1.*every advantage is 0"):
        load_config(None, [f"algorithm.adv_estimator={estimator!r}", "rollout.n=1"])
    load_config(None, ["algorithm.adv_estimator='reinforce_plus_plus'", "rollout.n=1"])


def test_a_process_must_reserve_something() -> None:
    with pytest.raises(ConfigError, match=r"resources\.cpus_per_process = 0"):
        load_config(None, ["resources.cpus_per_process=0"])
    cfg = load_config(None, ["resources.cpus_per_process=0", "resources.devices_per_process=1"])
    assert cfg.resources.cpus_per_process == 0


def test_shipped_example_configs_load_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # not the repository: the package's copy is what is found
    cfg = load_config("demo", ["trainer.total_steps=5"])
    assert cfg.resources.actor_ranks == 2
    assert cfg.trainer.resume == "auto"
    with pytest.raises(ConfigError, match=r"'nope' does not exist.*\['demo'\]"):
        load_config("nope")


def test_replace_takes_sections_or_mappings_of_fields() -> None:
    from ppo.config import ActorConfig

    base = load_config(None, ["trainer.total_steps=7"])
    cfg = base.replace(trainer={"save_freq": 3}, actor=ActorConfig(lr=1e-4))
    assert (cfg.trainer.total_steps, cfg.trainer.save_freq) == (7, 3)
    assert cfg.actor.lr == 1e-4
    assert base.replace(asynchronous={"max_staleness": 2}).asynchronous.max_staleness == 2
    with pytest.raises(ConfigError, match=r"async\.max_staleness = -1"):
        base.replace(asynchronous={"max_staleness": -1})
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['trainer\.nope'\]"):
        base.replace(trainer={"nope": 1})
    with pytest.raises(ConfigError, match=r"trainer\.total_steps = 'x' has the wrong type"):
        base.replace(trainer={"total_steps": "x"})
    with pytest.raises(
        ConfigError, match=r"replace\(actor=\.\.\.\) takes a section object \(ActorConfig\)"
    ):
        base.replace(actor=base.trainer)  # type: ignore[arg-type]  # the mistake under test
