"""A small causal transformer, KV-cached generation and response log-probs.

Everything the trainer needs from a policy (and a critic) lives here, in plain torch:

* :class:`ModelConfig` and :class:`CausalTransformer`: token + learned positional embeddings,
  pre-LN blocks (causal self-attention through
  :func:`torch.nn.functional.scaled_dot_product_attention`, GELU MLP), a final LayerNorm and an
  LM head tied to the token embedding. ``value_head=True`` adds a scalar head for a critic
  (:meth:`CausalTransformer.values`).
* :class:`KVCache`: the per-layer keys/values of the tokens seen so far, plus their padding mask
  and the next position of every row, so incremental calls need only the new tokens.
* :func:`generate`: temperature sampling (or greedy) with the cache; returns prompt + response,
  the response mask (1 up to and including EOS) and the sampling log-probs.
* :func:`sequence_log_probs`: the same log-probs recomputed with gradients (plus optional
  entropy), for the PPO ratio. On the sequences :func:`generate` returned, the two agree to
  float precision, so the first PPO epoch starts from a ratio of exactly 1.

Batch layout (shared with :mod:`ppo.warmup` and the trainer): prompts are **left-padded** with
the pad id and carry ``attention_mask == 0`` on pads; responses follow directly and are
right-padded after EOS. Position ids are ``cumsum(mask) - 1`` (clamped at 0), so a row's real
tokens get positions ``0, 1, ...`` whatever its padding, and pads are never attended to: a row's
logits do not depend on how much padding the batch gave it.
"""

from __future__ import annotations

import math
from typing import Protocol

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CausalLM",
    "CausalTransformer",
    "GenerationOutput",
    "KVCache",
    "ModelConfig",
    "generate",
    "sequence_log_probs",
]


def _check_int(name: str, value: object, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"ModelConfig.{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"ModelConfig.{name} must be >= {minimum}, got {value!r}")


@attrs.frozen
class ModelConfig:
    """Shape of a :class:`CausalTransformer`. Embeddings are always tied to the LM head.

    Validated on construction: every size is a positive ``int`` (``vocab_size >= 3`` for the
    special tokens), ``d_model % n_heads == 0`` and ``0 <= dropout < 1``; a violation raises
    ``ValueError`` (``TypeError`` for a wrong type) naming the field and its value.

    The defaults (64 wide, 2 layers, 4 heads) give 107,456 parameters with the 51-id
    :class:`~ppo.tokenizer.CharTokenizer`.
    """

    vocab_size: int
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    max_seq_len: int = 64
    dropout: float = 0.0

    def __attrs_post_init__(self) -> None:
        _check_int("vocab_size", self.vocab_size, 3)
        _check_int("d_model", self.d_model, 1)
        _check_int("n_layers", self.n_layers, 1)
        _check_int("n_heads", self.n_heads, 1)
        _check_int("max_seq_len", self.max_seq_len, 1)
        if self.d_model % self.n_heads != 0:
            raise ValueError(
                f"ModelConfig.d_model={self.d_model!r} must be divisible by "
                f"n_heads={self.n_heads!r}"
            )
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, int | float):
            raise TypeError(f"ModelConfig.dropout must be a float, got {self.dropout!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def head_dim(self) -> int:
        """``d_model // n_heads``."""
        return self.d_model // self.n_heads


@attrs.frozen(eq=False)
class KVCache:
    """Keys and values of every token a model has seen, for incremental decoding.

    Attributes:
        layers: one ``(keys, values)`` pair per transformer layer, each
            ``(B, n_heads, S, head_dim)``.
        mask: ``(B, S)`` bool, ``True`` for real tokens (pads are never attended to).
        next_positions: ``(B,)`` long, the position id the next real token of each row gets.

    A cache is immutable: :meth:`CausalTransformer.forward` returns a new one that extends it.
    Equality is identity (tensors have no single truth value).
    """

    layers: tuple[tuple[Tensor, Tensor], ...]
    mask: Tensor
    next_positions: Tensor

    @property
    def seq_len(self) -> int:
        """``S``, the number of cached tokens (pads included)."""
        return int(self.mask.shape[1])

    @property
    def batch_size(self) -> int:
        """``B``."""
        return int(self.mask.shape[0])


class CausalLM(Protocol):
    """What :func:`generate` and :func:`sequence_log_probs` need from a model.

    Calling it returns ``(logits, cache)``: ``logits`` is ``(B, T, vocab_size)`` for the ``T``
    input tokens, ``cache`` extends ``kv_cache`` with them. ``attention_mask`` is ``(B, T)`` for
    the input tokens only (nonzero = real); the cache remembers earlier tokens' mask. Default
    position ids continue from the cache: ``next_positions + cumsum(mask) - 1``, clamped at 0.
    :class:`CausalTransformer` is the built-in implementation; a user model plugs in by wrapping
    itself in this signature.
    """

    def __call__(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> tuple[Tensor, KVCache]: ...


class _SelfAttention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.head_dim = config.head_dim
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(
        self, x: Tensor, attn_mask: Tensor, past: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        b, t, d = x.shape
        q, k, v = (
            z.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
            for z in self.qkv(x).split(d, dim=-1)
        )
        if past is not None:
            k = torch.cat((past[0], k), dim=2)
            v = torch.cat((past[1], v), dim=2)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).reshape(b, t, d)
        return self.resid_drop(self.proj(y)), (k, v)


class _Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model)
        self.attn = _SelfAttention(config)
        self.ln2 = nn.LayerNorm(config.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(config.d_model, 4 * config.d_model),
            nn.GELU(),
            nn.Linear(4 * config.d_model, config.d_model),
            nn.Dropout(config.dropout),
        )

    def forward(
        self, x: Tensor, attn_mask: Tensor, past: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        a, kv = self.attn(self.ln1(x), attn_mask, past)
        x = x + a
        x = x + self.mlp(self.ln2(x))
        return x, kv


class CausalTransformer(nn.Module):
    """A GPT-style decoder: tied embeddings, learned positions, pre-LN blocks.

    Args:
        config: the shape.
        value_head: add a ``Linear(d_model, 1)`` scalar head read by :meth:`values` (critic).
        seed: initialise the weights from this seed without touching torch's global RNG;
            ``None`` draws from the global RNG (so ``torch.manual_seed`` controls it).

    Weights: normal(0, 0.02) embeddings and linear layers, zero biases, and the residual
    output projections scaled by ``1 / sqrt(2 * n_layers)`` (GPT-2).
    """

    def __init__(
        self, config: ModelConfig, value_head: bool = False, *, seed: int | None = None
    ) -> None:
        super().__init__()
        self.config = config
        with torch.random.fork_rng(devices=[]):
            self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
            self.pos_emb = nn.Embedding(config.max_seq_len, config.d_model)
            self.drop = nn.Dropout(config.dropout)
            self.blocks = nn.ModuleList(_Block(config) for _ in range(config.n_layers))
            self.ln_f = nn.LayerNorm(config.d_model)
            self.value_head: nn.Linear | None = nn.Linear(config.d_model, 1) if value_head else None
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        self._init_weights(generator)

    @torch.no_grad()
    def _init_weights(self, generator: torch.Generator | None) -> None:
        std = 0.02
        residual_std = std / math.sqrt(2 * self.config.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, std, generator=generator)
            elif isinstance(module, nn.Linear):
                is_residual = name.endswith("attn.proj") or name.endswith("mlp.2")
                nn.init.normal_(
                    module.weight, 0.0, residual_std if is_residual else std, generator=generator
                )
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    @property
    def has_value_head(self) -> bool:
        """Whether :meth:`values` is available."""
        return self.value_head is not None

    def num_parameters(self) -> int:
        """Number of distinct parameters (the tied embedding counted once)."""
        return sum(p.numel() for p in self.parameters())

    def __call__(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> tuple[Tensor, KVCache]:
        """Typed alias of ``nn.Module.__call__`` (hooks included); see :meth:`forward`."""
        out: tuple[Tensor, KVCache] = super().__call__(
            input_ids, attention_mask, position_ids, kv_cache
        )
        return out

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> tuple[Tensor, KVCache]:
        """Logits for ``input_ids`` given the cached prefix, and the extended cache.

        Args:
            input_ids: ``(B, T)`` integer ids.
            attention_mask: ``(B, T)`` mask of ``input_ids`` (nonzero = real token, 0 = pad);
                ``None`` means all real. Covers the new tokens only; the cache keeps the rest.
            position_ids: ``(B, T)``; default ``next_positions + cumsum(mask) - 1`` clamped at 0
                (``next_positions`` is 0 without a cache).
            kv_cache: the cache returned by a previous call on the same rows, or ``None``.

        Returns:
            ``(logits, cache)``: ``(B, T, vocab_size)`` float logits and a new :class:`KVCache`
            holding prefix + ``input_ids``.

        Raises:
            ValueError: mismatched shapes, or a position id outside ``[0, max_seq_len)``.
        """
        hidden, cache = self.hidden_states(input_ids, attention_mask, position_ids, kv_cache)
        return F.linear(hidden, self.tok_emb.weight), cache

    def values(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
    ) -> Tensor:
        """Scalar value per position, ``(B, T)`` float, from the value head (with grad).

        The same trunk and masking as :meth:`forward`. Raises ``RuntimeError`` if the model was
        built without ``value_head=True``.
        """
        if self.value_head is None:
            raise RuntimeError(
                "this CausalTransformer has no value head; build it with "
                "CausalTransformer(config, value_head=True) to use values()"
            )
        hidden, _ = self.hidden_states(input_ids, attention_mask, position_ids)
        out: Tensor = self.value_head(hidden).squeeze(-1)
        return out

    def hidden_states(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> tuple[Tensor, KVCache]:
        """Final-LayerNorm hidden states ``(B, T, d_model)`` and the new cache (see ``forward``)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
        b, t = input_ids.shape
        device = input_ids.device
        if attention_mask is None:
            mask = torch.ones(b, t, dtype=torch.bool, device=device)
        else:
            if attention_mask.shape != input_ids.shape:
                raise ValueError(
                    f"attention_mask shape {tuple(attention_mask.shape)} must equal input_ids "
                    f"shape {tuple(input_ids.shape)}"
                )
            mask = attention_mask.to(device=device, dtype=torch.bool)
        if kv_cache is None:
            past_mask = torch.zeros(b, 0, dtype=torch.bool, device=device)
            base = torch.zeros(b, dtype=torch.long, device=device)
        else:
            if kv_cache.batch_size != b or len(kv_cache.layers) != len(self.blocks):
                raise ValueError(
                    f"kv_cache holds {kv_cache.batch_size} rows and {len(kv_cache.layers)} "
                    f"layers; this call has {b} rows and the model {len(self.blocks)} layers"
                )
            past_mask, base = kv_cache.mask, kv_cache.next_positions
        if position_ids is None:
            position_ids = (base[:, None] + mask.long().cumsum(dim=1) - 1).clamp_min(0)
        elif position_ids.shape != input_ids.shape:
            raise ValueError(
                f"position_ids shape {tuple(position_ids.shape)} must equal input_ids "
                f"shape {tuple(input_ids.shape)}"
            )
        if t > 0:
            lo, hi = int(position_ids.min()), int(position_ids.max())
            if lo < 0 or hi >= self.config.max_seq_len:
                raise ValueError(
                    f"position ids must be in [0, max_seq_len={self.config.max_seq_len}), got "
                    f"[{lo}, {hi}]; shorten the sequence or raise ModelConfig.max_seq_len"
                )

        # (B, 1, T, S) bool, True = may attend: causal, real keys only, and always itself (so
        # a pad query never has an empty row; its output is never used).
        past_len = past_mask.shape[1]
        full_mask = torch.cat((past_mask, mask), dim=1)
        q_idx = torch.arange(past_len, past_len + t, device=device)[:, None]
        k_idx = torch.arange(past_len + t, device=device)[None, :]
        allowed = ((k_idx <= q_idx)[None] & full_mask[:, None, :]) | (k_idx == q_idx)[None]
        attn_mask = allowed[:, None]

        x = self.drop(self.tok_emb(input_ids) + self.pos_emb(position_ids))
        new_layers: list[tuple[Tensor, Tensor]] = []
        for i, block in enumerate(self.blocks):
            past = None if kv_cache is None else kv_cache.layers[i]
            x, kv = block(x, attn_mask, past)
            new_layers.append(kv)
        hidden: Tensor = self.ln_f(x)

        last_real = position_ids.masked_fill(~mask, -1).amax(dim=1) if t > 0 else base - 1
        next_positions = torch.where(mask.any(dim=1), last_real + 1, base)
        return hidden, KVCache(tuple(new_layers), full_mask, next_positions)


@attrs.frozen(eq=False)
class GenerationOutput:
    """What :func:`generate` returns. ``P`` = prompt width, ``R`` = ``max_new_tokens``.

    Attributes:
        sequences: ``(B, P + R)`` long, the (left-padded) prompt followed by the response.
        attention_mask: ``(B, P + R)`` long, the prompt mask followed by ``response_mask``;
            pass it with ``sequences`` to :func:`sequence_log_probs`.
        response: ``(B, R)`` long, sampled ids; ``pad_id`` after a row's EOS.
        response_mask: ``(B, R)`` long, 1 up to and including the first EOS, 0 after (all 1
            for a row that never emitted EOS).
        log_probs: ``(B, R)`` float32, log-probability of each sampled token under the sampling
            distribution ``softmax(logits / temperature)``; 0 where ``response_mask`` is 0.
    """

    sequences: Tensor
    attention_mask: Tensor
    response: Tensor
    response_mask: Tensor
    log_probs: Tensor

    @property
    def response_lengths(self) -> Tensor:
        """``(B,)`` long, number of valid response tokens per row (EOS included)."""
        return self.response_mask.sum(dim=1)


def _check_prompts(prompt_ids: Tensor, prompt_mask: Tensor) -> None:
    if prompt_ids.dim() != 2 or prompt_ids.shape[1] == 0:
        raise ValueError(f"prompt_ids must be (B, P) with P >= 1, got {tuple(prompt_ids.shape)}")
    if prompt_mask.shape != prompt_ids.shape:
        raise ValueError(
            f"prompt_mask shape {tuple(prompt_mask.shape)} must equal prompt_ids "
            f"shape {tuple(prompt_ids.shape)}"
        )
    bad = (~prompt_mask[:, -1].bool()).nonzero().flatten().tolist()
    if bad:
        raise ValueError(
            f"prompts must be left-padded and non-empty: the last column of prompt_mask is 0 "
            f"in rows {bad[:10]}"
        )


def generate(
    model: CausalLM,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    eos_id: int,
    pad_id: int,
    greedy: bool = False,
) -> GenerationOutput:
    """Sample up to ``max_new_tokens`` response tokens per prompt, with a KV cache.

    One forward over the prompts, then one token per step; stops early once every row has
    emitted ``eos_id`` (the rest of the response is ``pad_id`` with mask 0, so the output is
    always ``R = max_new_tokens`` wide). Runs under ``torch.no_grad()`` and leaves the model's
    train/eval mode alone (use dropout 0 or ``model.eval()`` for PPO).

    Args:
        model: the policy.
        prompt_ids: ``(B, P)`` **left-padded** prompts; every row needs a real last token.
        prompt_mask: ``(B, P)``, nonzero on real tokens.
        max_new_tokens: ``R >= 1``.
        temperature: ``> 0``; sampling (and the reported log-probs) use
            ``softmax(logits / temperature)``.
        generator: the source of randomness for sampling (``None``: torch's global RNG).
        eos_id: the id that ends a response (kept, with mask 1).
        pad_id: the id written after EOS.
        greedy: take the arg-max token instead of sampling; ``log_probs`` still reports the
            tokens' log-probabilities under ``softmax(logits / temperature)``.

    Raises:
        ValueError: bad shapes, prompts not left-padded, ``max_new_tokens < 1`` or a
            non-positive temperature.
    """
    _check_prompts(prompt_ids, prompt_mask)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens!r}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    b, _ = prompt_ids.shape
    device = prompt_ids.device
    response = torch.full((b, max_new_tokens), pad_id, dtype=torch.long, device=device)
    response_mask = torch.zeros(b, max_new_tokens, dtype=torch.long, device=device)
    log_probs = torch.zeros(b, max_new_tokens, dtype=torch.float32, device=device)
    finished = torch.zeros(b, dtype=torch.bool, device=device)
    with torch.no_grad():
        logits, cache = model(prompt_ids, attention_mask=prompt_mask)
        next_logits = logits[:, -1, :]
        for step in range(max_new_tokens):
            logp = torch.log_softmax(next_logits.float() / temperature, dim=-1)
            if greedy:
                token = logp.argmax(dim=-1)
            else:
                token = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(1)
            token_logp = logp.gather(1, token[:, None]).squeeze(1)
            active = ~finished
            token = torch.where(active, token, pad_id)
            response[:, step] = token
            response_mask[:, step] = active.long()
            log_probs[:, step] = torch.where(active, token_logp, 0.0)
            finished = finished | (active & (token == eos_id))
            if step == max_new_tokens - 1 or bool(finished.all()):
                break
            logits, cache = model(token[:, None], attention_mask=active[:, None], kv_cache=cache)
            next_logits = logits[:, -1, :]
    return GenerationOutput(
        sequences=torch.cat((prompt_ids.long(), response), dim=1),
        attention_mask=torch.cat((prompt_mask.long(), response_mask), dim=1),
        response=response,
        response_mask=response_mask,
        log_probs=log_probs,
    )


def sequence_log_probs(
    model: CausalLM,
    input_ids: Tensor,
    attention_mask: Tensor,
    response_len: int,
    temperature: float = 1.0,
    *,
    with_entropy: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Log-probs of the last ``response_len`` tokens given everything before them, with grad.

    ``input_ids`` is prompt + response as :func:`generate` lays it out (left-padded prompt,
    response right-padded after EOS) and ``attention_mask`` its mask. Token ``t`` of the
    response is scored by the logits at the position before it, scaled by ``1 / temperature``.

    Returns:
        ``(log_probs, entropy)``: ``(B, R)`` float32 log-probabilities, and with
        ``with_entropy`` the ``(B, R)`` entropy of each scaled next-token distribution
        (``logsumexp(l) - sum(softmax(l) * l)``, stable for any finite logits), else ``None``.
        Both are 0 where the response part of ``attention_mask`` is 0.

    Raises:
        ValueError: ``response_len`` not in ``[1, T)``, mismatched shapes, or a non-positive
            temperature.
    """
    if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"input_ids (B, T) and attention_mask must have one shape, got "
            f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}"
        )
    t = input_ids.shape[1]
    if not 1 <= response_len < t:
        raise ValueError(
            f"response_len must be in [1, {t}) for sequences of length {t}, got {response_len!r}"
        )
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    logits, _ = model(input_ids, attention_mask=attention_mask)
    scaled = logits[:, t - response_len - 1 : t - 1, :].float() / temperature
    targets = input_ids[:, t - response_len :].long()
    valid = attention_mask[:, t - response_len :].bool()
    log_z = torch.logsumexp(scaled, dim=-1)
    log_probs = scaled.gather(-1, targets[..., None]).squeeze(-1) - log_z
    log_probs = torch.where(valid, log_probs, 0.0)
    entropy: Tensor | None = None
    if with_entropy:
        probs = torch.softmax(scaled, dim=-1)
        entropy = torch.where(valid, log_z - (probs * scaled).sum(dim=-1), 0.0)
    return log_probs, entropy
