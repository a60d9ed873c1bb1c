"""The trainer's workers: plain classes (no base class) with registered methods.

* :class:`ActorRolloutWorker`: the policy (a Hugging Face causal LM), its rollout engine
  (:class:`~ppo.rollout.HFRolloutEngine` over the same module), log-probs, the PPO update, an
  optional frozen reference copy, checkpoints and the Hugging Face export.
* :class:`CriticWorker`: a value model (the backbone with a one-label token-classification
  head) for GAE.
* :class:`RewardWorker`: hosts a :class:`~ppo.scoring.Scorer` (by default the per-sample
  reward function) and turns its scores into token-level scores.

A user replaces any of them with a subclass or an own class that has the same registered
methods (``PPOTrainer(..., actor_spec=WorkerSpec.of(MyActor, ...))``).

Constructors only build objects: the process-wide set-up (torch threads, the
``torch.distributed`` group) happens in the registered :meth:`ActorRolloutWorker.init_distributed`
the trainer calls explicitly. Each worker takes its device from the injected context
(:func:`ppo.parallel.worker_device`).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ppo import columns as C
from ppo.algos import agg_loss, get_policy_loss, kl_penalty, value_loss
from ppo.config import AlgorithmConfig, PPOConfig
from ppo.dataflow import UPDATE_COLUMNS, joined
from ppo.group_advantages import with_group_advantages
from ppo.lm import (
    autocast,
    build_critic,
    build_policy,
    copy_backbone,
    cpu_state_dict,
    save_pretrained,
    sequence_log_probs,
    token_values,
)
from ppo.parallel import DataParallelTrainer, join_process_group, micro_batches, worker_device
from ppo.pipeline import FLAT_WEIGHTS, PUBLISH_S, flat_weights, generate_rollout
from ppo.rollout import HFRolloutEngine
from ppo.scoring import Scorer, check_scores
from ppo.tasks import TaskExample
from ppo.tokenizer import Tokenizer
from ppo.warmup import supervised_warmup
from runtime import Batch, Dispatch, current_context, register

__all__ = ["ActorRolloutWorker", "CriticWorker", "RewardWorker"]

#: The file names inside a checkpoint's ``actor/`` and ``critic/`` directories, next to the
#: ``save_pretrained`` files (``config.json``, ``model.safetensors``).
OPTIMIZER_FILE = "optimizer.pt"
REFERENCE_FILE = "reference.safetensors"


def _rank_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1009 + current_context().rank)


def _meta_number(batch: Batch, key: str, default: float) -> float:
    value = batch.meta.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"batch.meta[{key!r}] must be a number, got {value!r}")
    return float(value)


def _response_len(batch: Batch) -> int:
    return int(batch.tensors[C.RESPONSE_MASK].shape[1])


def _special_ids(tokenizer: Tokenizer) -> dict[str, int]:
    return {"eos_token_id": tokenizer.eos_id, "pad_token_id": tokenizer.pad_id}


def _mean_stats(items: Sequence[Mapping[str, float]]) -> dict[str, float]:
    keys = sorted({k for m in items for k in m})
    return {k: float(np.mean([m[k] for m in items if k in m])) for k in keys}


def _save_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(optimizer.state_dict(), fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class ActorRolloutWorker:
    """Policy + rollout engine (+ reference) on one rank. Build it through a WorkerGroup."""

    def __init__(self, config: PPOConfig, tokenizer: Tokenizer) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.device = worker_device()
        data = config.data
        self.model = build_policy(
            config.model,
            vocab_size=tokenizer.vocab_size,
            special_ids=_special_ids(tokenizer),
            max_positions=data.max_prompt_len + data.max_response_len,
            seed=config.trainer.seed,
            device=self.device,
        )
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.actor.lr, weight_decay=config.actor.weight_decay
        )
        self.engine = HFRolloutEngine(
            self.model, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id, shares_weights=True
        )
        self.reference: nn.Module | None = None
        self.policy_loss = get_policy_loss(config.actor.policy_loss)
        self.world_size = 1
        self._dp: DataParallelTrainer | None = None

    # --------------------------------------------------------------- set-up
    @register(Dispatch.ONE_TO_ALL)
    def init_distributed(self) -> int:
        """Process-wide set-up, explicitly: torch threads (``resources.torch_threads``) and the
        role's ``torch.distributed`` group (gloo/nccl). Returns the data-parallel size."""
        torch.set_num_threads(self.config.resources.torch_threads)
        self.world_size = join_process_group(self.device)
        return self.world_size

    def _trainer(self) -> DataParallelTrainer:
        # Wrapped lazily: DDP broadcasts rank 0's weights, which must already be final
        # (after the warm-up or a resume).
        if self._dp is None:
            self._dp = DataParallelTrainer(self.model, self.optimizer, self.world_size)
        return self._dp

    @register(Dispatch.ONE_TO_ALL)
    def warmup(self, examples: list[TaskExample]) -> float:
        """Supervised warm-up on ``examples`` (same data and seed on every rank, so the ranks
        stay identical); then snapshot the reference policy if KL is used. Returns the last
        loss."""
        cfg = self.config
        losses: list[float] = []
        if cfg.warmup.steps > 0:
            with autocast(self.device, cfg.model.dtype):
                losses = supervised_warmup(
                    self.model,
                    self.tokenizer,
                    examples,
                    steps=cfg.warmup.steps,
                    batch_size=cfg.warmup.batch_size,
                    lr=cfg.warmup.lr,
                    seed=cfg.trainer.seed,
                    max_prompt_len=cfg.data.max_prompt_len,
                    max_response_len=cfg.data.max_response_len,
                    prompt_format=cfg.data.prompt_format,
                )
        self.model.eval()
        self._snapshot_reference()
        return losses[-1] if losses else float("nan")

    def _snapshot_reference(self) -> None:
        if self.config.needs_reference:
            self.reference = copy.deepcopy(self.model).eval()
            for p in self.reference.parameters():
                p.requires_grad_(False)

    @register(Dispatch.RANK_ZERO)
    def policy_state(self) -> dict[str, Tensor]:
        """Rank 0's policy weights (to initialise the critic's backbone)."""
        return cpu_state_dict(self.model)

    @register(Dispatch.DP_COMPUTE_PROTO)
    def publish_weights(self, batch: Batch) -> Batch:
        """One row per input row: this rank's parameters flattened (``flat_weights``), for
        rollout workers in another pool (async training) to fetch from the object store."""
        t0 = time.perf_counter()
        flat = flat_weights(self.model)
        seconds = torch.full((len(batch),), time.perf_counter() - t0, dtype=torch.float64)
        return Batch(
            {FLAT_WEIGHTS: flat[None].expand(len(batch), -1).contiguous(), PUBLISH_S: seconds}
        )

    # --------------------------------------------------------------- rollout
    @register(Dispatch.DP_COMPUTE_PROTO, pad=True)
    def generate(self, batch: Batch) -> Batch:
        """One response per row of ``prompt_ids``/``prompt_mask`` (left padded), row ``i``
        sampled from ``rollout_seed[i]``. ``meta``: ``temperature``, ``greedy``. Returns
        ``input_ids``, ``attention_mask``, ``responses``, ``response_mask``,
        ``rollout_log_probs``."""
        return generate_rollout(self.engine, batch, self.config, self.device)

    def _log_probs(
        self, model: nn.Module, batch: Batch, *, with_entropy: bool
    ) -> tuple[Tensor, Tensor | None]:
        with autocast(self.device, self.config.model.dtype):
            return sequence_log_probs(
                model,
                batch.tensors[C.INPUT_IDS].to(self.device),
                batch.tensors[C.ATTENTION_MASK].to(self.device),
                _response_len(batch),
                self.config.rollout.temperature,
                with_entropy=with_entropy,
            )

    @register(Dispatch.DP_COMPUTE_PROTO, pad=True)
    def compute_log_prob(self, batch: Batch) -> Batch:
        """``old_log_probs`` and ``entropy`` of the responses under the current policy."""
        with torch.no_grad():
            logp, ent = self._log_probs(self.model, batch, with_entropy=True)
        assert ent is not None
        return Batch({C.OLD_LOG_PROBS: logp.cpu(), C.ENTROPY: ent.cpu()})

    @register(Dispatch.DP_COMPUTE_PROTO, pad=True)
    def compute_ref_log_prob(self, batch: Batch) -> Batch:
        """``ref_log_probs`` under the frozen reference policy."""
        if self.reference is None:
            raise RuntimeError(
                "no reference policy: it exists only when algorithm.use_kl_in_reward or "
                "actor.use_kl_loss is set"
            )
        with torch.no_grad():
            logp, _ = self._log_probs(self.reference, batch, with_entropy=False)
        return Batch({C.REF_LOG_PROBS: logp.cpu()})

    # --------------------------------------------------------------- update
    @register(Dispatch.DP_COMPUTE_METRIC)
    def update_policy(self, batch: Batch, *parts: Batch) -> dict[str, float]:
        """PPO epochs over shuffled mini-batches of this rank's shard (DDP over the ranks,
        gradient accumulation over ``actor.micro_batch_size`` rows). Needs ``input_ids``,
        ``attention_mask``, ``response_mask``, ``old_log_probs``, ``advantages`` (and
        ``ref_log_probs`` with the KL loss) in ``batch`` and ``parts`` together (the trainer
        passes the rollout and log-prob results as futures, so each rank fetches its rows);
        ``meta["seed"]`` seeds the shuffle. When the step's advantages are the ranks' to
        compute (:mod:`ppo.group_advantages`), ``batch`` carries the ``uid`` column instead
        and the last of ``parts`` is the reward's result. Returns this rank's mean metrics."""
        batch = _update_batch(batch, parts, self.config.algorithm)
        cfg = self.config.actor
        dp = self._trainer()
        self.model.train()
        gen = _rank_generator(int(_meta_number(batch, C.SEED, 0)))
        horizon = _response_len(batch)
        metrics: list[dict[str, float]] = []
        for _ in range(cfg.ppo_epochs):
            for idx in torch.randperm(len(batch), generator=gen).chunk(cfg.mini_batches):
                mb = batch.select_idxs(idx)
                norm = dp.global_counts(mb.tensors[C.RESPONSE_MASK].to(self.device), horizon)
                n = len(mb)

                def loss_fn(rows: Tensor, mb: Batch = mb, norm: Any = norm, n: int = n) -> Any:
                    return self._policy_loss(mb.select_idxs(rows), norm, len(rows) / n)

                metrics.append(
                    dp.step(
                        micro_batches(torch.arange(n), cfg.micro_batch_size), loss_fn, cfg.grad_clip
                    )
                )
        self.model.eval()
        # Hand the new policy to the rollout engine (recorded only, when it shares the module).
        self.engine.load_weights(
            self.model.state_dict().items(), version=self.engine.weights_version + 1
        )
        out = _mean_stats(metrics)
        out["lr"] = float(self.optimizer.param_groups[0]["lr"])
        return out

    def _policy_loss(self, mb: Batch, norm: Any, weight: float) -> tuple[Tensor, dict[str, float]]:
        """One micro-batch's loss (normalised by the mini-batch's global counts) and its stats
        weighted so that summing over micro-batches gives the mini-batch's value."""
        cfg = self.config.actor
        mask = mb.tensors[C.RESPONSE_MASK].to(self.device)
        # Forward through the DDP wrapper: that is what makes backward all-reduce the gradients.
        logp, ent = self._log_probs(self._trainer().model, mb, with_entropy=cfg.entropy_coeff > 0)
        loss, m = self.policy_loss(
            old_log_prob=mb.tensors[C.OLD_LOG_PROBS].to(self.device),
            log_prob=logp,
            advantages=mb.tensors[C.ADVANTAGES].to(self.device),
            response_mask=mask,
            clip_low=cfg.clip_low,
            clip_high=cfg.clip_high,
            clip_c=cfg.clip_c,
            loss_agg_mode=cfg.loss_agg_mode,
            **norm,
        )
        ws = self.world_size
        stats = {k: v * weight for k, v in m.items()}
        stats["pg_loss"] = float(loss.detach()) * ws
        if ent is not None:
            ent_loss = agg_loss(
                loss_mat=ent, loss_mask=mask, loss_agg_mode=cfg.loss_agg_mode, **norm
            )
            loss = loss - cfg.entropy_coeff * ent_loss
            stats["entropy"] = float(ent_loss.detach()) * ws
        if cfg.use_kl_loss:
            kl = kl_penalty(
                log_prob=logp,
                ref_log_prob=mb.tensors[C.REF_LOG_PROBS].to(self.device),
                kind=cfg.kl_loss_type,
            )
            kl_loss = agg_loss(loss_mat=kl, loss_mask=mask, loss_agg_mode=cfg.loss_agg_mode, **norm)
            loss = loss + cfg.kl_loss_coef * kl_loss
            stats["kl_loss"] = float(kl_loss.detach()) * ws
        return loss, stats

    # --------------------------------------------------------------- checkpoints
    @register(Dispatch.ONE_TO_ALL)
    def save_checkpoint(self, directory: str) -> str | None:
        """Rank 0 writes ``actor/``: the policy as ``save_pretrained`` (config + safetensors),
        ``optimizer.pt`` and the reference as ``reference.safetensors``. The ranks hold the
        same weights, so one copy is enough. Returns the directory written."""
        if current_context().rank != 0:
            return None
        out = Path(directory) / "actor"
        save_pretrained(self.model, out)
        _save_optimizer(self.optimizer, out / OPTIMIZER_FILE)
        if self.reference is not None:
            save_file(cpu_state_dict(self.reference), str(out / REFERENCE_FILE))
        return str(out)

    @register(Dispatch.ONE_TO_ALL)
    def load_checkpoint(self, directory: str) -> None:
        """Restore what :meth:`save_checkpoint` wrote."""
        src = Path(directory) / "actor"
        _load_weights(self.model, src)
        self.optimizer.load_state_dict(
            torch.load(src / OPTIMIZER_FILE, map_location=self.device, weights_only=True)
        )
        if (src / REFERENCE_FILE).is_file():
            self._snapshot_reference()
            assert self.reference is not None
            self.reference.load_state_dict(load_file(str(src / REFERENCE_FILE)))
        self.model.eval()

    @register(Dispatch.ONE_TO_ALL)
    def export_pretrained(self, directory: str) -> str | None:
        """Rank 0 writes the policy with ``save_pretrained`` (and the tokenizer) into
        ``directory``: ``AutoModelForCausalLM.from_pretrained`` loads it."""
        if current_context().rank != 0:
            return None
        save_pretrained(self.model, Path(directory))
        self.tokenizer.save_pretrained(directory)
        return directory


def _update_batch(
    batch: Batch, parts: Sequence[Batch], algorithm: AlgorithmConfig | None = None
) -> Batch:
    """The update's columns (:data:`ppo.dataflow.UPDATE_COLUMNS` present) and meta. Without
    ``advantages`` from the driver, and given the ``algorithm``, this rank computes its
    groups' advantages from the uids in ``batch`` and the scores in the last part (the
    reward's result, :mod:`ppo.group_advantages`)."""
    if algorithm is not None and C.ADVANTAGES not in batch.tensors:
        if not parts or C.SCORE not in parts[-1].tensors:
            raise ValueError(
                "update_policy: the batch has no 'advantages' column and its last part has no "
                "'score' column to compute them from; pass the driver's advantages, or the "
                "reward's result as the last part (see ppo.group_advantages)"
            )
        *parts, scored = parts
        whole = joined(batch, parts).union(scored.select(tensor_keys=[C.SCORE], non_tensor_keys=[]))
        whole = with_group_advantages(whole, algorithm)
    else:
        whole = joined(batch, parts)
    keys = [k for k in UPDATE_COLUMNS if k in whole.tensors]
    return whole.select(tensor_keys=keys, non_tensor_keys=[])


def _load_weights(model: nn.Module, directory: Path) -> None:
    files = sorted(directory.glob("*.safetensors"))
    files = [f for f in files if f.name != REFERENCE_FILE]
    if not files:
        raise FileNotFoundError(f"{directory} holds no model weights (*.safetensors)")
    state: dict[str, Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied weights (lm_head = embed_tokens) are saved once; anything else missing is an error.
    tied = {k for k in missing if k.endswith("lm_head.weight")}
    if unexpected or set(missing) - tied:
        raise ValueError(
            f"checkpoint {directory} does not fit the model: missing={sorted(missing)[:5]} "
            f"unexpected={sorted(unexpected)[:5]}"
        )


class CriticWorker:
    """Value model on one rank: the backbone with a one-label token-classification head."""

    def __init__(self, config: PPOConfig, tokenizer: Tokenizer) -> None:
        self.config = config
        self.device = worker_device()
        data = config.data
        self.model = build_critic(
            config.model,
            config.critic.model.path,
            vocab_size=tokenizer.vocab_size,
            special_ids=_special_ids(tokenizer),
            max_positions=data.max_prompt_len + data.max_response_len,
            seed=config.trainer.seed + 1,
            device=self.device,
        )
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.critic.lr)
        self.world_size = 1
        self._dp: DataParallelTrainer | None = None

    @register(Dispatch.ONE_TO_ALL)
    def init_distributed(self) -> int:
        """Join the role's process group (shared with a fused actor); returns the DP size."""
        torch.set_num_threads(self.config.resources.torch_threads)
        self.world_size = join_process_group(self.device)
        return self.world_size

    @register(Dispatch.ONE_TO_ALL)
    def init_from_policy(self, state: dict[str, Tensor]) -> None:
        """Copy the policy's backbone (the value head keeps its own initialisation); skipped
        when ``critic.model.path`` gives the critic its own weights."""
        if self.config.critic.model.path is not None:
            return
        copy_backbone(state, self.model)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.config.critic.lr)

    def _values(self, batch: Batch, model: nn.Module | None = None) -> Tensor:
        with autocast(self.device, self.config.model.dtype):
            values = token_values(
                model if model is not None else self.model,
                batch.tensors[C.INPUT_IDS].to(self.device),
                batch.tensors[C.ATTENTION_MASK].to(self.device),
                _response_len(batch),
            )
        return values * batch.tensors[C.RESPONSE_MASK].to(self.device)

    @register(Dispatch.DP_COMPUTE_PROTO, pad=True)
    def compute_values(self, batch: Batch) -> Batch:
        """``values`` (B, R): the value of the state before each response token."""
        with torch.no_grad():
            return Batch({C.VALUES: self._values(batch).cpu()})

    @register(Dispatch.DP_COMPUTE_METRIC)
    def update_critic(self, batch: Batch, *parts: Batch) -> dict[str, float]:
        """Clipped value regression onto ``returns`` (DDP over the ranks); ``batch`` and
        ``parts`` together hold the columns, as for :meth:`ActorRolloutWorker.update_policy`."""
        batch = _update_batch(batch, parts)
        cfg = self.config.critic
        if self._dp is None:
            self._dp = DataParallelTrainer(self.model, self.optimizer, self.world_size)
        dp = self._dp
        self.model.train()
        gen = _rank_generator(int(_meta_number(batch, C.SEED, 0)) + 7)
        metrics: list[dict[str, float]] = []
        for _ in range(cfg.ppo_epochs):
            for idx in torch.randperm(len(batch), generator=gen).chunk(cfg.mini_batches):
                mb = batch.select_idxs(idx)
                norm = dp.global_counts(
                    mb.tensors[C.RESPONSE_MASK].to(self.device), _response_len(batch)
                )
                n = len(mb)

                def loss_fn(rows: Tensor, mb: Batch = mb, norm: Any = norm, n: int = n) -> Any:
                    return self._value_loss(mb.select_idxs(rows), norm, len(rows) / n)

                metrics.append(
                    dp.step(
                        micro_batches(torch.arange(n), cfg.micro_batch_size), loss_fn, cfg.grad_clip
                    )
                )
        self.model.eval()
        return _mean_stats(metrics)

    def _value_loss(self, mb: Batch, norm: Any, weight: float) -> tuple[Tensor, dict[str, float]]:
        loss, m = value_loss(
            vpreds=self._values(mb, self._dp.model if self._dp is not None else None),
            values=mb.tensors[C.VALUES].to(self.device),
            returns=mb.tensors[C.RETURNS].to(self.device),
            response_mask=mb.tensors[C.RESPONSE_MASK].to(self.device),
            cliprange_value=self.config.critic.cliprange_value,
            loss_agg_mode="token-mean",
            **norm,
        )
        stats = {k: v * weight for k, v in m.items()}
        stats["vf_loss"] = float(loss.detach()) * self.world_size
        return loss, stats

    @register(Dispatch.ONE_TO_ALL)
    def save_checkpoint(self, directory: str) -> str | None:
        """Rank 0 writes ``critic/`` (``save_pretrained`` + ``optimizer.pt``)."""
        if current_context().rank != 0:
            return None
        out = Path(directory) / "critic"
        save_pretrained(self.model, out)
        _save_optimizer(self.optimizer, out / OPTIMIZER_FILE)
        return str(out)

    @register(Dispatch.ONE_TO_ALL)
    def load_checkpoint(self, directory: str) -> None:
        src = Path(directory) / "critic"
        _load_weights(self.model, src)
        self.optimizer.load_state_dict(
            torch.load(src / OPTIMIZER_FILE, map_location=self.device, weights_only=True)
        )
        self.model.eval()


class RewardWorker:
    """Hosts a :class:`~ppo.scoring.Scorer`: decodes the responses, asks the scorer for a
    ``score`` (and optionally ``acc``) per row, and hands the controller the few rollout
    columns it needs (it never receives the token ids)."""

    def __init__(self, scorer: Scorer, tokenizer: Tokenizer) -> None:
        self.scorer = scorer
        self.tokenizer = tokenizer

    @register(Dispatch.DP_COMPUTE_PROTO, pad=True)
    def compute_score(self, batch: Batch, *parts: Batch) -> Batch:
        """``score`` (B,), ``acc`` (B,), ``response_mask`` (B, R) as bool, ``ends_with_eos``
        (B,) and the rollout columns named in ``meta["return_columns"]``: what the controller
        computes advantages and metrics from. Needs ``responses``, ``response_mask`` and the
        example columns (``prompt``, ``answer``, ``data_source``, ``metadata``) in ``batch``
        and ``parts`` together (the trainer passes the prompts and the rollout's future)."""
        batch = joined(batch, parts)
        responses = batch.tensors[C.RESPONSES]
        mask = batch.tensors[C.RESPONSE_MASK]
        texts = [
            self.tokenizer.decode(responses[i][mask[i].bool()].tolist()) for i in range(len(batch))
        ]
        with_text = batch.union(Batch({}, {C.RESPONSE_TEXT: np.array(texts, dtype=object)}))
        scored = self.scorer.score(with_text)
        scores, acc = check_scores(scored, with_text)
        returned = batch.meta.get(C.RETURN_COLUMNS, [])
        if not isinstance(returned, list | tuple):
            raise TypeError(
                f"batch.meta[{C.RETURN_COLUMNS!r}] must list column names, got {returned!r}"
            )
        return Batch(
            {
                C.SCORE: scores,
                C.ACC: acc,
                C.RESPONSE_MASK: mask.bool(),
                C.ENDS_WITH_EOS: responses[:, -1] == self.tokenizer.eos_id,
                **{str(k): batch.tensors[str(k)] for k in returned},
            }
        )
