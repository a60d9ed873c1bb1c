"""Asynchronous rollouts: a rollout role in its own pool, versioned weight sync through the
backend, and a pipeline that keeps generation ``async.max_staleness`` steps ahead of training.

How one step ``k`` runs with staleness ``s`` (``trainer.mode = "async"``):

1. :meth:`RolloutPipeline.fill` submits generation for every step up to ``k + s`` that is not
   in flight yet; the prompts of a step are drawn when its generation is submitted.
2. :meth:`RolloutPipeline.take` hands over step ``k``'s prompts and the *future* of its
   responses (the trainer chains the scoring and log-prob calls on it, see
   :mod:`ppo.dataflow`); meanwhile the rollout workers already generate steps ``k + 1 .. k + s``.
3. The trainer scores, recomputes the *proximal* log-probs under its current policy, checks the
   bound (:meth:`RolloutPipeline.check`), corrects for the behaviour/proximal gap with
   truncated importance weights (decoupled PPO, :func:`ppo.algos.truncated_importance_weights`)
   and updates.
4. :meth:`RolloutPipeline.publish` ships the new policy (version ``k``) to the rollout workers.

The bound holds by construction, whatever the timing: the rollout workers run their calls in
submission order (every backend keeps one caller's calls to a rank in order), and step
``k + s``'s generation is submitted after the weights of version ``k - 1`` (step ``k``'s fill
comes after step ``k - 1``'s publish). So a batch trained at version ``k - 1`` was generated
with version ``>= k - 1 - s``; every sample carries its ``policy_version``, and :meth:`check`
checks the bound. ``s = 0`` is on-policy and reproduces the synchronous trainer exactly.

Weights never pass through the driver: the actor's ranks publish their flattened parameters as
a one-row batch each, and the rollout workers receive a slice of the *future* of that batch,
each fetching only rank 0's row from the backend's object store. Each rollout rank reports how
long installing took and how many bytes it received; :meth:`RolloutPipeline.sync_metrics`
collects those reports once they are certainly done (without waiting on generation).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

import attrs
import torch
from torch import Tensor

from ppo import columns as C
from ppo.config import PPOConfig
from ppo.lm import autocast, build_policy
from ppo.parallel import worker_device
from ppo.rollout import HFRolloutEngine, PromptBatch, RolloutEngine, SamplingParams
from ppo.tokenizer import Tokenizer
from runtime import Batch, BatchFuture, Dispatch, GroupFuture, WorkerGroup, register

__all__ = [
    "POLICY_VERSION",
    "PUBLISH_S",
    "RolloutPipeline",
    "RolloutWorker",
    "StalenessError",
    "flat_weights",
    "generate_rollout",
    "load_flat",
]

#: Column ``(B,)`` long: the policy version that generated each sample.
POLICY_VERSION = "policy_version"
#: Column ``(1, N)``: all parameters of one actor rank, flattened in ``state_dict`` order.
FLAT_WEIGHTS = "flat_weights"
#: Column ``(1,)`` float: seconds the actor rank took to flatten its weights.
PUBLISH_S = "publish_s"


def flat_weights(model: torch.nn.Module) -> Tensor:
    """Every tensor of ``model.state_dict()`` (tied ones once), flattened into one float32
    vector (CPU)."""
    seen: set[int] = set()
    parts: list[Tensor] = []
    for tensor in model.state_dict().values():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        parts.append(tensor.detach().reshape(-1).float().cpu())
    return torch.cat(parts)


def load_flat(model: torch.nn.Module, flat: Tensor) -> list[tuple[str, Tensor]]:
    """The named tensors of ``model.state_dict()`` filled from ``flat`` (the layout of
    :func:`flat_weights`); tied tensors get the same values."""
    state = model.state_dict()
    unique = {t.data_ptr(): t.numel() for t in state.values()}
    if sum(unique.values()) != flat.numel():
        raise ValueError(
            f"weights of {flat.numel()} values do not fit a model of {sum(unique.values())}"
        )
    out: list[tuple[str, Tensor]] = []
    by_ptr: dict[int, Tensor] = {}
    offset = 0
    for name, tensor in state.items():
        if tensor.data_ptr() not in by_ptr:
            n = tensor.numel()
            by_ptr[tensor.data_ptr()] = flat[offset : offset + n].view_as(tensor).to(tensor.dtype)
            offset += n
        out.append((name, by_ptr[tensor.data_ptr()]))
    return out


class RolloutWorker:
    """A rollout rank in its own process: a copy of the policy behind an
    :class:`~ppo.rollout.HFRolloutEngine` that does not share the trainer's module."""

    def __init__(self, config: PPOConfig, tokenizer: Tokenizer) -> None:
        self.config = config
        self.device = worker_device()
        data = config.data
        model = build_policy(
            config.model,
            vocab_size=tokenizer.vocab_size,
            special_ids={"eos_token_id": tokenizer.eos_id, "pad_token_id": tokenizer.pad_id},
            max_positions=data.max_prompt_len + data.max_response_len,
            seed=config.trainer.seed,
            device=self.device,
        )
        self.engine = HFRolloutEngine(
            model, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id, shares_weights=False
        )

    @register(Dispatch.ONE_TO_ALL)
    def init_threads(self) -> None:
        """Process-wide set-up, explicitly: torch threads (``resources.torch_threads``)."""
        torch.set_num_threads(self.config.resources.torch_threads)

    @register(Dispatch.ONE_TO_ALL)
    def load_weights(self, weights: Batch, version: int) -> dict[str, float]:
        """Install row 0 of ``weights`` (``flat_weights``) as policy ``version``. Returns
        ``version``, ``bytes`` (of ``weights`` received), ``install_s`` and the actor's
        ``publish_s``."""
        t0 = time.perf_counter()
        flat = weights.tensors[FLAT_WEIGHTS][0]
        self.engine.load_weights(load_flat(self.engine.model, flat), version=version)
        publish = weights.tensors.get(PUBLISH_S)
        return {
            "version": float(version),
            "bytes": float(sum(t.numel() * t.element_size() for t in weights.tensors.values())),
            "install_s": time.perf_counter() - t0,
            "publish_s": float(publish[0]) if publish is not None else 0.0,
        }

    @register(Dispatch.DP_COMPUTE_PROTO, pad=True)
    def generate(self, batch: Batch) -> Batch:
        """As :meth:`ppo.workers.ActorRolloutWorker.generate`, plus ``policy_version``."""
        out = generate_rollout(self.engine, batch, self.config, self.device)
        version = torch.full((len(batch),), self.engine.weights_version, dtype=torch.long)
        return out.union(Batch({POLICY_VERSION: version}))


def generate_rollout(
    engine: RolloutEngine, batch: Batch, config: PPOConfig, device: torch.device
) -> Batch:
    """One rank's rollout: a response per row of ``prompt_ids``/``prompt_mask`` (left padded),
    row ``i`` sampled from ``rollout_seed[i]``; ``meta`` may set ``temperature`` and
    ``greedy``. Returns ``input_ids``, ``attention_mask``, ``responses``, ``response_mask`` and
    ``rollout_log_probs`` (CPU)."""
    rc = config.rollout
    temperature = batch.meta.get(C.TEMPERATURE, rc.temperature)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise TypeError(f"batch.meta[{C.TEMPERATURE!r}] must be a number, got {temperature!r}")
    params = SamplingParams(
        max_new_tokens=config.data.max_response_len,
        temperature=float(temperature),
        top_p=rc.top_p,
        top_k=rc.top_k,
        greedy=bool(batch.meta.get(C.GREEDY, False)),
    )
    prompts = PromptBatch(
        ids=batch.tensors[C.PROMPT_IDS],
        mask=batch.tensors[C.PROMPT_MASK],
        seeds=batch.tensors[C.ROLLOUT_SEED],
    )
    with autocast(device, config.model.dtype):
        out = engine.generate(prompts, params)
    return Batch(
        {
            C.INPUT_IDS: out.sequences.cpu(),
            C.ATTENTION_MASK: out.attention_mask.cpu(),
            C.RESPONSES: out.responses.cpu(),
            C.RESPONSE_MASK: out.response_mask.cpu(),
            C.ROLLOUT_LOG_PROBS: out.log_probs.cpu(),
        }
    )


class StalenessError(RuntimeError):
    """A batch was generated by a policy more versions behind than ``async.max_staleness``."""


@attrs.define
class _InFlight:
    prompts: Batch
    future: BatchFuture
    sampler_state: dict[str, int]


@attrs.define
class _Sync:
    version: int
    reports: GroupFuture[list[dict[str, float]]]


class RolloutPipeline:
    """Keeps generation up to ``max_staleness`` steps ahead of training (module docstring).

    ``make_prompts(step) -> (batch, gen_input, sampler_state_before)`` draws a step's prompts
    and returns them with the rollout's input and the sampler position before the draw.
    """

    def __init__(
        self,
        rollout: WorkerGroup[RolloutWorker],
        publish_weights: Callable[[], BatchFuture],
        make_prompts: Callable[[int], tuple[Batch, Batch, dict[str, int]]],
        *,
        max_staleness: int,
        total_steps: int,
    ) -> None:
        self.rollout = rollout
        self._publish_weights = publish_weights
        self._make_prompts = make_prompts
        self.max_staleness = max_staleness
        self.total_steps = total_steps
        self._in_flight: dict[int, _InFlight] = {}
        self._next = 1
        self._syncs: list[_Sync] = []

    def start(self, step: int, version: int) -> None:
        """Begin (or resume) at ``step`` with the actor's policy ``version``."""
        self._in_flight.clear()
        self._syncs.clear()
        self._next = step
        self.publish(version)

    def publish(self, version: int) -> None:
        """Send the actor's current weights to every rollout rank as ``version``; the rollout
        ranks take them after the generation already queued."""
        weights = self._publish_weights()
        # The runtime resolves a future slice on each consumer rank (object store): every
        # rollout rank fetches actor rank 0's row only.
        reports = self.rollout.submit(
            RolloutWorker.load_weights, cast(Batch, weights.slice_rows([0])), version
        )
        self._syncs.append(_Sync(version, reports))

    def fill(self, step: int) -> None:
        """Submit generation for every step up to ``step + max_staleness`` not yet in flight."""
        last = min(step + self.max_staleness, self.total_steps)
        while self._next <= last:
            batch, gen_in, state = self._make_prompts(self._next)
            future = self.rollout.submit(RolloutWorker.generate, gen_in)
            self._in_flight[self._next] = _InFlight(batch, future, state)
            self._next += 1

    def take(self, step: int) -> tuple[Batch, BatchFuture, dict[str, int]]:
        """Step ``step``'s prompts, the future of their responses (not waited for) and the
        sampler position before they were drawn."""
        item = self._in_flight.pop(step)
        return item.prompts, item.future, item.sampler_state

    def check(self, step: int, batch: Batch, version: int) -> None:
        """Raise :class:`StalenessError` if a row of ``batch`` (its ``policy_version``) is more
        than ``max_staleness`` versions behind the trainer's policy ``version``."""
        oldest = int(batch.tensors[POLICY_VERSION].min())
        if version - oldest > self.max_staleness:
            raise StalenessError(
                f"step {step}: samples from policy version {oldest} would train version "
                f"{version}, more than async.max_staleness={self.max_staleness} behind"
            )

    def sync_metrics(self, step: int) -> dict[str, float]:
        """The latest weight sync known to be finished once step ``step``'s responses exist:
        ``timing_s/weight_sync`` (the actor's flattening plus the slowest rollout rank's
        install) and ``perf/weight_sync_bytes`` (received by all rollout ranks together).
        Version ``v`` is installed before generation of step ``v + max_staleness + 1`` starts
        (calls run in order), so collecting those reports never waits on generation. Empty
        when no sync finished since the last call."""
        done = sorted(
            (s for s in self._syncs if s.version <= step - self.max_staleness - 1),
            key=lambda s: s.version,
        )
        if not done:
            return {}
        self._syncs = [s for s in self._syncs if s.version > done[-1].version]
        reports = done[-1].reports.get()
        for earlier in done[:-1]:
            earlier.reports.get()  # surfaces a failed install
        return {
            "timing_s/weight_sync": max(r["publish_s"] for r in reports)
            + max(r["install_s"] for r in reports),
            "perf/weight_sync_bytes": sum(r["bytes"] for r in reports),
            "async/weights_version_synced": done[-1].version,
        }

    def sampler_state_for(self, step: int) -> dict[str, int] | None:
        """The sampler position before step ``step``'s prompts were drawn (to checkpoint the
        data position without the steps still in flight), or None if not drawn yet."""
        item = self._in_flight.get(step)
        return item.sampler_state if item is not None else None

    def staleness_metrics(self, batch: Batch, version: int) -> dict[str, Any]:
        behind = (version - batch.tensors[POLICY_VERSION]).float()
        return {
            "async/staleness_mean": float(behind.mean()),
            "async/staleness_max": float(behind.max()),
        }
