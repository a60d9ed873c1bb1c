"""``PPOTrainer``: PPO/GRPO on the runtime, driven by one controller process.

::

    trainer = PPOTrainer(backend=InProcessBackend(), config=load_config("configs/demo.toml"))
    history = trainer.fit()

The trainer receives a :class:`runtime.Backend` (it never creates one and never imports ray).
Roles: actor+rollout (with the reference fused in), critic (for GAE), reward. With
``resources.colocate`` every role shares one pool and is fused into one process per rank;
otherwise each role gets its own pool and processes.

One step (see ``shared/design/ppo.md``): prompts with uids, repeated ``rollout.n`` times
(interleaved); generation; reward; old/ref log-probs and values; optional KL in reward;
advantages on the controller; critic then actor updates (data parallel over the role's
ranks); metrics; validation every ``test_freq`` steps; a checkpoint every ``save_freq`` steps.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from tqdm import tqdm

from ppo.algos import (
    AdvantageInputs,
    apply_kl_in_reward,
    compute_advantages,
    make_kl_controller,
    masked_mean,
)
from ppo.checkpoint import CheckpointManager
from ppo.config import ConfigError, PPOConfig, config_to_dict
from ppo.metrics import MetricsWriter, read_metrics
from ppo.plots import PlotUnavailableError, RunSeries, plot_runs
from ppo.tasks import RewardFn, Task, TaskExample, get_task, load_jsonl, make_dataset
from ppo.tokenizer import CharTokenizer, Tokenizer
from ppo.trackers import Tracker, flatten_params, make_trackers
from ppo.warmup import encode_prompts
from ppo.workers import ActorRolloutWorker, CriticWorker, RewardWorker
from runtime import Backend, Batch, ResourcePool, WorkerGroup, WorkerSpec, fuse
from runtime._log import get_logger

__all__ = ["PPOTrainer", "PromptSampler", "load_reward_fn"]

_log = get_logger(component="ppo")

W = TypeVar("W")


class PromptSampler:
    """Deterministic epoch-wise shuffling over examples, with a resumable position."""

    def __init__(self, examples: Sequence[TaskExample], seed: int) -> None:
        if not examples:
            raise ConfigError("the training set is empty")
        self.examples = list(examples)
        self.seed = seed
        self.epoch = 0
        self.pos = 0
        self._order = self._perm(0)

    def _perm(self, epoch: int) -> list[int]:
        order = list(range(len(self.examples)))
        random.Random(self.seed * 7919 + epoch).shuffle(order)
        return order

    def next(self, n: int) -> list[TaskExample]:
        out: list[TaskExample] = []
        while len(out) < n:
            if self.pos >= len(self._order):
                self.epoch += 1
                self.pos = 0
                self._order = self._perm(self.epoch)
            out.append(self.examples[self._order[self.pos]])
            self.pos += 1
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.pos = int(state["pos"])
        self._order = self._perm(self.epoch)


def load_reward_fn(spec: str) -> RewardFn:
    """Import ``module:function`` as a reward function ``(response, example) -> float``."""
    import importlib

    module_name, _, attr = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"data.reward_fn = {spec!r} cannot be imported: {exc}") from exc
    if not callable(fn):
        raise ConfigError(f"data.reward_fn = {spec!r} is not callable")
    reward: RewardFn = fn
    return reward


class PPOTrainer:
    """PPO/GRPO trainer on a backend. ``fit()`` trains and returns one metrics dict per step.

    ``task`` overrides ``config.data.task`` (any :class:`ppo.tasks.Task`); ``reward_fn``
    overrides the task's scorer (or ``config.data.reward_fn``); ``train_examples`` /
    ``val_examples`` override the generated or JSONL data; ``tokenizer`` (any
    :class:`ppo.tokenizer.Tokenizer`, picklable) replaces the built-in character tokenizer in
    every role, and the model's vocabulary follows it. ``trackers`` (any
    :class:`ppo.trackers.Tracker`) receive the configuration and every metrics row, next to the
    ones named by ``trainer.loggers``; :meth:`close` closes them all.
    """

    def __init__(
        self,
        backend: Backend,
        config: PPOConfig,
        *,
        task: Task | None = None,
        reward_fn: RewardFn | None = None,
        train_examples: Sequence[TaskExample] | None = None,
        val_examples: Sequence[TaskExample] | None = None,
        on_step: Callable[[dict[str, Any]], None] | None = None,
        tokenizer: Tokenizer | None = None,
        trackers: Sequence[Tracker] = (),
    ) -> None:
        if not isinstance(backend, Backend):
            raise TypeError(f"backend must implement runtime.Backend, got {type(backend).__name__}")
        self.backend = backend
        self.config = config
        data = config.data
        self.task: Task = (
            task if task is not None else get_task(data.task, **dict(data.task_kwargs))
        )
        if reward_fn is None and data.reward_fn is not None:
            reward_fn = load_reward_fn(data.reward_fn)
        self.reward_fn = reward_fn
        if train_examples is not None:
            self.train_examples = list(train_examples)
        elif data.train_jsonl:
            self.train_examples = load_jsonl(data.train_jsonl)
        else:
            self.train_examples = make_dataset(self.task, data.train_size, data.seed)
        if val_examples is not None:
            self.val_examples = list(val_examples)
        elif data.val_jsonl:
            self.val_examples = load_jsonl(data.val_jsonl)
        else:
            self.val_examples = make_dataset(self.task, data.val_size, data.seed + 1_000_003)
        self.tokenizer: Tokenizer = tokenizer if tokenizer is not None else CharTokenizer()
        self.sampler = PromptSampler(self.train_examples, data.seed)
        alg = config.algorithm
        self.kl_ctrl = make_kl_controller(
            "adaptive" if alg.kl_ctrl == "adaptive" else "fixed",
            alg.kl_coef,
            alg.kl_target,
            alg.kl_horizon,
        )
        self.run_dir = Path(config.trainer.run_dir)
        self.checkpoints = CheckpointManager(self.run_dir, config.trainer.keep_last)
        self.metrics = MetricsWriter(self.run_dir / "metrics.jsonl")
        self.on_step = on_step
        self._data_label = _data_label(
            self.task.name, data.train_jsonl, explicit=train_examples is not None
        )
        config_dict = config_to_dict(config)
        self.trackers: list[Tracker] = make_trackers(
            config.trainer.loggers,
            self.run_dir,
            run_name=self.run_dir.resolve().name,
            config_dict=config_dict,
        )
        for tracker in trackers:
            tracker.log_params(flatten_params(config_dict))
            self.trackers.append(tracker)
        self._plot_warned = False
        self.step = 0
        self.actor: WorkerGroup[ActorRolloutWorker] | None = None
        self.critic: WorkerGroup[CriticWorker] | None = None
        self.reward: WorkerGroup[RewardWorker] | None = None
        self._groups: list[Any] = []

    # ------------------------------------------------------------------ workers
    def init_workers(self) -> None:
        """Start the roles on the backend, set up data parallelism, warm up, and resume."""
        if self.actor is not None:
            return
        cfg = self.config
        res = cfg.resources
        timeout = cfg.trainer.call_timeout

        def pool(ranks: int, name: str) -> ResourcePool:
            return ResourcePool.create(
                [ranks],
                devices_per_process=res.devices_per_process,
                cpus_per_process=res.cpus_per_process,
                name=f"{name}-{id(self):x}",
            )

        actor_spec = WorkerSpec.of(ActorRolloutWorker, cfg, self.tokenizer)
        critic_spec = WorkerSpec.of(CriticWorker, cfg, self.tokenizer)
        reward_spec = WorkerSpec.of(RewardWorker, self.task, self.reward_fn, self.tokenizer)
        # Colocated: every role shares the actor's ranks (critic_ranks applies to separate pools).
        fused_critic = cfg.needs_critic and res.colocate
        if res.colocate:
            roles: dict[str, WorkerSpec[Any]] = {"actor": actor_spec, "reward": reward_spec}
            if fused_critic:
                roles["critic"] = critic_spec
            fused = fuse(self.backend, roles, pool(res.actor_ranks, "actor"), timeout=timeout)
            self._groups.append(fused)
            self.actor = fused.view("actor", ActorRolloutWorker)
            self.reward = fused.view("reward", RewardWorker)
            if fused_critic:
                self.critic = fused.view("critic", CriticWorker)
        else:
            self.actor = self._own_group(actor_spec, pool(res.actor_ranks, "actor"), "actor")
            self.reward = self._own_group(reward_spec, pool(1, "reward"), "reward")
        if cfg.needs_critic and self.critic is None:
            self.critic = self._own_group(critic_spec, pool(res.critic_ranks, "critic"), "critic")
        for role, group in (("actor", self.actor), ("critic", self.critic)):
            if group is not None and group.world_size > 1:
                pids = group.run_function(_process_id)
                if len(set(pids)) != len(pids):
                    self.close()
                    raise ConfigError(
                        f"resources.{role}_ranks = {group.world_size}: data-parallel training "
                        "needs one process per rank, but this backend runs several ranks in one "
                        "process "
                        "(the in-process backend does). Use 1 rank per role with it, or RayBackend."
                    )
        self.actor.call(ActorRolloutWorker.init_distributed)
        if self.critic is not None:
            self.critic.call(CriticWorker.init_distributed)
        resume = self.checkpoints.resolve(cfg.trainer.resume)
        if resume is not None:
            self._load(resume)
        else:
            loss = self.actor.call(ActorRolloutWorker.warmup, self.train_examples)[0]
            _log.info("warm-up done", steps=cfg.warmup.steps, final_loss=round(loss, 4))
            if self.critic is not None:
                self.critic.call(
                    CriticWorker.init_from_policy, self.actor.call(ActorRolloutWorker.policy_state)
                )

    def _own_group(self, spec: WorkerSpec[W], pool: ResourcePool, role: str) -> WorkerGroup[W]:
        """A role in its own pool (separate processes), stopped by :meth:`close`."""
        group = WorkerGroup(
            self.backend, spec, pool, role=role, timeout=self.config.trainer.call_timeout
        )
        self._groups.append(group)
        return group

    def close(self) -> None:
        """Stop every worker this trainer started (the backend stays usable)."""
        for group in self._groups:
            group.shutdown()
        self._groups.clear()
        self.actor = self.critic = self.reward = None
        trackers, self.trackers = self.trackers, []
        for tracker in trackers:
            tracker.close()

    def __enter__(self) -> PPOTrainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ data
    def _prompt_batch(self, examples: Sequence[TaskExample], *, uid_prefix: str) -> Batch:
        ids, mask = encode_prompts(
            self.tokenizer, [e.prompt for e in examples], self.config.data.max_prompt_len
        )
        return Batch(
            {"prompt_ids": ids, "prompt_mask": mask},
            {
                "uid": np.array([f"{uid_prefix}-{i}" for i in range(len(examples))], dtype=object),
                "prompt": np.array([e.prompt for e in examples], dtype=object),
                "answer": np.array([e.answer for e in examples], dtype=object),
                "data_source": np.array([e.data_source for e in examples], dtype=object),
            },
        )

    # ------------------------------------------------------------------ one step
    def train_step(self) -> dict[str, Any]:
        """Run one PPO/GRPO step and return its metrics (does not validate or checkpoint)."""
        self.init_workers()
        assert self.actor is not None
        assert self.reward is not None
        cfg = self.config
        step = self.step + 1
        timing: dict[str, float] = {}
        t_step = time.perf_counter()

        examples = self.sampler.next(cfg.data.prompts_per_step)
        batch = self._prompt_batch(examples, uid_prefix=f"s{step}").repeat(
            cfg.rollout.n, interleave=True
        )
        gen_in = Batch(
            batch.select(tensor_keys=["prompt_ids", "prompt_mask"], non_tensor_keys=[]).tensors,
            meta={
                "temperature": cfg.rollout.temperature,
                "seed": cfg.trainer.seed * 100_003 + step,
            },
        ).with_auto_padding()

        t = time.perf_counter()
        gen = self.actor.call(ActorRolloutWorker.generate, gen_in)
        timing["gen"] = time.perf_counter() - t
        batch = batch.union(gen)
        baselines = self._greedy_baselines(examples, step) if cfg.needs_baselines else None

        t = time.perf_counter()
        padded = batch.with_auto_padding()
        score_f = self.reward.submit(RewardWorker.compute_score, padded)
        old_f = self.actor.submit(ActorRolloutWorker.compute_log_prob, padded)
        ref_f = (
            self.actor.submit(ActorRolloutWorker.compute_ref_log_prob, padded)
            if cfg.needs_reference
            else None
        )
        val_f = self.critic.submit(CriticWorker.compute_values, padded) if self.critic else None
        scores = score_f.get()
        batch = batch.union(
            scores.select(tensor_keys=["token_level_scores", "score", "acc"], non_tensor_keys=[])
        )
        batch = batch.union(old_f.get())
        if ref_f is not None:
            batch = batch.union(ref_f.get())
        if val_f is not None:
            batch = batch.union(val_f.get())
        timing["score_logprob_values"] = time.perf_counter() - t

        t = time.perf_counter()
        mask = batch.tensors["response_mask"].float()
        token_scores = batch.tensors["token_level_scores"]
        metrics: dict[str, Any] = {}
        if baselines is not None:
            metrics["reward/greedy_baseline_mean"] = float(baselines.mean())
        if cfg.algorithm.use_kl_in_reward:
            token_rewards, kl_metrics = apply_kl_in_reward(
                token_scores,
                batch.tensors["old_log_probs"],
                batch.tensors["ref_log_probs"],
                mask,
                self.kl_ctrl,
                kind=cfg.algorithm.kl_penalty,
            )
            metrics.update(kl_metrics)
        else:
            token_rewards = token_scores
        advantages, returns = compute_advantages(
            cfg.algorithm.adv_estimator,
            AdvantageInputs(
                token_rewards=token_rewards,
                response_mask=mask,
                values=batch.tensors.get("values"),
                index=batch.non_tensors["uid"],
                reward_baselines=baselines,
                gamma=cfg.algorithm.gamma,
                lam=cfg.algorithm.lam,
                norm_by_std=cfg.algorithm.norm_adv_by_std,
            ),
        )
        batch = batch.union(
            Batch(
                {"token_level_rewards": token_rewards, "advantages": advantages, "returns": returns}
            )
        )
        timing["adv"] = time.perf_counter() - t

        update = batch.select(
            tensor_keys=[
                k
                for k in (
                    "input_ids",
                    "attention_mask",
                    "response_mask",
                    "old_log_probs",
                    "advantages",
                    "returns",
                    "values",
                    "ref_log_probs",
                )
                if k in batch.tensors
            ],
            non_tensor_keys=[],
        )
        update.meta["seed"] = cfg.trainer.seed * 100_003 + step
        if self.critic is not None:
            t = time.perf_counter()
            per_rank = self.critic.call(CriticWorker.update_critic, update)
            metrics.update({f"critic/{k}": v for k, v in _average(per_rank).items()})
            timing["update_critic"] = time.perf_counter() - t
        if step > cfg.critic.warmup_steps or self.critic is None:
            t = time.perf_counter()
            per_rank = self.actor.call(ActorRolloutWorker.update_policy, update)
            metrics.update({f"actor/{k}": v for k, v in _average(per_rank).items()})
            timing["update_actor"] = time.perf_counter() - t

        self.step = step
        timing["step"] = time.perf_counter() - t_step
        metrics.update(_data_metrics(batch))
        metrics.update({f"timing/{k}_s": v for k, v in timing.items()})
        n_tokens = float(batch.tensors["attention_mask"].sum())
        metrics["perf/tokens_per_s"] = n_tokens / max(timing["step"], 1e-9)
        metrics["training/epoch"] = self.sampler.epoch
        metrics["step"] = step
        return metrics

    def _greedy_baselines(self, examples: Sequence[TaskExample], step: int) -> torch.Tensor:
        """ReMax's baseline: the score of one greedy response per prompt, repeated ``n``
        times to line up with the sampled rows (interleaved)."""
        assert self.actor is not None
        assert self.reward is not None
        prompts = self._prompt_batch(examples, uid_prefix=f"g{step}")
        gen_in = Batch(
            prompts.select(tensor_keys=["prompt_ids", "prompt_mask"], non_tensor_keys=[]).tensors,
            meta={"temperature": self.config.rollout.temperature, "greedy": True, "seed": step},
        ).with_auto_padding()
        greedy = prompts.union(self.actor.call(ActorRolloutWorker.generate, gen_in))
        scores = self.reward.call(RewardWorker.compute_score, greedy.with_auto_padding())
        return scores.tensors["score"].repeat_interleave(self.config.rollout.n)

    # ------------------------------------------------------------------ validation
    def validate(self) -> dict[str, float]:
        """Greedy (or sampled) generation on the held-out set; accuracy overall and per source."""
        self.init_workers()
        assert self.actor is not None
        assert self.reward is not None
        cfg = self.config
        batch = self._prompt_batch(self.val_examples, uid_prefix="val")
        gen_in = Batch(
            batch.select(tensor_keys=["prompt_ids", "prompt_mask"], non_tensor_keys=[]).tensors,
            meta={
                "temperature": cfg.rollout.temperature,
                "greedy": cfg.rollout.val_greedy,
                "seed": 17,
            },
        ).with_auto_padding()
        batch = batch.union(self.actor.call(ActorRolloutWorker.generate, gen_in))
        scores = self.reward.call(RewardWorker.compute_score, batch.with_auto_padding())
        acc = scores.tensors["acc"]
        out = {"val/accuracy": float(acc.mean())}
        sources = batch.non_tensors["data_source"]
        for source in sorted(set(sources.tolist())):
            sel = torch.from_numpy(np.asarray(sources == source))
            out[f"val/accuracy/{source}"] = float(acc[sel].mean())
        return out

    # ------------------------------------------------------------------ loop
    def fit(self) -> list[dict[str, Any]]:
        """Train until ``trainer.total_steps``; returns the metrics of the steps run now."""
        cfg = self.config.trainer
        self.init_workers()
        self.metrics.truncate_after(self.step)
        history: list[dict[str, Any]] = []
        if self.step == 0 and cfg.test_freq > 0:
            row = {"step": 0, **self.validate()}
            self._log_row(row)
            history.append(row)
        bar = tqdm(
            total=cfg.total_steps,
            initial=self.step,
            desc="train",
            unit="step",
            disable=not cfg.progress,
            dynamic_ncols=True,
        )
        try:
            while self.step < cfg.total_steps:
                row = self.train_step()
                last = self.step == cfg.total_steps
                if cfg.test_freq > 0 and (self.step % cfg.test_freq == 0 or last):
                    row.update(self.validate())
                if cfg.save_freq > 0 and (self.step % cfg.save_freq == 0 or last):
                    self.save_checkpoint()
                self._log_row(row)
                history.append(row)
                bar.update(1)
                score = row.get("critic/score/mean", row.get("reward/mean"))
                if isinstance(score, float):
                    bar.set_postfix(reward=f"{score:.3f}")
                if self.on_step is not None:
                    self.on_step(row)
        finally:
            bar.close()
        self._write_figure()
        return history

    def _log_row(self, row: dict[str, Any]) -> None:
        """Hand ``row`` to every tracker; after a validation, redraw ``reward_curve.png``."""
        for tracker in self.trackers:
            tracker.log(row, int(row["step"]))
        if row.get("val/accuracy") is not None:
            self._write_figure()

    def _write_figure(self) -> None:
        rows = read_metrics(self.metrics.path)
        if not rows:
            return
        try:
            plot_runs(
                [RunSeries(self.run_dir.name, rows)],
                self.run_dir / "reward_curve.png",
                title=self._title(),
            )
        except PlotUnavailableError as exc:
            if not self._plot_warned:
                _log.warning("reward_curve.png not written", reason=str(exc))
                self._plot_warned = True

    def _title(self) -> str:
        c = self.config
        ranks = c.resources.actor_ranks
        return f"{c.algorithm.adv_estimator} on {self._data_label} ({ranks} actor rank(s))"

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        """Write an atomic checkpoint of every role and the trainer state for this step."""
        assert self.actor is not None
        actor, critic = self.actor, self.critic

        def write_parts(directory: Path) -> None:
            actor.call(ActorRolloutWorker.save_checkpoint, str(directory))
            if critic is not None:
                critic.call(CriticWorker.save_checkpoint, str(directory))

        state = {
            "step": self.step,
            "sampler": self.sampler.state_dict(),
            "kl_ctrl": self.kl_ctrl.state_dict(),
            "rng_torch": torch.get_rng_state(),
            "rng_python": list(random.getstate()[1]),
        }
        path = self.checkpoints.save(self.step, state, write_parts)
        _log.info("checkpoint saved", step=self.step, path=str(path))
        return path

    def _load(self, path: Path) -> None:
        assert self.actor is not None
        state = self.checkpoints.load_trainer_state(path)
        self.actor.call(ActorRolloutWorker.load_checkpoint, str(path))
        if self.critic is not None:
            self.critic.call(CriticWorker.load_checkpoint, str(path))
        self.step = int(state["step"])
        self.sampler.load_state_dict(state["sampler"])
        self.kl_ctrl.load_state_dict(state["kl_ctrl"])
        torch.set_rng_state(state["rng_torch"])
        _log.info("resumed", step=self.step, path=str(path))


def _data_label(task_name: str, train_jsonl: str | None, *, explicit: bool) -> str:
    """What the run trains on, for the figure's title: the JSONL file, or the task."""
    if explicit:
        return f"user-supplied examples (task {task_name})"
    if train_jsonl:
        return Path(train_jsonl).name
    return f"task {task_name}"


def _process_id(worker: object) -> int:
    import os

    return os.getpid()


def _average(per_rank: Sequence[Mapping[str, float]]) -> dict[str, float]:
    keys = sorted({k for m in per_rank for k in m})
    return {k: float(np.mean([m[k] for m in per_rank if k in m])) for k in keys}


def _data_metrics(batch: Batch) -> dict[str, float]:
    mask = batch.tensors["response_mask"].float()
    score = batch.tensors["score"]
    adv = batch.tensors["advantages"]
    lengths = mask.sum(dim=1)
    out = {
        "reward/mean": float(score.mean()),
        "reward/max": float(score.max()),
        "reward/min": float(score.min()),
        "reward/acc": float(batch.tensors["acc"].mean()),
        "response_length/mean": float(lengths.mean()),
        "response_length/max": float(lengths.max()),
        "adv/mean": float(masked_mean(adv, mask)),
        "adv/max": float(adv[mask.bool()].max()) if mask.any() else 0.0,
        "adv/min": float(adv[mask.bool()].min()) if mask.any() else 0.0,
        "actor/entropy_rollout": float(masked_mean(batch.tensors["entropy"], mask)),
    }
    if "values" in batch.tensors:
        out["critic/values_mean"] = float(masked_mean(batch.tensors["values"], mask))
        out["critic/returns_mean"] = float(masked_mean(batch.tensors["returns"], mask))
    if "ref_log_probs" in batch.tensors:
        kl = batch.tensors["old_log_probs"] - batch.tensors["ref_log_probs"]
        out["kl/actor_ref"] = float(masked_mean(kl, mask))
    return {k: (v if math.isfinite(v) else float("nan")) for k, v in out.items()}
