"""The trainer's workers: plain classes (no base class) with registered methods.

* :class:`ActorRolloutWorker`: the policy; sampling with a KV cache, log-probs, the PPO
  update, an optional frozen reference copy (fused into the same object), checkpoints.
* :class:`CriticWorker`: a value model (policy trunk + scalar head) for GAE.
* :class:`RewardWorker`: a rule-based verifiable reward (or a user reward function).

Data parallelism: the ranks of a role form one ``torch.distributed`` process group (gloo on
CPU, nccl on GPU) set up from the injected :func:`runtime.current_context`; each rank updates
on its shard of every mini-batch, losses are normalised by *global* token/sequence counts and
gradients are summed across ranks, so the update does not depend on how the batch was split.
"""

from __future__ import annotations

import copy
import datetime
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from ppo.algos import (
    AggKwargs,
    agg_loss,
    agg_normalizers,
    get_policy_loss,
    kl_penalty,
    value_loss,
)
from ppo.config import PPOConfig
from ppo.model import CausalTransformer, ModelConfig, generate, sequence_log_probs
from ppo.rewards_check import checked_reward
from ppo.tasks import RewardFn, Task, TaskExample
from ppo.tokenizer import CharTokenizer, Tokenizer
from ppo.warmup import supervised_warmup
from runtime import Batch, Dispatch, current_context, register

__all__ = ["ActorRolloutWorker", "CriticWorker", "RewardWorker", "model_config_for"]


def model_config_for(config: PPOConfig, vocab_size: int) -> ModelConfig:
    """The transformer shape for ``config`` (sequence room for prompt + response + BOS)."""
    m = config.model
    return ModelConfig(
        vocab_size=vocab_size,
        d_model=m.d_model,
        n_layers=m.n_layers,
        n_heads=m.n_heads,
        max_seq_len=config.data.max_prompt_len + config.data.max_response_len + 1,
        dropout=m.dropout,
    )


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


class _DataParallel:
    """Sums tensors and gradients over the role's ranks (a no-op for one rank)."""

    def __init__(self) -> None:
        ctx = current_context()
        self.rank = ctx.rank
        self.world_size = ctx.world_size
        if self.world_size > 1 and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(
                backend,
                init_method=f"tcp://{ctx.master_addr}:{ctx.master_port}",
                rank=ctx.rank,
                world_size=ctx.world_size,
                timeout=datetime.timedelta(seconds=120),
            )

    def sum_(self, t: Tensor) -> Tensor:
        if self.world_size > 1:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def global_counts(self, mask: Tensor, horizon: int) -> AggKwargs:
        """Aggregation normalisers of a mini-batch: valid tokens and sequences summed over
        every rank's shard, and the fixed ``horizon`` (the response width)."""
        counts = agg_normalizers(mask)
        local = [counts["global_tokens"], counts["global_seqs"]]
        totals = self.sum_(torch.tensor(local, dtype=torch.float64))
        return {
            "global_tokens": float(totals[0]),
            "global_seqs": float(totals[1]),
            "horizon": horizon,
        }

    def step(
        self,
        loss: Tensor,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        grad_clip: float,
    ) -> float:
        """Backward, sum gradients over ranks, clip, step; returns the gradient norm."""
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        self.sum_grads(model.parameters())
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        return float(grad_norm)

    def sum_grads(self, params: Iterator[torch.nn.Parameter]) -> None:
        if self.world_size == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset : offset + n].view_as(g))
            offset += n


def _rank_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1009 + current_context().rank)


def _mean_metrics(items: Sequence[Mapping[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in sorted({k for m in items for k in m}):
        vals = [m[key] for m in items if key in m]
        out[key] = float(sum(vals) / len(vals))
    return out


def _meta_number(batch: Batch, key: str, default: float) -> float:
    value = batch.meta.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"batch.meta[{key!r}] must be a number, got {value!r}")
    return float(value)


def _response_len(batch: Batch) -> int:
    return int(batch.tensors["response_mask"].shape[1])


class ActorRolloutWorker:
    """Policy + rollout (+ reference) on one rank. Build it through a WorkerGroup."""

    def __init__(self, config: PPOConfig, tokenizer: Tokenizer | None = None) -> None:
        torch.set_num_threads(config.resources.torch_threads)
        self.config = config
        self.tokenizer: Tokenizer = tokenizer if tokenizer is not None else CharTokenizer()
        self.device = _device()
        self.model = CausalTransformer(
            model_config_for(config, self.tokenizer.vocab_size), seed=config.trainer.seed
        ).to(self.device)
        self.model.eval()
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.actor.lr, weight_decay=config.actor.weight_decay
        )
        self.reference: CausalTransformer | None = None
        self.policy_loss = get_policy_loss(config.actor.policy_loss)
        self.dp: _DataParallel | None = None

    # --------------------------------------------------------------- set-up
    @register(Dispatch.ONE_TO_ALL)
    def init_distributed(self) -> int:
        """Join the role's process group (gloo/nccl); returns the data-parallel size."""
        self.dp = _DataParallel()
        return self.dp.world_size

    @register(Dispatch.ONE_TO_ALL)
    def warmup(self, examples: list[TaskExample]) -> float:
        """Supervised warm-up on ``examples`` (same data and seed on every rank, so the ranks
        stay identical); then snapshot the reference policy if KL is used. Returns the last
        loss."""
        cfg = self.config
        losses: list[float] = []
        if cfg.warmup.steps > 0:
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
            )
        self.model.eval()
        self.snapshot_reference()
        return losses[-1] if losses else float("nan")

    def snapshot_reference(self) -> None:
        if self.config.needs_reference:
            self.reference = copy.deepcopy(self.model).eval()
            for p in self.reference.parameters():
                p.requires_grad_(False)

    @register(Dispatch.RANK_ZERO)
    def policy_state(self) -> dict[str, Tensor]:
        """Rank 0's policy weights (to initialise the critic's trunk)."""
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    # --------------------------------------------------------------- rollout
    @register(Dispatch.DP_COMPUTE_PROTO)
    def generate(self, batch: Batch) -> Batch:
        """Sample one response per row of ``prompt_ids``/``prompt_mask`` (left padded).

        ``meta``: ``temperature``, ``greedy``, ``seed`` (sampling is seeded per rank from it).
        Returns ``input_ids``, ``attention_mask``, ``responses``, ``response_mask``,
        ``rollout_log_probs``.
        """
        greedy = bool(batch.meta.get("greedy", False))
        temperature = _meta_number(batch, "temperature", self.config.rollout.temperature)
        seed = int(_meta_number(batch, "seed", 0))
        out = generate(
            self.model,
            batch.tensors["prompt_ids"].to(self.device),
            batch.tensors["prompt_mask"].to(self.device),
            max_new_tokens=self.config.data.max_response_len,
            temperature=temperature,
            generator=_rank_generator(seed),
            eos_id=self.tokenizer.eos_id,
            pad_id=self.tokenizer.pad_id,
            greedy=greedy,
        )
        return Batch(
            {
                "input_ids": out.sequences.cpu(),
                "attention_mask": out.attention_mask.cpu(),
                "responses": out.response.cpu(),
                "response_mask": out.response_mask.cpu(),
                "rollout_log_probs": out.log_probs.cpu(),
            }
        )

    def _log_probs(
        self, model: CausalTransformer, batch: Batch, *, with_entropy: bool
    ) -> tuple[Tensor, Tensor | None]:
        return sequence_log_probs(
            model,
            batch.tensors["input_ids"].to(self.device),
            batch.tensors["attention_mask"].to(self.device),
            _response_len(batch),
            self.config.rollout.temperature,
            with_entropy=with_entropy,
        )

    @register(Dispatch.DP_COMPUTE_PROTO)
    def compute_log_prob(self, batch: Batch) -> Batch:
        """``old_log_probs`` and ``entropy`` of the responses under the current policy."""
        with torch.no_grad():
            logp, ent = self._log_probs(self.model, batch, with_entropy=True)
        assert ent is not None
        return Batch({"old_log_probs": logp.cpu(), "entropy": ent.cpu()})

    @register(Dispatch.DP_COMPUTE_PROTO)
    def compute_ref_log_prob(self, batch: Batch) -> Batch:
        """``ref_log_probs`` under the frozen reference policy."""
        if self.reference is None:
            raise RuntimeError(
                "no reference policy: it exists only when algorithm.use_kl_in_reward or "
                "actor.use_kl_loss is set"
            )
        with torch.no_grad():
            logp, _ = self._log_probs(self.reference, batch, with_entropy=False)
        return Batch({"ref_log_probs": logp.cpu()})

    # --------------------------------------------------------------- update
    @register(Dispatch.DP_COMPUTE_METRIC)
    def update_policy(self, batch: Batch) -> dict[str, float]:
        """PPO epochs over shuffled mini-batches of this rank's shard (gradients summed over
        ranks). Needs ``input_ids``, ``attention_mask``, ``response_mask``, ``old_log_probs``,
        ``advantages`` (and ``ref_log_probs`` with the KL loss). ``meta["seed"]`` seeds the
        shuffle. Returns the mean metrics of this rank."""
        cfg = self.config.actor
        dp = self.dp or _DataParallel()
        self.dp = dp
        self.model.train()
        n = len(batch)
        gen = _rank_generator(int(_meta_number(batch, "seed", 0)))
        horizon = _response_len(batch)
        metrics: list[dict[str, float]] = []
        for _ in range(cfg.ppo_epochs):
            perm = torch.randperm(n, generator=gen)
            for idx in perm.chunk(cfg.mini_batches):
                mb = batch.select_idxs(idx)
                mask = mb.tensors["response_mask"].to(self.device)
                norm = dp.global_counts(mask, horizon)
                want_entropy = cfg.entropy_coeff > 0
                logp, ent = self._log_probs(self.model, mb, with_entropy=want_entropy)
                loss, m = self.policy_loss(
                    logp,
                    mb.tensors["old_log_probs"].to(self.device),
                    mb.tensors["advantages"].to(self.device),
                    mask,
                    clip_low=cfg.clip_low,
                    clip_high=cfg.clip_high,
                    clip_c=cfg.clip_c,
                    agg=cfg.loss_agg_mode,
                    **norm,
                )
                stats = dict(m)
                stats["pg_loss"] = float(loss.detach()) * dp.world_size
                if ent is not None:
                    ent_loss = agg_loss(ent, mask, cfg.loss_agg_mode, **norm)
                    loss = loss - cfg.entropy_coeff * ent_loss
                    stats["entropy"] = float(ent_loss.detach()) * dp.world_size
                if cfg.use_kl_loss:
                    kl = kl_penalty(
                        logp, mb.tensors["ref_log_probs"].to(self.device), cfg.kl_loss_type
                    )
                    kl_loss = agg_loss(kl, mask, cfg.loss_agg_mode, **norm)
                    loss = loss + cfg.kl_loss_coef * kl_loss
                    stats["kl_loss"] = float(kl_loss.detach()) * dp.world_size
                stats["grad_norm"] = dp.step(loss, self.model, self.optimizer, cfg.grad_clip)
                metrics.append(stats)
        self.model.eval()
        out = _mean_metrics(metrics)
        out["lr"] = float(self.optimizer.param_groups[0]["lr"])
        return out

    # --------------------------------------------------------------- checkpoints
    @register(Dispatch.ONE_TO_ALL)
    def save_checkpoint(self, directory: str) -> str | None:
        """Rank 0 writes ``actor.pt`` (policy, optimizer, reference) into ``directory``; the
        ranks hold identical weights, so one copy is enough. Returns the file written."""
        if current_context().rank != 0:
            return None
        path = Path(directory) / "actor.pt"
        state: dict[str, Any] = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }
        if self.reference is not None:
            state["reference"] = self.reference.state_dict()
        _save(state, path)
        return str(path)

    @register(Dispatch.ONE_TO_ALL)
    def load_checkpoint(self, directory: str) -> None:
        """Restore what :meth:`save_checkpoint` wrote (``weights_only`` loading)."""
        state = torch.load(
            Path(directory) / "actor.pt", map_location=self.device, weights_only=True
        )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if "reference" in state:
            self.snapshot_reference()
            assert self.reference is not None
            self.reference.load_state_dict(state["reference"])
        self.model.eval()


class CriticWorker:
    """Value model on one rank: the policy's trunk plus a scalar head."""

    def __init__(self, config: PPOConfig, tokenizer: Tokenizer | None = None) -> None:
        torch.set_num_threads(config.resources.torch_threads)
        self.config = config
        self.device = _device()
        vocab = (tokenizer if tokenizer is not None else CharTokenizer()).vocab_size
        self.model = CausalTransformer(
            model_config_for(config, vocab), value_head=True, seed=config.trainer.seed + 1
        ).to(self.device)
        self.model.eval()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.critic.lr)
        self.dp: _DataParallel | None = None

    @register(Dispatch.ONE_TO_ALL)
    def init_distributed(self) -> int:
        """Join the role's process group (shared with a fused actor); returns the DP size."""
        self.dp = _DataParallel()
        return self.dp.world_size

    @register(Dispatch.ONE_TO_ALL)
    def init_from_policy(self, state: dict[str, Tensor]) -> None:
        """Copy the policy's trunk weights (the value head keeps its own initialisation)."""
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("value_head") for k in missing):
            raise ValueError(
                f"policy state does not fit the critic: missing={missing} unexpected={unexpected}"
            )
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.config.critic.lr)

    def _values(self, batch: Batch) -> Tensor:
        ids = batch.tensors["input_ids"].to(self.device)
        mask = batch.tensors["attention_mask"].to(self.device)
        t, r = ids.shape[1], _response_len(batch)
        values = self.model.values(ids, mask)[:, t - r - 1 : t - 1]
        return values * batch.tensors["response_mask"].to(self.device)

    @register(Dispatch.DP_COMPUTE_PROTO)
    def compute_values(self, batch: Batch) -> Batch:
        """``values`` (B, R): the value of the state before each response token."""
        with torch.no_grad():
            return Batch({"values": self._values(batch).cpu()})

    @register(Dispatch.DP_COMPUTE_METRIC)
    def update_critic(self, batch: Batch) -> dict[str, float]:
        """Clipped value regression onto ``returns`` (gradients summed over ranks)."""
        cfg = self.config.critic
        dp = self.dp or _DataParallel()
        self.dp = dp
        self.model.train()
        gen = _rank_generator(int(_meta_number(batch, "seed", 0)) + 7)
        metrics: list[dict[str, float]] = []
        for _ in range(cfg.ppo_epochs):
            for idx in torch.randperm(len(batch), generator=gen).chunk(cfg.mini_batches):
                mb = batch.select_idxs(idx)
                mask = mb.tensors["response_mask"].to(self.device)
                norm = dp.global_counts(mask, _response_len(batch))
                loss, m = value_loss(
                    self._values(mb),
                    mb.tensors["values"].to(self.device),
                    mb.tensors["returns"].to(self.device),
                    mask,
                    cfg.cliprange_value,
                    agg="token-mean",
                    **norm,
                )
                stats = dict(m)
                stats["vf_loss"] = float(loss.detach()) * dp.world_size
                stats["grad_norm"] = dp.step(loss, self.model, self.optimizer, cfg.grad_clip)
                metrics.append(stats)
        self.model.eval()
        return _mean_metrics(metrics)

    @register(Dispatch.ONE_TO_ALL)
    def save_checkpoint(self, directory: str) -> str | None:
        """Rank 0 writes ``critic.pt`` into ``directory``."""
        if current_context().rank != 0:
            return None
        path = Path(directory) / "critic.pt"
        _save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}, path)
        return str(path)

    @register(Dispatch.ONE_TO_ALL)
    def load_checkpoint(self, directory: str) -> None:
        state = torch.load(
            Path(directory) / "critic.pt", map_location=self.device, weights_only=True
        )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.model.eval()


class RewardWorker:
    """Verifiable, rule-based reward: decodes each response and scores it against its example.

    ``reward_fn(response_text, example) -> float`` defaults to ``task.score``.
    """

    def __init__(
        self, task: Task, reward_fn: RewardFn | None = None, tokenizer: Tokenizer | None = None
    ) -> None:
        self.task = task
        self.reward_fn: RewardFn = reward_fn if reward_fn is not None else task.score
        self.tokenizer: Tokenizer = tokenizer if tokenizer is not None else CharTokenizer()

    @register(Dispatch.DP_COMPUTE_PROTO)
    def compute_score(self, batch: Batch) -> Batch:
        """``token_level_scores`` (B, R): the score on the last valid response token;
        ``score`` (B,); ``acc`` (B,) = score >= 1. Needs non-tensors ``prompt``, ``answer``,
        ``data_source``."""
        responses = batch.tensors["responses"]
        mask = batch.tensors["response_mask"]
        scores = torch.zeros(len(batch), dtype=torch.float32)
        texts: list[str] = []
        for i in range(len(batch)):
            ids = responses[i][mask[i].bool()].tolist()
            text = self.tokenizer.decode(ids)
            texts.append(text)
            example = TaskExample(
                prompt=str(batch.non_tensors["prompt"][i]),
                answer=str(batch.non_tensors["answer"][i]),
                data_source=str(batch.non_tensors["data_source"][i]),
            )
            scores[i] = checked_reward(self.reward_fn, text, example, i)
        token_scores = torch.zeros(mask.shape, dtype=torch.float32)
        last = (mask.sum(dim=1) - 1).clamp(min=0)
        token_scores[torch.arange(len(batch)), last] = scores
        token_scores = token_scores * mask
        return Batch(
            {"token_level_scores": token_scores, "score": scores, "acc": (scores >= 1.0).float()},
            {"response_text": np.array(texts, dtype=object)},
        )


def _save(state: Mapping[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` via a temporary file, fsynced, then renamed."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(dict(state), fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
