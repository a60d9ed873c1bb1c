"""The rollout seam: a :class:`RolloutEngine` Protocol an inference engine fills, and
:class:`HFRolloutEngine`, its implementation on Hugging Face ``generate``.

The trainer's actor worker asks an engine for responses and never looks inside it::

    engine.load_weights(named_tensors, version=3)      # or a no-op when it shares the module
    out = engine.generate(PromptBatch(ids, mask, seeds), SamplingParams(temperature=1.0))
    out.responses, out.response_mask, out.log_probs     # (B, R) each

Contract every engine keeps (``docs/rollout-engines.md`` shows how vLLM or SGLang fit it):

* prompts arrive **left-padded** with their mask; the output is always ``R =
  max_new_tokens`` wide: the response, then ``pad_id`` after the first EOS (kept, mask 1);
* ``log_probs`` are the log-probabilities of the chosen tokens under
  ``softmax(logits / temperature)`` of the *full* vocabulary (top-k / top-p shape what is
  sampled, not what is reported), so they match the trainer's own forward pass on the same
  tokens (a test holds them to 1e-4 in float32);
* row ``i`` is sampled from its own seed ``seeds[i]`` alone: a sample does not depend on the
  batch it was generated in, nor on the rank, so runs reproduce;
* ``weights_version`` is the policy version the last :meth:`RolloutEngine.load_weights` installed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import attrs
import torch
from torch import Tensor
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, PreTrainedModel
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

__all__ = [
    "HFRolloutEngine",
    "PromptBatch",
    "RolloutEngine",
    "RolloutOutput",
    "SamplingParams",
]


@attrs.frozen(kw_only=True)
class SamplingParams:
    """How to sample. ``top_k = 0`` and ``top_p = 1`` disable those filters; ``greedy`` takes
    the arg-max (log-probs are still reported under the tempered distribution)."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    greedy: bool = False

    def __attrs_post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k!r}")


@attrs.frozen(kw_only=True, eq=False)
class PromptBatch:
    """Left-padded prompts ``(B, P)`` with their mask, and one sampling seed per row."""

    ids: Tensor
    mask: Tensor
    seeds: Tensor

    def __attrs_post_init__(self) -> None:
        if self.ids.dim() != 2 or self.ids.shape[1] == 0 or self.mask.shape != self.ids.shape:
            raise ValueError(
                f"prompt ids and mask must both be (B, P) with P >= 1, got "
                f"{tuple(self.ids.shape)} and {tuple(self.mask.shape)}"
            )
        if self.seeds.shape != (self.ids.shape[0],):
            raise ValueError(f"need one seed per row, got seeds of shape {tuple(self.seeds.shape)}")
        bad = (~self.mask[:, -1].bool()).nonzero().flatten().tolist()
        if bad:
            raise ValueError(
                f"prompts must be left-padded and non-empty: rows {bad[:10]} end in padding"
            )


@attrs.frozen(kw_only=True, eq=False)
class RolloutOutput:
    """``sequences``/``attention_mask`` ``(B, P + R)`` (prompt then response, ready for the
    training forward); ``responses``/``response_mask``/``log_probs`` ``(B, R)``."""

    sequences: Tensor
    attention_mask: Tensor
    responses: Tensor
    response_mask: Tensor
    log_probs: Tensor


@runtime_checkable
class RolloutEngine(Protocol):
    """What the actor needs of an inference engine (see the module docstring's contract)."""

    @property
    def weights_version(self) -> int:
        """The policy version the engine's weights come from."""
        ...

    def load_weights(self, weights: Iterable[tuple[str, Tensor]], *, version: int) -> None:
        """Install the trainer's parameters (names as in the trainer's ``state_dict``)."""
        ...

    def generate(self, prompts: PromptBatch, params: SamplingParams) -> RolloutOutput:
        """Sample one response per prompt row."""
        ...

    def sleep(self) -> None:
        """Release what generation holds (KV cache, weight copies) while the trainer trains."""
        ...

    def wake_up(self) -> None:
        """Undo :meth:`sleep` before the next :meth:`generate`."""
        ...


class _SeededSampler(LogitsProcessor):
    """Samples each row from its own pre-drawn uniforms (inverse CDF), after top-k / top-p,
    and returns scores that make greedy search pick exactly that token."""

    def __init__(self, uniforms: Tensor, prompt_len: int, params: SamplingParams) -> None:
        self.uniforms = uniforms
        self.prompt_len = prompt_len
        self.temperature = params.temperature
        self.warpers: list[LogitsProcessor] = []
        if params.top_k > 0:
            self.warpers.append(TopKLogitsWarper(top_k=params.top_k))
        if params.top_p < 1:
            self.warpers.append(TopPLogitsWarper(top_p=params.top_p))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_len
        warped = scores.float() / self.temperature
        for warp in self.warpers:
            warped = warp(input_ids, warped)
        cdf = torch.softmax(warped, dim=-1).cumsum(dim=-1)
        u = self.uniforms[:, step : step + 1].to(cdf.device) * cdf[:, -1:]
        token = torch.searchsorted(cdf, u).clamp(max=scores.shape[-1] - 1)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, token, 0.0)
        return out  # type: ignore[return-value]  # FloatTensor is Tensor at run time


class HFRolloutEngine:
    """:class:`RolloutEngine` on ``model.generate`` (KV cache; temperature, top-k, top-p;
    per-row seeds).

    ``shares_weights=True`` (the colocated actor): the engine generates with the trainer's own
    module, so :meth:`load_weights` only records the version; otherwise it copies the given
    tensors into its model. ``sleep``/``wake_up`` are no-ops: ``generate`` keeps no state
    between calls.
    """

    def __init__(
        self, model: PreTrainedModel, *, eos_id: int, pad_id: int, shares_weights: bool
    ) -> None:
        self.model = model
        self.eos_id = eos_id
        self.pad_id = pad_id
        self.shares_weights = shares_weights
        self._version = 0

    @property
    def weights_version(self) -> int:
        return self._version

    def load_weights(self, weights: Iterable[tuple[str, Tensor]], *, version: int) -> None:
        if not self.shares_weights:
            self.model.load_state_dict(dict(weights), strict=True)
        self._version = version

    def sleep(self) -> None:
        return None

    def wake_up(self) -> None:
        return None

    def generate(self, prompts: PromptBatch, params: SamplingParams) -> RolloutOutput:
        device = next(self.model.parameters()).device
        ids, mask = prompts.ids.to(device), prompts.mask.to(device)
        p = ids.shape[1]
        r = params.max_new_tokens
        processors = LogitsProcessorList()
        if not params.greedy:
            processors.append(_SeededSampler(_row_uniforms(prompts.seeds, r), p, params))
        config = GenerationConfig(
            max_new_tokens=r,
            do_sample=False,
            num_beams=1,
            eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
            output_logits=True,
            return_dict_in_generate=True,
            use_cache=True,
        )
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                out = self.model.generate(  # type: ignore[operator]  # generate is untyped
                    input_ids=ids,
                    attention_mask=mask,
                    generation_config=config,
                    logits_processor=processors,
                )
        finally:
            self.model.train(was_training)
        return _assemble(ids, mask, out.sequences[:, p:], out.logits, params, self)


def _row_uniforms(seeds: Tensor, width: int) -> Tensor:
    """``(B, width)`` uniforms in [0, 1), row ``i`` drawn from ``seeds[i]`` alone."""
    rows = [
        torch.rand(width, generator=torch.Generator().manual_seed(int(s)), dtype=torch.float64)
        for s in seeds.tolist()
    ]
    return torch.stack(rows).float()


def _assemble(
    ids: Tensor,
    mask: Tensor,
    generated: Tensor,
    logits: tuple[Tensor, ...],
    params: SamplingParams,
    engine: HFRolloutEngine,
) -> RolloutOutput:
    b, r = ids.shape[0], params.max_new_tokens
    responses = torch.full((b, r), engine.pad_id, dtype=torch.long, device=ids.device)
    responses[:, : generated.shape[1]] = generated
    is_eos = responses == engine.eos_id
    seen_before = (is_eos.long().cumsum(dim=1) - is_eos.long()) > 0
    response_mask = (~seen_before).long()
    if generated.shape[1] < r:
        response_mask[:, generated.shape[1] :] = 0
    responses = torch.where(response_mask.bool(), responses, engine.pad_id)
    step_logits = torch.stack(logits, dim=1).float() / params.temperature
    log_probs = torch.zeros(b, r, dtype=torch.float32, device=ids.device)
    width = generated.shape[1]
    chosen = torch.log_softmax(step_logits, dim=-1).gather(-1, responses[:, :width, None])
    log_probs[:, :width] = chosen.squeeze(-1)
    log_probs = log_probs * response_mask
    return RolloutOutput(
        sequences=torch.cat((ids.long(), responses), dim=1),
        attention_mask=torch.cat((mask.long(), response_mask), dim=1),
        responses=responses,
        response_mask=response_mask,
        log_probs=log_probs,
    )
