"""The trainer's typed configuration: attrs sections, validated, loadable from TOML.

Every field is validated when the config is built; a bad value raises :class:`ConfigError`
(a ``ValueError``) naming the field's dotted path, the value and the accepted range::

    cfg = load_config("demo", ["trainer.total_steps=50", "actor.lr=1e-4"])

Overrides are ``section.field=value`` strings; values are parsed as TOML scalars (``3``,
``1e-4``, ``true``, ``"text"``) and bare words fall back to strings.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import attrs

from ppo.example_configs import example_config_names, example_config_path

__all__ = [
    "ActorConfig",
    "AlgorithmConfig",
    "AsyncConfig",
    "ConfigError",
    "CriticConfig",
    "CriticModelSection",
    "DataConfig",
    "ModelSection",
    "PPOConfig",
    "ResourcesConfig",
    "RolloutConfig",
    "TokenizerSection",
    "TrainerConfig",
    "WarmupConfig",
    "config_to_dict",
    "load_config",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the fix."""


def _check(cond: bool, field: str, value: object, need: str) -> None:
    if not cond:
        raise ConfigError(f"config field {field} = {value!r} is invalid: {need}")


def _names_tuple(value: object) -> tuple[str, ...]:
    """A TOML array (or one bare name) as a tuple; anything else is rejected by ``validate``."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple):
        return tuple(value)
    raise ConfigError(
        f"config field trainer.loggers = {value!r} has the wrong type; "
        'expected a list of tracker names such as ["console", "tensorboard"]'
    )


#: The architecture built when ``model.path`` is unset: a 2-layer Llama-style decoder
#: (RoPE, RMSNorm, SwiGLU, tied embeddings), ~90k parameters with the shipped tokenizer.
#: ``vocab_size``, the special token ids and ``max_position_embeddings`` come from the
#: tokenizer and the data lengths unless the table sets them.
DEFAULT_ARCHITECTURE: Mapping[str, Any] = MappingProxyType(
    {
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "tie_word_embeddings": True,
    }
)

DTYPES = ("float32", "bfloat16")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")


def _architecture(table: Mapping[str, Any]) -> Mapping[str, Any]:
    """The user's table over :data:`DEFAULT_ARCHITECTURE` (same ``model_type``), else as is."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"config field model.config = {table!r} must be a table")
    if (
        table.get("model_type", DEFAULT_ARCHITECTURE["model_type"])
        != (DEFAULT_ARCHITECTURE["model_type"])
    ):
        return dict(table)
    return {**DEFAULT_ARCHITECTURE, **table}


def _check_model_dir(field: str, path: str | None) -> None:
    if path is None:
        return
    p = Path(path)
    _check(
        p.is_dir(),
        field,
        path,
        "must be a local directory holding a Hugging Face model (config.json + "
        "*.safetensors), e.g. one written by save_pretrained or `python -m rlrun export`",
    )
    _check(
        (p / "config.json").is_file(),
        field,
        path,
        "has no config.json: it is not a Hugging Face model directory",
    )


@attrs.frozen(kw_only=True)
class ModelSection:
    """The policy (and reference) model: a Hugging Face causal LM.

    ``path``: a local model directory (``config.json``, safetensors weights, tokenizer files);
    when unset, ``config`` (an architecture table, merged over :data:`DEFAULT_ARCHITECTURE`)
    is built with random weights from ``trainer.seed``. ``dtype``: compute precision
    (``bfloat16`` runs forward passes under autocast; master weights stay float32).
    """

    path: str | None = None
    config: Mapping[str, Any] = attrs.field(
        factory=lambda: dict(DEFAULT_ARCHITECTURE), converter=_architecture
    )
    dtype: str = "float32"
    gradient_checkpointing: bool = False
    attn_implementation: str = "sdpa"

    def validate(self, p: str) -> None:
        _check_model_dir(f"{p}.path", self.path)
        _check(
            "model_type" in self.config,
            f"{p}.config",
            dict(self.config),
            "must name a model_type (e.g. 'llama', 'qwen2')",
        )
        _check(self.dtype in DTYPES, f"{p}.dtype", self.dtype, f"one of {list(DTYPES)}")
        _check(
            self.attn_implementation in ATTN_IMPLEMENTATIONS,
            f"{p}.attn_implementation",
            self.attn_implementation,
            f"one of {list(ATTN_IMPLEMENTATIONS)}",
        )


@attrs.frozen(kw_only=True)
class CriticModelSection:
    """The critic's backbone: ``path`` (a local HF model directory) or, when unset, the
    policy's model (the same architecture, initialised from the warmed-up policy)."""

    path: str | None = None

    def validate(self, p: str) -> None:
        _check_model_dir(f"{p}.path", self.path)


def _critic_model(value: CriticModelSection | Mapping[str, Any]) -> CriticModelSection:
    if isinstance(value, CriticModelSection):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"config section [critic.model] must be a table, got {value!r}")
    bad = sorted(set(value) - {"path"})
    if bad:
        raise ConfigError(f"unknown field(s) {[f'critic.model.{b}' for b in bad]}; known: ['path']")
    path = value.get("path")
    if path is not None and not isinstance(path, str):
        raise ConfigError(f"config field critic.model.path = {path!r} has the wrong type; str")
    return CriticModelSection(path=path)


@attrs.frozen(kw_only=True)
class TokenizerSection:
    """``path``: a local tokenizer directory; unset: ``model.path`` when set, else the
    tokenizer shipped with the package."""

    path: str | None = None

    def validate(self, p: str) -> None:
        if self.path is not None:
            _check(Path(self.path).is_dir(), f"{p}.path", self.path, "must be a directory")


@attrs.frozen(kw_only=True)
class DataConfig:
    task: str = "addition"
    task_kwargs: Mapping[str, Any] = attrs.field(factory=dict)
    train_jsonl: str | None = None
    val_jsonl: str | None = None
    train_size: int = 4096
    val_size: int = 128
    prompts_per_step: int = 32
    max_prompt_len: int = 12
    max_response_len: int = 4
    seed: int = 0
    reward_fn: str | None = None
    prompt_format: str = "raw"

    def validate(self, p: str) -> None:
        _check(
            bool(self.task), f"{p}.task", self.task, "name a task (see ppo.tasks.available_tasks())"
        )
        _check(self.train_size > 0, f"{p}.train_size", self.train_size, "must be > 0")
        _check(self.val_size > 0, f"{p}.val_size", self.val_size, "must be > 0")
        _check(
            self.prompts_per_step > 0, f"{p}.prompts_per_step", self.prompts_per_step, "must be > 0"
        )
        _check(self.max_prompt_len > 0, f"{p}.max_prompt_len", self.max_prompt_len, "must be > 0")
        _check(
            self.max_response_len > 0, f"{p}.max_response_len", self.max_response_len, "must be > 0"
        )
        _check(
            self.reward_fn is None or ":" in self.reward_fn,
            f"{p}.reward_fn",
            self.reward_fn,
            "must be 'module:function'",
        )
        _check(
            self.prompt_format in ("raw", "chat"),
            f"{p}.prompt_format",
            self.prompt_format,
            "'raw' (prompt text as is) or 'chat' (messages through the chat template)",
        )


@attrs.frozen(kw_only=True)
class RolloutConfig:
    n: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    val_greedy: bool = True

    def validate(self, p: str) -> None:
        _check(self.n >= 1, f"{p}.n", self.n, "must be >= 1 (responses per prompt)")
        _check(self.temperature > 0, f"{p}.temperature", self.temperature, "must be > 0")
        _check(0 < self.top_p <= 1, f"{p}.top_p", self.top_p, "must be in (0, 1]")
        _check(self.top_k >= 0, f"{p}.top_k", self.top_k, "must be >= 0 (0 disables top-k)")


@attrs.frozen(kw_only=True)
class AlgorithmConfig:
    adv_estimator: str = "grpo"
    gamma: float = 1.0
    lam: float = 1.0
    norm_adv_by_std: bool = True
    use_kl_in_reward: bool = False
    kl_ctrl: str = "fixed"
    kl_coef: float = 0.001
    kl_target: float = 0.1
    kl_horizon: int = 10000
    kl_penalty: str = "k1"
    is_cap: float = 2.0

    def validate(self, p: str) -> None:
        from ppo.algos import advantage_estimator_names

        names = advantage_estimator_names()
        _check(
            self.adv_estimator in names,
            f"{p}.adv_estimator",
            self.adv_estimator,
            f"one of {list(names)}",
        )
        _check(0.0 <= self.gamma <= 1.0, f"{p}.gamma", self.gamma, "must be in [0, 1]")
        _check(0.0 <= self.lam <= 1.0, f"{p}.lam", self.lam, "must be in [0, 1]")
        _check(
            self.kl_ctrl in ("fixed", "adaptive"),
            f"{p}.kl_ctrl",
            self.kl_ctrl,
            "'fixed' or 'adaptive'",
        )
        _check(self.kl_coef >= 0, f"{p}.kl_coef", self.kl_coef, "must be >= 0")
        _check(self.kl_target > 0, f"{p}.kl_target", self.kl_target, "must be > 0")
        _check(self.kl_horizon > 0, f"{p}.kl_horizon", self.kl_horizon, "must be > 0")
        _check(
            math.isfinite(self.is_cap) and self.is_cap > 0,
            f"{p}.is_cap",
            self.is_cap,
            "must be a finite number > 0 (importance-weight truncation)",
        )
        _check(
            self.kl_penalty in ("k1", "abs", "k2", "k3"),
            f"{p}.kl_penalty",
            self.kl_penalty,
            "k1|abs|k2|k3",
        )


@attrs.frozen(kw_only=True)
class ActorConfig:
    lr: float = 3e-4
    ppo_epochs: int = 1
    mini_batches: int = 2
    policy_loss: str = "vanilla"
    clip_low: float = 0.2
    clip_high: float = 0.28
    clip_c: float = 3.0
    loss_agg_mode: str = "token-mean"
    entropy_coeff: float = 0.0
    use_kl_loss: bool = False
    kl_loss_coef: float = 0.001
    kl_loss_type: str = "k3"
    grad_clip: float = 1.0
    weight_decay: float = 0.0
    micro_batch_size: int = 0

    def validate(self, p: str) -> None:
        from ppo.algos import AGG_MODES, policy_loss_names

        _check(
            self.micro_batch_size >= 0,
            f"{p}.micro_batch_size",
            self.micro_batch_size,
            "must be >= 0 (0: one micro-batch per mini-batch)",
        )

        _check(self.lr > 0, f"{p}.lr", self.lr, "must be > 0")
        _check(self.ppo_epochs >= 1, f"{p}.ppo_epochs", self.ppo_epochs, "must be >= 1")
        _check(self.mini_batches >= 1, f"{p}.mini_batches", self.mini_batches, "must be >= 1")
        names = policy_loss_names()
        _check(
            self.policy_loss in names, f"{p}.policy_loss", self.policy_loss, f"one of {list(names)}"
        )
        _check(0 < self.clip_low < 1, f"{p}.clip_low", self.clip_low, "must be in (0, 1)")
        _check(self.clip_high > 0, f"{p}.clip_high", self.clip_high, "must be > 0")
        _check(self.clip_c > 1, f"{p}.clip_c", self.clip_c, "must be > 1 (dual-clip bound)")
        _check(
            self.loss_agg_mode in AGG_MODES,
            f"{p}.loss_agg_mode",
            self.loss_agg_mode,
            f"one of {list(AGG_MODES)}",
        )
        _check(self.entropy_coeff >= 0, f"{p}.entropy_coeff", self.entropy_coeff, "must be >= 0")
        _check(self.kl_loss_coef >= 0, f"{p}.kl_loss_coef", self.kl_loss_coef, "must be >= 0")
        _check(
            self.kl_loss_type in ("k1", "abs", "k2", "k3"),
            f"{p}.kl_loss_type",
            self.kl_loss_type,
            "k1|abs|k2|k3",
        )
        _check(self.grad_clip > 0, f"{p}.grad_clip", self.grad_clip, "must be > 0")


@attrs.frozen(kw_only=True)
class CriticConfig:
    lr: float = 1e-3
    ppo_epochs: int = 1
    mini_batches: int = 2
    cliprange_value: float = 0.5
    grad_clip: float = 1.0
    warmup_steps: int = 0
    micro_batch_size: int = 0
    model: CriticModelSection = attrs.field(factory=CriticModelSection, converter=_critic_model)

    def validate(self, p: str) -> None:
        self.model.validate(f"{p}.model")
        _check(
            self.micro_batch_size >= 0,
            f"{p}.micro_batch_size",
            self.micro_batch_size,
            "must be >= 0 (0: one micro-batch per mini-batch)",
        )
        _check(self.lr > 0, f"{p}.lr", self.lr, "must be > 0")
        _check(self.ppo_epochs >= 1, f"{p}.ppo_epochs", self.ppo_epochs, "must be >= 1")
        _check(self.mini_batches >= 1, f"{p}.mini_batches", self.mini_batches, "must be >= 1")
        _check(
            self.cliprange_value > 0, f"{p}.cliprange_value", self.cliprange_value, "must be > 0"
        )
        _check(self.grad_clip > 0, f"{p}.grad_clip", self.grad_clip, "must be > 0")
        _check(self.warmup_steps >= 0, f"{p}.warmup_steps", self.warmup_steps, "must be >= 0")


@attrs.frozen(kw_only=True)
class WarmupConfig:
    steps: int = 150
    batch_size: int = 64
    lr: float = 3e-3

    def validate(self, p: str) -> None:
        _check(self.steps >= 0, f"{p}.steps", self.steps, "must be >= 0 (0 disables warm-up)")
        _check(self.batch_size > 0, f"{p}.batch_size", self.batch_size, "must be > 0")
        _check(self.lr > 0, f"{p}.lr", self.lr, "must be > 0")


@attrs.frozen(kw_only=True)
class ResourcesConfig:
    """Ranks per role. With ``colocate`` every role is fused onto the actor's ranks (one
    process per rank holds actor, critic and reward); otherwise each role gets its own pool
    and ``critic_ranks`` sets the critic's data-parallel size."""

    actor_ranks: int = 1
    critic_ranks: int = 1
    colocate: bool = True
    devices_per_process: int = 0
    cpus_per_process: float = 1.0
    torch_threads: int = 1

    def validate(self, p: str) -> None:
        _check(self.actor_ranks >= 1, f"{p}.actor_ranks", self.actor_ranks, "must be >= 1")
        _check(self.critic_ranks >= 1, f"{p}.critic_ranks", self.critic_ranks, "must be >= 1")
        _check(
            self.devices_per_process >= 0,
            f"{p}.devices_per_process",
            self.devices_per_process,
            "must be >= 0",
        )
        _check(
            self.cpus_per_process > 0
            or (self.cpus_per_process == 0 and self.devices_per_process > 0),
            f"{p}.cpus_per_process",
            self.cpus_per_process,
            "must be > 0 (0 only with devices_per_process > 0: a process must reserve something)",
        )
        _check(self.torch_threads >= 1, f"{p}.torch_threads", self.torch_threads, "must be >= 1")


@attrs.frozen(kw_only=True)
class TrainerConfig:
    total_steps: int = 100
    test_freq: int = 10
    save_freq: int = 25
    run_dir: str = "runs/default"
    resume: str = "auto"
    overwrite: bool = False
    keep_last: int = 2
    seed: int = 0
    progress: bool = True
    call_timeout: float | None = 600.0
    #: Trackers for each step's metrics (see :mod:`ppo.trackers`); ``metrics.jsonl`` is always
    #: written (resume and the figure read it), so ``"jsonl"`` may be left out.
    loggers: tuple[str, ...] = attrs.field(default=("console", "jsonl"), converter=_names_tuple)
    mode: str = "sync"
    #: Reorder the update batch's rows so every data-parallel rank gets a near-equal number of
    #: tokens (:mod:`ppo.balance`). Off by default: the update pads every row to the batch's
    #: length, so a rank's compute does not depend on its tokens, and the reordered rows cost
    #: each rank fetches from more producer parts (measured by ``make bench``).
    balance_batch: bool = False
    #: Overlap consecutive steps (sync mode; see :meth:`ppo.PPOTrainer.train_step`): submit
    #: step ``k + 1``'s first stages while step ``k``'s update runs, and, where the ranks can
    #: compute the advantages themselves (:mod:`ppo.group_advantages`), submit each update with
    #: its step's first stages. The metrics are identical either way; ``false`` runs one stage
    #: at a time with the driver between them.
    pipeline_steps: bool = True
    #: How many rank deaths a run recovers from in place (see :mod:`ppo.recovery`).
    max_restarts: int = 1

    def validate(self, p: str) -> None:
        _check(self.total_steps >= 1, f"{p}.total_steps", self.total_steps, "must be >= 1")
        _check(self.test_freq >= 0, f"{p}.test_freq", self.test_freq, "must be >= 0 (0 disables)")
        _check(self.save_freq >= 0, f"{p}.save_freq", self.save_freq, "must be >= 0 (0 disables)")
        _check(bool(self.run_dir), f"{p}.run_dir", self.run_dir, "must be a directory path")
        _check(self.keep_last >= 1, f"{p}.keep_last", self.keep_last, "must be >= 1")
        _check(
            self.max_restarts >= 0,
            f"{p}.max_restarts",
            self.max_restarts,
            "must be >= 0 (0: a rank death ends the run)",
        )
        _check(
            self.mode in ("sync", "async"),
            f"{p}.mode",
            self.mode,
            "'sync' (generate, then train) or 'async' (rollout workers generate ahead, see "
            "[async])",
        )
        _check(
            self.call_timeout is None or self.call_timeout > 0,
            f"{p}.call_timeout",
            self.call_timeout,
            "must be > 0",
        )
        self._validate_loggers(f"{p}.loggers")

    def _validate_loggers(self, path: str) -> None:
        from ppo.trackers import TRACKER_NAMES, missing_extra

        for name in self.loggers:
            _check(
                isinstance(name, str) and name in TRACKER_NAMES,
                path,
                list(self.loggers),
                f"{name!r} is not a tracker; choose from {list(TRACKER_NAMES)}",
            )
        dupes = sorted({n for n in self.loggers if self.loggers.count(n) > 1})
        _check(not dupes, path, list(self.loggers), f"{dupes} listed more than once")
        for name in self.loggers:
            message = missing_extra(name)
            if message is not None:
                raise ConfigError(message)


@attrs.frozen(kw_only=True)
class AsyncConfig:
    """``trainer.mode = "async"``: rollout workers in their own pool (``rollout_ranks``
    processes) generate up to ``max_staleness`` policy versions ahead of training (0 is
    on-policy); off-policy samples are corrected with importance weights truncated at
    ``algorithm.is_cap``. TOML section ``[async]``."""

    max_staleness: int = 1
    rollout_ranks: int = 1

    def validate(self, p: str) -> None:
        _check(self.max_staleness >= 0, f"{p}.max_staleness", self.max_staleness, "must be >= 0")
        _check(self.rollout_ranks >= 1, f"{p}.rollout_ranks", self.rollout_ranks, "must be >= 1")


_SECTIONS: dict[str, type[Any]] = {
    "model": ModelSection,
    "tokenizer": TokenizerSection,
    "data": DataConfig,
    "rollout": RolloutConfig,
    "algorithm": AlgorithmConfig,
    "actor": ActorConfig,
    "critic": CriticConfig,
    "warmup": WarmupConfig,
    "resources": ResourcesConfig,
    "trainer": TrainerConfig,
    "async": AsyncConfig,
}

#: Sections whose TOML name is not a Python identifier.
_ATTRIBUTE = {"async": "asynchronous"}


def _attr(section: str) -> str:
    return _ATTRIBUTE.get(section, section)


@attrs.frozen(kw_only=True)
class PPOConfig:
    """The whole trainer configuration (one attrs section per concern)."""

    model: ModelSection = attrs.field(factory=ModelSection)
    tokenizer: TokenizerSection = attrs.field(factory=TokenizerSection)
    data: DataConfig = attrs.field(factory=DataConfig)
    rollout: RolloutConfig = attrs.field(factory=RolloutConfig)
    algorithm: AlgorithmConfig = attrs.field(factory=AlgorithmConfig)
    actor: ActorConfig = attrs.field(factory=ActorConfig)
    critic: CriticConfig = attrs.field(factory=CriticConfig)
    warmup: WarmupConfig = attrs.field(factory=WarmupConfig)
    resources: ResourcesConfig = attrs.field(factory=ResourcesConfig)
    trainer: TrainerConfig = attrs.field(factory=TrainerConfig)
    asynchronous: AsyncConfig = attrs.field(factory=AsyncConfig)

    def __attrs_post_init__(self) -> None:
        for name in _SECTIONS:
            _check_finite(name, getattr(self, _attr(name)))
            getattr(self, _attr(name)).validate(name)
        _check(
            not (self.trainer.mode == "async" and self.needs_baselines),
            "trainer.mode",
            self.trainer.mode,
            f"is not available with algorithm.adv_estimator = {self.algorithm.adv_estimator!r} "
            "(its greedy baseline needs the current policy); use 'sync'",
        )
        _check(
            not (self.algorithm.adv_estimator in _GROUP_ESTIMATORS and self.rollout.n < 2),
            "rollout.n",
            self.rollout.n,
            f"algorithm.adv_estimator = {self.algorithm.adv_estimator!r} compares the responses "
            "to one prompt with each other, so with one response per prompt every advantage is 0 "
            "and nothing is learned: use rollout.n >= 2 (or an estimator such as "
            "'reinforce_plus_plus')",
        )
        batch = self.data.prompts_per_step * self.rollout.n
        _check(
            batch % self.resources.actor_ranks == 0,
            "data.prompts_per_step",
            self.data.prompts_per_step,
            f"prompts_per_step * rollout.n = {batch} must divide over resources.actor_ranks="
            f"{self.resources.actor_ranks}",
        )
        per_rank = batch // self.resources.actor_ranks
        _check(
            per_rank % self.actor.mini_batches == 0,
            "actor.mini_batches",
            self.actor.mini_batches,
            f"each actor rank holds {per_rank} sequences per step; mini_batches must divide it",
        )

    @property
    def needs_critic(self) -> bool:
        from ppo.algos import estimator_needs_critic

        return estimator_needs_critic(self.algorithm.adv_estimator)

    @property
    def needs_baselines(self) -> bool:
        from ppo.algos import estimator_needs_baselines

        return estimator_needs_baselines(self.algorithm.adv_estimator)

    @property
    def needs_reference(self) -> bool:
        return self.algorithm.use_kl_in_reward or self.actor.use_kl_loss

    def replace(
        self,
        *,
        model: ModelSection | Mapping[str, Any] | None = None,
        tokenizer: TokenizerSection | Mapping[str, Any] | None = None,
        data: DataConfig | Mapping[str, Any] | None = None,
        rollout: RolloutConfig | Mapping[str, Any] | None = None,
        algorithm: AlgorithmConfig | Mapping[str, Any] | None = None,
        actor: ActorConfig | Mapping[str, Any] | None = None,
        critic: CriticConfig | Mapping[str, Any] | None = None,
        warmup: WarmupConfig | Mapping[str, Any] | None = None,
        resources: ResourcesConfig | Mapping[str, Any] | None = None,
        trainer: TrainerConfig | Mapping[str, Any] | None = None,
        asynchronous: AsyncConfig | Mapping[str, Any] | None = None,
    ) -> PPOConfig:
        """A copy with some sections replaced: each given as a section object, or as a mapping
        of the fields to change in the current section (validated like a TOML table)::

            cfg.replace(trainer={"total_steps": 10}, actor=ActorConfig(lr=1e-4))
        """
        given = {
            "model": model,
            "tokenizer": tokenizer,
            "data": data,
            "rollout": rollout,
            "algorithm": algorithm,
            "actor": actor,
            "critic": critic,
            "warmup": warmup,
            "resources": resources,
            "trainer": trainer,
            "async": asynchronous,
        }
        changes: dict[str, Any] = {}
        for name, value in given.items():
            attr, cls = _attr(name), _SECTIONS[name]
            if value is None:
                continue
            if isinstance(value, Mapping):
                raw = {**attrs.asdict(getattr(self, attr), recurse=False), **value}
                changes[attr] = _section_from_table(name, cls, raw)
            elif isinstance(value, cls):
                changes[attr] = value
            else:
                raise ConfigError(
                    f"replace({attr}=...) takes a section object ({cls.__name__}) "
                    f"or a mapping of its fields, got {type(value).__name__}"
                )
        return attrs.evolve(self, **changes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PPOConfig:
        unknown = sorted(set(data) - set(_SECTIONS))
        if unknown:
            raise ConfigError(f"unknown config section(s) {unknown}; known: {sorted(_SECTIONS)}")
        sections: dict[str, Any] = {}
        for name, section_cls in _SECTIONS.items():
            raw = data.get(name, {})
            if not isinstance(raw, Mapping):
                raise ConfigError(f"config section [{name}] must be a table, got {raw!r}")
            sections[_attr(name)] = _section_from_table(name, section_cls, raw)
        return cls(**sections)


def _section_from_table(name: str, section_cls: type[Any], raw: Mapping[str, Any]) -> Any:
    """Section ``name`` built from the table ``raw``: unknown fields and wrong types raise
    :class:`ConfigError` naming the field."""
    fields = {f.name: f for f in attrs.fields(section_cls)}
    bad = sorted(set(raw) - set(fields))
    if bad:
        raise ConfigError(
            f"unknown field(s) {[f'{name}.{b}' for b in bad]}; known: {sorted(fields)}"
        )
    for key, value in raw.items():
        _check_type(f"{name}.{key}", value, fields[key])
    return section_cls(**raw)


#: Estimators whose baseline is the other responses to the same prompt (need rollout.n >= 2).
_GROUP_ESTIMATORS = ("grpo", "dr_grpo", "rloo")


def _check_finite(name: str, section: Any) -> None:
    """Every float field of ``section`` is finite (``inf`` passes ``> 0`` checks otherwise)."""
    for field in attrs.fields(type(section)):
        value = getattr(section, field.name)
        if isinstance(value, float):
            _check(math.isfinite(value), f"{name}.{field.name}", value, "must be a finite number")


def _check_type(path: str, value: Any, field: attrs.Attribute[Any]) -> None:
    typ = str(field.type)
    if typ.startswith("Mapping"):
        ok = isinstance(value, Mapping)
    elif typ == "bool":
        ok = isinstance(value, bool)
    elif typ == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif typ.startswith("float"):
        ok = (isinstance(value, int | float) and not isinstance(value, bool)) or (
            value is None and "None" in typ
        )
    elif typ.startswith("str"):
        ok = isinstance(value, str) or (value is None and "None" in typ)
    else:
        ok = True
    if not ok:
        raise ConfigError(f"config field {path} = {value!r} has the wrong type; expected {typ}")


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def config_to_dict(config: PPOConfig) -> dict[str, Any]:
    """A plain-dict view (JSON/TOML friendly) of ``config``."""
    return {
        name: attrs.asdict(getattr(config, _attr(name)), value_serializer=_plain)
        for name in _SECTIONS
    }


def _plain(_: object, __: object, value: Any) -> Any:
    return dict(value) if isinstance(value, MappingProxyType) else value


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> PPOConfig:
    """Load a TOML file (or defaults when ``path`` is None) and apply ``section.field=value``
    overrides in order. ``path`` may also name a shipped example config (``"demo"``, see
    :mod:`ppo.example_configs`)."""
    if isinstance(overrides, str):
        raise TypeError(
            f"overrides must be a list of 'section.field=value' strings, got the string "
            f"{overrides!r}; wrap it in a list: [{overrides!r}]"
        )
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        example = None if p.is_file() else example_config_path(str(path))
        if example is not None:
            p = example
        elif not p.is_file():
            raise ConfigError(
                f"config file {str(p)!r} does not exist (nor is it the name of an example "
                f"config: {example_config_names()})"
            )
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {str(p)!r} is not valid TOML: {exc}") from exc
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) < 2 or not all(parts):
            raise ConfigError(f"override {item!r} must look like section.field=value")
        node: Any = data
        for depth, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(
                    f"override {item!r}: {'.'.join(parts[: depth + 1])} is a value "
                    f"({node!r}), not a table, so it has no field {parts[depth + 1]!r}"
                )
        node[parts[-1]] = _parse_value(text.strip())
    return PPOConfig.from_dict(data)
