"""Hugging Face models for the trainer's roles, and the forward passes workers run on them.

Building (:func:`build_policy`, :func:`build_critic`): the policy and reference are
``AutoModelForCausalLM``; the critic is ``AutoModelForTokenClassification(num_labels=1)`` on
the same backbone (its per-token logit is the value). Each comes from a local directory
(``model.path``, ``critic.model.path``) or, without one, from an architecture table
(``model.config``) with random weights drawn from a seed, so tests and the CPU demo need no
download. The tokenizer and the model must agree on the vocabulary (checked, see
:func:`check_vocab`).

Forward passes (:func:`token_logits`, :func:`sequence_log_probs`, :func:`token_values`) take
the batch layout of the whole trainer: prompts **left-padded**, responses right after them and
right-padded after EOS; position ids are ``cumsum(attention_mask) - 1`` (clamped at 0), the
ones ``generate`` uses, so a row's logits do not depend on its padding and the log-probs of a
rollout and of the training forward agree.

The seam workers hold is :class:`LanguageModel`: any ``torch.nn.Module`` whose call takes
``input_ids``, ``attention_mask``, ``position_ids`` and ``use_cache`` and returns an object with
``.logits`` (every ``transformers`` causal LM and token classifier, also wrapped in DDP).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForTokenClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.utils import logging as hf_logging

from ppo.config import ConfigError, ModelSection

__all__ = [
    "LanguageModel",
    "ModelOutput",
    "autocast",
    "build_critic",
    "build_policy",
    "check_model_fits",
    "check_vocab",
    "copy_backbone",
    "cpu_state_dict",
    "disable_dropout",
    "position_ids",
    "quiet_progress",
    "save_pretrained",
    "sequence_log_probs",
    "token_logits",
    "token_values",
]

#: How much larger than the tokenizer a checkpoint's embedding table may be: released models pad
#: their vocabulary for alignment (Qwen2.5: 151,936 rows for 151,665 tokens, 0.2 %).
VOCAB_PADDING_TOLERANCE = 0.02


class ModelOutput(Protocol):
    """What a forward pass returns: ``logits`` (B, T, V) or (B, T, num_labels)."""

    @property
    def logits(self) -> Tensor: ...


class LanguageModel(Protocol):
    """The call workers make on a model (a ``transformers`` model, or DDP around one)."""

    def __call__(
        self,
        *,
        input_ids: Tensor,
        attention_mask: Tensor,
        position_ids: Tensor,
        use_cache: bool,
    ) -> ModelOutput: ...


def position_ids(attention_mask: Tensor) -> Tensor:
    """``cumsum(mask) - 1`` clamped at 0: real tokens get ``0, 1, ...`` whatever the padding."""
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


def autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision for ``model.dtype = "bfloat16"`` (a no-op for float32)."""
    if dtype == "bfloat16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def token_logits(model: LanguageModel, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Logits ``(B, T, V)`` of every position (no KV cache)."""
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids(attention_mask),
        use_cache=False,
    )
    return out.logits


def sequence_log_probs(
    model: LanguageModel,
    input_ids: Tensor,
    attention_mask: Tensor,
    response_len: int,
    temperature: float = 1.0,
    *,
    with_entropy: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Log-probs (float32, ``(B, R)``) of the last ``response_len`` tokens under
    ``softmax(logits / temperature)``, and with ``with_entropy`` the entropy of each of those
    next-token distributions; both 0 where the response mask is 0. Keeps the graph (call under
    ``torch.no_grad()`` for inference).

    Raises:
        ValueError: mismatched shapes, ``response_len`` not in ``[1, T)``, temperature <= 0.
    """
    if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"input_ids (B, T) and attention_mask must have one shape, got "
            f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}"
        )
    t = input_ids.shape[1]
    if not 1 <= response_len < t:
        raise ValueError(f"response_len must be in [1, {t}), got {response_len!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    logits = token_logits(model, input_ids, attention_mask)
    scaled = logits[:, t - response_len - 1 : t - 1, :].float() / temperature
    targets = input_ids[:, t - response_len :].long()
    valid = attention_mask[:, t - response_len :].bool()
    log_z = torch.logsumexp(scaled, dim=-1)
    log_probs = torch.where(valid, scaled.gather(-1, targets[..., None]).squeeze(-1) - log_z, 0.0)
    entropy: Tensor | None = None
    if with_entropy:
        probs = torch.softmax(scaled, dim=-1)
        entropy = torch.where(valid, log_z - (probs * scaled).sum(dim=-1), 0.0)
    return log_probs, entropy


def token_values(
    model: LanguageModel, input_ids: Tensor, attention_mask: Tensor, response_len: int
) -> Tensor:
    """Values ``(B, R)`` (float32): the critic's output at the position *before* each response
    token (the state the token is chosen in)."""
    t = input_ids.shape[1]
    logits = token_logits(model, input_ids, attention_mask)
    return logits[:, t - response_len - 1 : t - 1, 0].float()


# ----------------------------------------------------------------------------- building


def _table_config(
    section: ModelSection, vocab_size: int, special: Mapping[str, int], max_positions: int
) -> PretrainedConfig:
    table = dict(section.config)
    model_type = str(table.pop("model_type"))
    table.setdefault("vocab_size", vocab_size)
    table.setdefault("max_position_embeddings", max_positions)
    for key, value in special.items():
        table.setdefault(key, value)
    try:
        return AutoConfig.for_model(model_type, **table)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"config field model.config = {dict(section.config)!r} does not build a "
            f"transformers config: {exc}"
        ) from exc


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Random init from ``seed`` without touching the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _load_kwargs(section: ModelSection) -> dict[str, Any]:
    return {
        "attn_implementation": section.attn_implementation,
        "dtype": torch.float32,
        "local_files_only": True,
    }


def build_policy(
    section: ModelSection,
    *,
    vocab_size: int,
    special_ids: Mapping[str, int],
    max_positions: int,
    seed: int,
    device: torch.device,
) -> PreTrainedModel:
    """The policy: ``from_pretrained(section.path)`` or a random init of ``section.config``.

    ``special_ids`` (``bos_token_id``, ``eos_token_id``, ``pad_token_id``) and ``vocab_size``
    come from the tokenizer and fill the table where it is silent.
    """
    if section.path is not None:
        model = _from_pretrained(AutoModelForCausalLM, section.path, section, "model.path")
    else:
        cfg = _table_config(section, vocab_size, special_ids, max_positions)
        cfg._attn_implementation = section.attn_implementation
        with _seeded(seed):
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    check_vocab(model, vocab_size, field="model.path" if section.path else "model.config")
    return _prepare(model, section, device)


def build_critic(
    section: ModelSection,
    critic_path: str | None,
    *,
    vocab_size: int,
    special_ids: Mapping[str, int],
    max_positions: int,
    seed: int,
    device: torch.device,
) -> PreTrainedModel:
    """The critic: a token classifier with one label on ``critic_path``'s backbone, or on the
    policy's architecture (its backbone is later copied from the policy,
    :func:`copy_backbone`)."""
    if critic_path is not None:
        model = _from_pretrained(
            AutoModelForTokenClassification, critic_path, section, "critic.model.path", num_labels=1
        )
    else:
        if section.path is not None:
            cfg = AutoConfig.from_pretrained(section.path, local_files_only=True)
        else:
            cfg = _table_config(section, vocab_size, special_ids, max_positions)
        cfg.num_labels = 1
        cfg._attn_implementation = section.attn_implementation
        with _seeded(seed):
            model = AutoModelForTokenClassification.from_config(cfg, dtype=torch.float32)
    check_vocab(model, vocab_size, field="critic.model.path" if critic_path else "model")
    return _prepare(model, section, device)


def copy_backbone(policy_state: Mapping[str, Tensor], critic: PreTrainedModel) -> None:
    """Load the policy's backbone weights into the critic (the value head keeps its init)."""
    prefix = critic.base_model_prefix + "."
    state = {k: v for k, v in policy_state.items() if k.startswith(prefix)}
    missing, unexpected = critic.load_state_dict(state, strict=False)
    head = [k for k in missing if k.startswith(prefix)]
    if unexpected or head:
        raise ConfigError(
            "the policy's backbone does not fit the critic (set critic.model.path to a "
            f"matching model): missing={head[:5]} unexpected={unexpected[:5]}"
        )


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """Silence transformers' per-file progress bars for the block (they would break the
    trainer's own bar), restoring the previous setting."""
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def cpu_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Contiguous CPU copies of ``model``'s tensors (safetensors refuses shared storage, e.g.
    tied embeddings)."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def save_pretrained(model: PreTrainedModel, directory: Path) -> None:
    """``model.save_pretrained(directory)`` (config + safetensors) from
    :func:`cpu_state_dict`."""
    with quiet_progress():
        model.save_pretrained(str(directory), state_dict=cpu_state_dict(model))


def _from_pretrained(
    auto: Any, path: str, section: ModelSection, field: str, **extra: Any
) -> PreTrainedModel:
    where = Path(path)
    if not (where / "config.json").is_file():
        raise ConfigError(
            f"config field {field} = {path!r} has no config.json: it is not a Hugging Face "
            "model directory"
        )
    try:
        with quiet_progress():
            model: PreTrainedModel = auto.from_pretrained(
                str(where), **_load_kwargs(section), **extra
            )
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"config field {field} = {path!r} cannot be loaded: {str(exc).splitlines()[0]}"
        ) from exc
    return model


def _prepare(
    model: PreTrainedModel, section: ModelSection, device: torch.device
) -> PreTrainedModel:
    if section.gradient_checkpointing:
        enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5.x
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
    model.config.use_cache = True
    disable_dropout(model)
    nn.Module.to(model, device)
    model.eval()
    return model


def disable_dropout(model: nn.Module) -> None:
    """Set every dropout layer's probability to 0. PPO's ratio compares log-probs (and the
    critic's values) of the same tokens across forward passes; dropout would add noise to both
    and draw from the process-wide RNG, so two runs with one seed would differ (a token
    classifier's head has dropout 0.1 by default)."""
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = 0.0


def check_vocab(model: PreTrainedModel, vocab_size: int, *, field: str) -> None:
    """The tokenizer's ids must fit the embedding table, and the table may exceed the tokenizer
    only by alignment padding (:data:`VOCAB_PADDING_TOLERANCE`).

    Raises:
        ConfigError: naming ``field``, both sizes and the fix.
    """
    weight = getattr(model.get_input_embeddings(), "weight", None)
    if not isinstance(weight, Tensor):
        raise ConfigError(f"config field {field}: the model has no input embedding table")
    _check_rows(int(weight.shape[0]), vocab_size, field)


def check_model_fits(section: ModelSection, critic_path: str | None, vocab_size: int) -> None:
    """Before any worker loads weights: the vocabulary of every configured model (read from
    its ``config.json``, or the ``model.config`` table) fits the tokenizer (:func:`check_vocab`'s
    rule)."""
    for field, path in (("model.path", section.path), ("critic.model.path", critic_path)):
        if path is not None:
            cfg = AutoConfig.from_pretrained(path, local_files_only=True)
            rows = getattr(cfg, "vocab_size", None)
            if isinstance(rows, int):
                _check_rows(rows, vocab_size, field)
    rows = section.config.get("vocab_size")
    if section.path is None and isinstance(rows, int):
        _check_rows(rows, vocab_size, "model.config.vocab_size")


def _check_rows(rows: int, vocab_size: int, field: str) -> None:
    if rows < vocab_size:
        raise ConfigError(
            f"config field {field}: the model's embedding table has {rows} rows but the "
            f"tokenizer has {vocab_size} tokens (ids would fall outside the table); use the "
            "model's own tokenizer (tokenizer.path) or resize the model"
        )
    if rows > vocab_size * (1 + VOCAB_PADDING_TOLERANCE):
        raise ConfigError(
            f"config field {field}: the model's embedding table has {rows} rows but the "
            f"tokenizer has only {vocab_size} tokens; they do not belong together (set "
            "tokenizer.path to the model's tokenizer)"
        )
