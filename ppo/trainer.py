"""``PPOTrainer``: PPO/GRPO on the runtime, driven by one controller process.

::

    trainer = PPOTrainer(backend=InProcessBackend(), config=load_config("demo"))
    history = trainer.fit()

The trainer receives a :class:`runtime.Backend` (it never creates one and never imports ray).
Roles: actor+rollout (with the reference fused in), critic (for GAE), reward. With
``resources.colocate`` every role shares one pool and is fused into one process per rank;
otherwise each role gets its own pool and processes.

One step is a pipeline of small stages (:meth:`PPOTrainer.train_step`): prompts with uids,
repeated ``rollout.n`` times (interleaved) -> ``_rollout`` (generation, kept as a future) ->
reward, old/ref log-probs and values, chained on that future and in flight at the same time
(``_start_step``, collected by ``_collect``) -> ``_advantages`` (KL in reward, the estimator,
on the controller) -> ``_submit_updates`` (critic and actor, data parallel over the role's
ranks, which fetch the token ids themselves) -> metrics. What reaches the driver is described
in :mod:`ppo.dataflow`.
With ``trainer.pipeline_steps`` consecutive steps overlap (:meth:`PPOTrainer.train_step`), and
for group estimators the ranks compute the advantages themselves
(:mod:`ppo.group_advantages`), so each update is submitted with its step's first stages.
Validation runs every ``test_freq`` steps, a checkpoint every ``save_freq`` steps; the final
policy is exported with ``save_pretrained`` to ``run_dir/hf_model``. Batch columns are named
in :mod:`ppo.columns`.
"""

from __future__ import annotations

import contextlib
import enum
import math
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from ppo import columns as C
from ppo.algos import (
    AdvantageInputs,
    apply_kl_in_reward,
    compute_advantages,
    make_kl_controller,
    masked_mean,
    truncated_importance_weights,
)
from ppo.balance import balanced_order, token_counts
from ppo.checkpoint import CheckpointManager
from ppo.config import ConfigError, PPOConfig, config_to_dict
from ppo.data_check import check_prompt_lengths, config_field, load_examples
from ppo.dataflow import DriverTraffic, StepData, StepStart, chained, place_scores
from ppo.group_advantages import ranks_compute_advantages
from ppo.lm import check_model_fits
from ppo.metrics import MetricsWriter, read_metrics
from ppo.pipeline import POLICY_VERSION, RolloutPipeline, RolloutWorker
from ppo.plots import PlotUnavailableError, RunSeries, plot_runs
from ppo.recovery import Recovery
from ppo.resume_check import check_resume
from ppo.rundir import (
    check_not_file,
    prepare_run_dir,
    repair_metrics,
    write_config_toml,
    write_summary,
)
from ppo.scoring import RewardFnScorer, Scorer
from ppo.tasks import RewardFn, Task, TaskExample, get_task, make_dataset
from ppo.tokenizer import Prompt, PromptCache, Tokenizer, as_tokenizer, load_tokenizer
from ppo.trackers import Tracker, flatten_params, make_trackers
from ppo.warmup import encode_prompts, example_prompt
from ppo.workers import ActorRolloutWorker, CriticWorker, RewardWorker
from runtime import (
    Backend,
    Batch,
    BatchFuture,
    GroupFuture,
    ResourcePool,
    WorkerGroup,
    WorkerSpec,
    fuse,
    get_logger,
)
from runtime.errors import WorkerDiedError

__all__ = ["PPOTrainer", "PromptSampler", "StepInFlightError", "load_reward_fn"]

_log = get_logger(component="ppo")

W = TypeVar("W")


class StepInFlightError(RuntimeError):
    """The ranks already run the next step's update (a :meth:`PPOTrainer.fit` cut short by
    an exception left it in flight), so their policy is not the trainer's current step's."""


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

    Plug-in points: ``task`` overrides ``config.data.task`` (any :class:`ppo.tasks.Task`);
    ``reward_fn`` (per sample) or ``scorer`` (per batch, :class:`ppo.scoring.Scorer`) overrides
    the task's scorer (or ``config.data.reward_fn``); ``train_examples`` / ``val_examples``
    override the generated or JSONL data; ``tokenizer`` (a ``transformers`` tokenizer or any
    :class:`ppo.tokenizer.Tokenizer`) overrides ``tokenizer.path`` / ``model.path``;
    ``actor_spec`` / ``critic_spec`` / ``reward_spec`` replace a role's worker with a user
    subclass of :class:`ActorRolloutWorker` / :class:`CriticWorker` / :class:`RewardWorker`
    (build them with ``WorkerSpec.of(MyActor, config, tokenizer)``). ``trackers`` (any
    :class:`ppo.trackers.Tracker`) receive the configuration and every metrics row, next to the
    ones named by ``trainer.loggers``; :meth:`close` closes them all (with
    ``trainer.pipeline_steps`` their ``log`` may run while the next step runs on the ranks).
    ``on_step(row)`` runs after each step is logged, with that step's policy on the ranks: it
    may checkpoint, validate or export.
    """

    def __init__(
        self,
        backend: Backend,
        config: PPOConfig,
        *,
        task: Task | None = None,
        reward_fn: RewardFn | None = None,
        scorer: Scorer | None = None,
        train_examples: Sequence[TaskExample] | None = None,
        val_examples: Sequence[TaskExample] | None = None,
        on_step: Callable[[dict[str, Any]], None] | None = None,
        tokenizer: Tokenizer | PreTrainedTokenizerBase | None = None,
        actor_spec: WorkerSpec[Any] | None = None,
        critic_spec: WorkerSpec[Any] | None = None,
        reward_spec: WorkerSpec[Any] | None = None,
        trackers: Sequence[Tracker] = (),
    ) -> None:
        if not isinstance(backend, Backend):
            raise TypeError(f"backend must implement runtime.Backend, got {type(backend).__name__}")
        if reward_fn is not None and scorer is not None:
            raise ConfigError("pass reward_fn or scorer, not both")
        self.backend = backend
        self.config = config
        data = config.data
        with config_field("data.task", data.task):
            self.task: Task = (
                task if task is not None else get_task(data.task, **dict(data.task_kwargs))
            )
        if reward_fn is None and scorer is None and data.reward_fn is not None:
            reward_fn = load_reward_fn(data.reward_fn)
        self.scorer: Scorer = scorer if scorer is not None else RewardFnScorer(self.task, reward_fn)
        self.train_examples, self.val_examples = self._examples(train_examples, val_examples)
        self.tokenizer: Tokenizer = (
            as_tokenizer(tokenizer) if tokenizer is not None else self._default_tokenizer()
        )
        if data.prompt_format == "chat" and not self.tokenizer.has_chat_template:
            raise ConfigError(
                f"config field data.prompt_format = 'chat' needs a tokenizer with a chat "
                f"template, but {self.tokenizer!r} has none; set data.prompt_format = 'raw' or "
                "tokenizer.path to a tokenizer with a chat_template"
            )
        check_model_fits(config.model, config.critic.model.path, self.tokenizer.vocab_size)
        #: Prompt ids per distinct prompt: each is tokenized once, not at every draw.
        self._prompt_ids: Callable[[Prompt], list[int]] = PromptCache(self.tokenizer)
        for which, examples in (
            ("training", self.train_examples),
            ("validation", self.val_examples),
        ):
            check_prompt_lengths(
                examples, self.tokenizer, data.max_prompt_len, data.prompt_format, which
            )
        self.specs = self._specs(actor_spec, critic_spec, reward_spec)
        self.sampler = PromptSampler(self.train_examples, data.seed)
        alg = config.algorithm
        self.kl_ctrl = make_kl_controller(
            "adaptive" if alg.kl_ctrl == "adaptive" else "fixed",
            alg.kl_coef,
            alg.kl_target,
            alg.kl_horizon,
        )
        self.run_dir = Path(config.trainer.run_dir)
        check_not_file(self.run_dir)
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
        self.rollout: WorkerGroup[RolloutWorker] | None = None
        self._pipeline: RolloutPipeline | None = None
        #: The next step, started ahead while :meth:`fit` runs (see :meth:`train_step`).
        self._ahead: StepStart | None = None
        #: While :meth:`fit` runs, its Ctrl-C request (steps start ahead only inside fit).
        self._fitting: _StopRequest | None = None
        #: Whether the ranks compute each step's advantages (set when the workers start).
        self._ranks_advantages = False
        #: Bytes the controller receives and sends per step (:mod:`ppo.dataflow`).
        self.traffic = DriverTraffic()
        self._groups: list[Any] = []
        self._recovery = Recovery(config.trainer.max_restarts)
        #: ``summary.json``'s content once :meth:`fit` has ended (completed or not).
        self.summary: dict[str, Any] = {}

    def _examples(
        self,
        train: Sequence[TaskExample] | None,
        val: Sequence[TaskExample] | None,
    ) -> tuple[list[TaskExample], list[TaskExample]]:
        data = self.config.data
        if train is None:
            train = (
                load_examples(data.train_jsonl, "data.train_jsonl")
                if data.train_jsonl
                else make_dataset(self.task, data.train_size, data.seed)
            )
        if val is None:
            val = (
                load_examples(data.val_jsonl, "data.val_jsonl")
                if data.val_jsonl
                else make_dataset(self.task, data.val_size, data.seed + 1_000_003)
            )
        return list(train), list(val)

    def _default_tokenizer(self) -> Tokenizer:
        cfg = self.config
        if cfg.tokenizer.path is not None:
            return load_tokenizer(cfg.tokenizer.path, field="tokenizer.path")
        if cfg.model.path is not None:
            return load_tokenizer(cfg.model.path, field="model.path")
        return load_tokenizer(None)

    def _specs(
        self,
        actor: WorkerSpec[Any] | None,
        critic: WorkerSpec[Any] | None,
        reward: WorkerSpec[Any] | None,
    ) -> dict[str, WorkerSpec[Any]]:
        cfg, tok = self.config, self.tokenizer
        specs: dict[str, WorkerSpec[Any]] = {
            "actor": actor or WorkerSpec.of(ActorRolloutWorker, cfg, tok),
            "critic": critic or WorkerSpec.of(CriticWorker, cfg, tok),
            "reward": reward or WorkerSpec.of(RewardWorker, self.scorer, tok),
        }
        for role, base in (
            ("actor", ActorRolloutWorker),
            ("critic", CriticWorker),
            ("reward", RewardWorker),
        ):
            if not issubclass(specs[role].cls, base):
                raise TypeError(
                    f"{role}_spec builds {specs[role].cls.__qualname__}, which is not a subclass "
                    f"of ppo.{base.__qualname__}; subclass it and override the methods to change"
                )
        return specs

    # ------------------------------------------------------------------ workers
    def init_workers(self) -> None:
        """Start the roles on the backend, set up data parallelism, warm up, and resume."""
        if self.actor is not None:
            return
        resume = self._prepare_run_dir()
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

        # Colocated: every role shares the actor's ranks (critic_ranks applies to separate pools).
        fused_critic = cfg.needs_critic and res.colocate
        if res.colocate:
            roles = {"actor": self.specs["actor"], "reward": self.specs["reward"]}
            if fused_critic:
                roles["critic"] = self.specs["critic"]
            fused = fuse(self.backend, roles, pool(res.actor_ranks, "actor"), timeout=timeout)
            self._groups.append(fused)
            self.actor = fused.view("actor", ActorRolloutWorker)
            self.reward = fused.view("reward", RewardWorker)
            if fused_critic:
                self.critic = fused.view("critic", CriticWorker)
        else:
            self.actor = self._own_group(self.specs["actor"], pool(res.actor_ranks, "actor"))
            self.reward = self._own_group(self.specs["reward"], pool(1, "reward"))
        if cfg.needs_critic and self.critic is None:
            self.critic = self._own_group(self.specs["critic"], pool(res.critic_ranks, "critic"))
        self._check_one_process_per_rank()
        self._ranks_advantages = cfg.trainer.pipeline_steps and ranks_compute_advantages(
            cfg, self.actor.world_size
        )
        self.actor.call(ActorRolloutWorker.init_distributed)
        if self.critic is not None:
            self.critic.call(CriticWorker.init_distributed)
        if resume is not None:
            self._load(resume)
        else:
            loss = self.actor.call(ActorRolloutWorker.warmup, self.train_examples)[0]
            _log.info("warm-up done", steps=cfg.warmup.steps, final_loss=round(loss, 4))
            if self.critic is not None:
                self.critic.call(
                    CriticWorker.init_from_policy, self.actor.call(ActorRolloutWorker.policy_state)
                )
        if cfg.trainer.mode == "async":
            self._start_pipeline(pool)

    def _start_pipeline(self, pool: Callable[[int, str], ResourcePool]) -> None:
        """Async mode: the rollout role in its own pool, fed the actor's current weights."""
        cfg = self.config
        spec = WorkerSpec.of(RolloutWorker, cfg, self.tokenizer)
        self.rollout = self._own_group(spec, pool(cfg.asynchronous.rollout_ranks, "rollout"))
        self.rollout.call(RolloutWorker.init_threads)
        actor = self.actor
        assert actor is not None
        ranks = Batch({"rank": torch.arange(actor.world_size)})

        def publish() -> BatchFuture:
            return actor.submit(ActorRolloutWorker.publish_weights, ranks)

        self._pipeline = RolloutPipeline(
            self.rollout,
            publish,
            self._async_prompts,
            max_staleness=cfg.asynchronous.max_staleness,
            total_steps=cfg.trainer.total_steps,
        )
        self._pipeline.start(self.step + 1, version=self.step)

    def _async_prompts(self, step: int) -> tuple[Batch, Batch, dict[str, int]]:
        state = self.sampler.state_dict()
        examples = self.sampler.next(self.config.data.prompts_per_step)
        batch = self._prompt_batch(examples, uid_prefix=f"s{step}").repeat(
            self.config.rollout.n, interleave=True
        )
        gen_in = self._generation_input(batch, self._step_seed(step), greedy=False)
        return batch, self.traffic.sent(gen_in), state

    def _check_one_process_per_rank(self) -> None:
        for role, group in (("actor", self.actor), ("critic", self.critic)):
            if group is not None and group.world_size > 1:
                pids = group.run_function(_process_id)
                if len(set(pids)) != len(pids):
                    self.close()
                    raise ConfigError(
                        f"resources.{role}_ranks = {group.world_size}: data-parallel training "
                        "needs one process per rank, but this backend runs several ranks in one "
                        "process (the in-process backend does). Use 1 rank per role with it, "
                        "or a multi-process backend (RayBackend)."
                    )

    def _own_group(self, spec: WorkerSpec[W], pool: ResourcePool) -> WorkerGroup[W]:
        """A role in its own pool (separate processes), stopped by :meth:`close`."""
        group = WorkerGroup(
            self.backend,
            spec,
            pool,
            role=pool.name.split("-")[0],
            timeout=self.config.trainer.call_timeout,
        )
        self._groups.append(group)
        return group

    def close(self) -> None:
        """Stop every worker this trainer started (the backend stays usable)."""
        for group in self._groups:
            group.shutdown()
        self._groups.clear()
        self.actor = self.critic = self.reward = self.rollout = None
        self._pipeline = None
        trackers, self.trackers = self.trackers, []
        for tracker in trackers:
            tracker.close()

    def __enter__(self) -> PPOTrainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ data
    def _prompt_batch(self, examples: Sequence[TaskExample], *, uid_prefix: str) -> Batch:
        fmt = self.config.data.prompt_format
        ids, mask = encode_prompts(
            self.tokenizer,
            [example_prompt(e, fmt) for e in examples],
            self.config.data.max_prompt_len,
            encode=self._prompt_ids,
        )

        def column(values: Sequence[object]) -> np.ndarray[Any, np.dtype[Any]]:
            out = np.empty(len(values), dtype=object)
            out[:] = list(values)
            return out

        return Batch(
            {C.PROMPT_IDS: ids, C.PROMPT_MASK: mask},
            {
                C.UID: column([f"{uid_prefix}-{i}" for i in range(len(examples))]),
                C.PROMPT: column([e.prompt for e in examples]),
                C.ANSWER: column([e.answer for e in examples]),
                C.DATA_SOURCE: column([e.data_source for e in examples]),
                C.METADATA: column([dict(e.metadata) for e in examples]),
            },
        )

    def _generation_input(self, batch: Batch, seed: int, *, greedy: bool) -> Batch:
        """The rollout's input: prompts, and one sampling seed per row (``seed`` + row)."""
        seeds = torch.arange(len(batch), dtype=torch.long) + seed * 1_000_003
        return Batch(
            {
                C.PROMPT_IDS: batch.tensors[C.PROMPT_IDS],
                C.PROMPT_MASK: batch.tensors[C.PROMPT_MASK],
                C.ROLLOUT_SEED: seeds,
            },
            meta={C.TEMPERATURE: self.config.rollout.temperature, C.GREEDY: greedy},
        )

    # ------------------------------------------------------------------ one step
    def train_step(self) -> dict[str, Any]:
        """One PPO/GRPO step: rollout -> score (+ log-probs, values) -> advantages ->
        update. Returns its metrics (does not validate or checkpoint).

        With ``trainer.pipeline_steps``: inside :meth:`fit` the next step's first stages are
        submitted as soon as this step's update is (:meth:`_start_step`). Every rank runs its
        calls in submission order, so the next rollout still uses the updated policy, and the
        ranks go from the update straight into generation while the driver collects the
        update's metrics. Where the ranks compute the advantages
        (:mod:`ppo.group_advantages`), each update is submitted with its step's first stages,
        also the next step's unless validation, a checkpoint or ``on_step`` comes between the
        two (:meth:`_how_far_ahead`); the driver's own advantages then serve the metrics
        only."""
        self.init_workers()
        cfg = self.config
        step = self.step + 1
        timing: dict[str, float] = {}
        metrics: dict[str, Any] = {}
        t_step = time.perf_counter()
        self.traffic.take()  # what validation moved is not this step's
        started, self._ahead = self._ahead, None
        if started is not None and started.step == step:
            self.traffic.add(started.traffic)
        else:
            started = self._start_step(step, with_update=self._ranks_advantages)
        data, baselines = self._collect(started, timing, t_step)
        if self._pipeline is not None:
            self._pipeline.check(step, data.view, version=step - 1)
            metrics.update(self._pipeline.staleness_metrics(data.view, version=step - 1))
            metrics.update(self._pipeline.sync_metrics(step))
        with _timed(timing, "adv"):
            data.view = self._advantages(data.view, baselines, metrics)
        t_update = time.perf_counter()
        updates = (
            started.updates if started.updates is not None else self._submit_updates(data, step)
        )
        if self._pipeline is not None:
            with _timed(timing, "sync_weights"):
                self._pipeline.publish(step)
                self._pipeline.fill(step + 1)
        metrics.update(self.traffic.take())
        ahead = self._how_far_ahead(step + 1)
        if ahead is not _Ahead.NOTHING:
            self._ahead = self._start_step(
                step + 1, with_update=self._ranks_advantages and ahead is _Ahead.WHOLE_STEP
            )
            self._ahead.traffic = self.traffic.take()
        metrics.update(_collect_updates(updates, timing, t_update))
        self.step = step
        timing["step"] = time.perf_counter() - t_step
        batch = data.view
        metrics.update(_data_metrics(batch, cfg.data.max_response_len))
        metrics.update({f"timing_s/{k}": v for k, v in timing.items()})
        n_tokens = float(batch.tensors[C.PROMPT_MASK].sum() + batch.tensors[C.RESPONSE_MASK].sum())
        metrics["perf/total_num_tokens"] = n_tokens
        metrics["perf/throughput"] = n_tokens / max(timing["step"], 1e-9)
        metrics["training/global_step"] = step
        metrics["training/epoch"] = started.epoch
        metrics["step"] = step
        return metrics

    def _recovering_step(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        """:meth:`train_step`; after a rank death, recover (:mod:`ppo.recovery`: restart the
        dead ranks, reload the last checkpoint) and train the step after that checkpoint."""
        while True:
            try:
                row = self.train_step()
            except WorkerDiedError as err:
                self._ahead = None  # its calls went to the dead ranks' queues
                if not self._recovery.recover(self, err):
                    raise
                history[:] = [r for r in history if r["step"] <= self.step]
                continue
            self._recovery.annotate(row)
            return row

    def _start_step(self, step: int, *, with_update: bool) -> StepStart:
        """Stages 1-2 of ``step``, submitted and not awaited: draw the prompts (sync mode; in
        async mode the rollout pipeline drew them and generates already), generate, and
        chain the reward, old/ref log-probs and values on the rollout's future (each rank
        fetches its own rows), so every role works as soon as its input exists. With
        ``with_update`` (the ranks compute the advantages) the actor's update is chained on
        them too, and the ranks run the whole step without waiting for the driver."""
        cfg = self.config
        baselines = None
        if self._pipeline is not None:
            self._pipeline.fill(step)  # (a no-op unless the pipeline was restarted)
            prompts, rollout, sampler_state = self._pipeline.take(step)
        else:
            sampler_state = self.sampler.state_dict()
            examples = self.sampler.next(cfg.data.prompts_per_step)
            prompts = self._prompt_batch(examples, uid_prefix=f"s{step}").repeat(
                cfg.rollout.n, interleave=True
            )
            rollout = self._rollout(prompts, seed=self._step_seed(step))
            if cfg.needs_baselines:
                baselines = self._greedy_scores(examples, step)
        assert self.actor is not None
        returned = (C.ROLLOUT_LOG_PROBS, POLICY_VERSION) if self._pipeline is not None else ()
        started = StepStart(
            step=step,
            prompts=prompts,
            rollout=rollout,
            scores=self._scores(prompts, rollout, *returned),
            old_log_probs=self.actor.submit(ActorRolloutWorker.compute_log_prob, rollout),
            ref_log_probs=(
                self.actor.submit(ActorRolloutWorker.compute_ref_log_prob, rollout)
                if cfg.needs_reference
                else None
            ),
            values=(
                self.critic.submit(CriticWorker.compute_values, rollout) if self.critic else None
            ),
            baselines=baselines,
            sampler_state=sampler_state,
            epoch=self.sampler.epoch,
        )
        if with_update:
            started.updates = self._submit_rank_update(started)
        return started

    def _submit_rank_update(self, started: StepStart) -> _Updates:
        """The actor's update of ``started``'s step, chained on its rollout, log-prob and
        reward futures; the ranks compute the advantages from the scores and the uids the
        driver sends (:mod:`ppo.group_advantages`)."""
        assert self.actor is not None
        update = started.prompts.select(tensor_keys=[], non_tensor_keys=[C.UID])
        update.meta[C.SEED] = self._step_seed(started.step)
        _check_even_split(len(update), self.actor, "actor")
        parts = [started.rollout, started.old_log_probs]
        if started.ref_log_probs is not None:
            parts.append(started.ref_log_probs)
        parts.append(started.scores)  # last, as update_policy expects
        future = self.actor.submit(
            ActorRolloutWorker.update_policy,
            self.traffic.sent(update),
            *[chained(f) for f in parts],
        )
        return {"actor": future}

    def _rollout(self, batch: Batch, *, seed: int, greedy: bool = False) -> BatchFuture:
        """Stage 1: one response per row (the actor's rollout engine), left in the object
        store: the result is a future the next stages pass on (see :mod:`ppo.dataflow`)."""
        assert self.actor is not None
        gen_in = self.traffic.sent(self._generation_input(batch, seed, greedy=greedy))
        return self.actor.submit(ActorRolloutWorker.generate, gen_in)

    def _scores(self, prompts: Batch, rollout: BatchFuture, *columns: str) -> BatchFuture:
        """Score ``rollout`` (a future: the reward ranks fetch the responses themselves); the
        result holds the controller's columns, plus the rollout ``columns`` named."""
        assert self.reward is not None
        # The example columns (the scorer's inputs); the prompt ids stay on the driver.
        sent = prompts.select(tensor_keys=[])
        if columns:
            sent.meta[C.RETURN_COLUMNS] = list(columns)
        return self.reward.submit(
            RewardWorker.compute_score, self.traffic.sent(sent), chained(rollout)
        )

    def _collect(
        self, started: StepStart, timing: dict[str, float], t_gen: float
    ) -> tuple[StepData, torch.Tensor | None]:
        """Stage 2's results: the driver receives the scores and masks, the log-probs and the
        values (the token ids stay in the object store for the update), and the ReMax
        baselines. ``timing_s/gen`` runs from ``t_gen`` until the scores arrive (generation,
        then scoring; generation may have started before ``t_gen``, ahead of its step)."""
        scores = self.traffic.received(started.scores.get())
        t0 = time.perf_counter()
        timing["gen"] = t0 - t_gen
        view = started.prompts.union(scores)
        view = view.union(
            Batch(
                {
                    C.TOKEN_LEVEL_SCORES: place_scores(
                        scores.tensors[C.SCORE], view.tensors[C.RESPONSE_MASK]
                    )
                }
            )
        )
        view = view.union(self.traffic.received(started.old_log_probs.get()))
        timing["old_log_prob"] = time.perf_counter() - t0
        parts = [started.rollout, started.old_log_probs]
        for key, future in (("ref", started.ref_log_probs), ("values", started.values)):
            if future is not None:
                view = view.union(self.traffic.received(future.get()))
                timing[key] = time.perf_counter() - t0
                parts.append(future)
        baselines = None
        if started.baselines is not None:
            greedy = self.traffic.received(started.baselines.get())
            baselines = greedy.tensors[C.SCORE].repeat_interleave(self.config.rollout.n)
        return StepData(view, parts), baselines

    def _advantages(
        self, batch: Batch, baselines: torch.Tensor | None, metrics: dict[str, Any]
    ) -> Batch:
        """Stage 3 (on the controller): KL in reward, then the advantage estimator."""
        alg = self.config.algorithm
        mask = batch.tensors[C.RESPONSE_MASK].float()
        token_scores = batch.tensors[C.TOKEN_LEVEL_SCORES]
        if baselines is not None:
            metrics["reward/greedy_baseline_mean"] = float(baselines.mean())
        if alg.use_kl_in_reward:
            token_rewards, kl_metrics = apply_kl_in_reward(
                token_level_scores=token_scores,
                old_log_prob=batch.tensors[C.OLD_LOG_PROBS],
                ref_log_prob=batch.tensors[C.REF_LOG_PROBS],
                response_mask=mask,
                controller=self.kl_ctrl,
                kind=alg.kl_penalty,
            )
            metrics.update(kl_metrics)
        else:
            token_rewards = token_scores
        advantages, returns = compute_advantages(
            alg.adv_estimator,
            AdvantageInputs(
                token_rewards=token_rewards,
                response_mask=mask,
                values=batch.tensors.get(C.VALUES),
                index=batch.non_tensors[C.UID],
                reward_baselines=baselines,
                gamma=alg.gamma,
                lam=alg.lam,
                norm_by_std=alg.norm_adv_by_std,
            ),
        )
        if POLICY_VERSION in batch.tensors:
            advantages = self._off_policy_correction(batch, advantages, metrics)
        return batch.union(
            Batch(
                {
                    C.TOKEN_LEVEL_REWARDS: token_rewards,
                    C.ADVANTAGES: advantages,
                    C.RETURNS: returns,
                }
            )
        )

    def _off_policy_correction(
        self, batch: Batch, advantages: torch.Tensor, metrics: dict[str, Any]
    ) -> torch.Tensor:
        """Decoupled PPO for samples an older policy generated: the ratio stays against the
        proximal (current) log-probs, and each stale token's advantage is weighted by
        ``min(pi_proximal / pi_behaviour, algorithm.is_cap)``. On-policy rows keep weight 1
        (their behaviour policy *is* the proximal one), so ``max_staleness = 0`` is exactly
        the synchronous update."""
        t = batch.tensors
        mask = t[C.RESPONSE_MASK].float()
        weights, tis = truncated_importance_weights(
            log_prob_behaviour=t[C.ROLLOUT_LOG_PROBS],
            log_prob_proximal=t[C.OLD_LOG_PROBS],
            response_mask=mask,
            cap=self.config.algorithm.is_cap,
        )
        stale = (t[POLICY_VERSION] < self.step).unsqueeze(1)
        metrics.update(tis)
        gap = (t[C.OLD_LOG_PROBS] - t[C.ROLLOUT_LOG_PROBS]).abs()
        metrics["async/logprob_gap_mean"] = float(masked_mean(gap, mask))
        return torch.where(stale, advantages * weights, advantages)

    def _submit_updates(self, data: StepData, step: int) -> _Updates:
        """Stage 4, submitted: critic and actor (after ``critic.warmup_steps``), data
        parallel. The driver sends only the advantages and returns; each rank fetches its rows
        of the rollout, log-probs and values from the object store (``data.parts``). The two
        updates are independent (each role's own model), so both are in flight at once."""
        assert self.actor is not None
        cfg = self.config
        update = data.view.select(tensor_keys=[C.ADVANTAGES, C.RETURNS], non_tensor_keys=[])
        update.meta[C.SEED] = self._step_seed(step)
        world = self.actor.world_size
        if cfg.trainer.balance_batch and world > 1 and len(update) % world == 0:
            # Reorder the driver's columns and the ranks' futures alike (rows stay aligned).
            lengths = token_counts(data.view, (C.PROMPT_MASK, C.RESPONSE_MASK))
            order = balanced_order(lengths, world)
            update = update.reorder(torch.tensor(order, dtype=torch.int64))
            parts = [chained(f.reorder(order)) for f in data.parts]
        else:
            parts = [chained(f) for f in data.parts]
        self.traffic.sent(update)
        pending: _Updates = {}
        if self.critic is not None:
            _check_even_split(len(update), self.critic, "critic")
            pending["critic"] = self.critic.submit(CriticWorker.update_critic, update, *parts)
        if step > cfg.critic.warmup_steps or self.critic is None:
            _check_even_split(len(update), self.actor, "actor")
            pending["actor"] = self.actor.submit(ActorRolloutWorker.update_policy, update, *parts)
        return pending

    def _greedy_scores(self, examples: Sequence[TaskExample], step: int) -> BatchFuture:
        """ReMax's baseline, submitted: the scores of one greedy response per prompt (the
        caller repeats them ``n`` times to line up with the sampled rows, interleaved)."""
        prompts = self._prompt_batch(examples, uid_prefix=f"g{step}")
        return self._scores(prompts, self._rollout(prompts, seed=step, greedy=True))

    # ------------------------------------------------------------------ validation
    def validate(self) -> dict[str, float]:
        """Greedy (or sampled) generation on the held-out set: accuracy and reward overall
        (``val/accuracy``, ``val/reward``) and per data source (verl's
        ``val-core/<source>/acc/mean@1`` and ``.../reward/mean@1``)."""
        self.init_workers()
        assert self.reward is not None
        cfg = self.config
        batch = self._prompt_batch(self.val_examples, uid_prefix="val")
        rollout = self._rollout(batch, seed=17, greedy=cfg.rollout.val_greedy)
        scores = self.traffic.received(self._scores(batch, rollout).get())
        acc, score = scores.tensors[C.ACC], scores.tensors[C.SCORE]
        out = {"val/accuracy": float(acc.mean()), "val/reward": float(score.mean())}
        sources = batch.non_tensors[C.DATA_SOURCE]
        for source in sorted(set(sources.tolist())):
            sel = torch.from_numpy(np.asarray(sources == source))
            out[f"val-core/{source}/acc/mean@1"] = float(acc[sel].mean())
            out[f"val-core/{source}/reward/mean@1"] = float(score[sel].mean())
        return out

    # ------------------------------------------------------------------ loop
    def fit(self) -> list[dict[str, Any]]:
        """Train until ``trainer.total_steps``; returns the metrics of the steps run now.
        At the end the policy is exported with ``save_pretrained`` to ``run_dir/hf_model``."""
        cfg = self.config.trainer
        self.init_workers()
        self.metrics.truncate_after(self.step)
        history: list[dict[str, Any]] = []
        start, status = time.perf_counter(), "failed"
        stop = _StopRequest()
        bar = tqdm(
            total=cfg.total_steps,
            initial=self.step,
            desc="train",
            unit="step",
            disable=not cfg.progress,
            dynamic_ncols=True,
        )
        try:
            stop.install()
            self._fitting = stop
            if self.step == 0 and cfg.test_freq > 0:
                row = {"step": 0, **self.validate()}
                self._log_row(row)
                history.append(row)
            while self.step < cfg.total_steps:
                if stop.requested and not self._update_in_flight():
                    raise KeyboardInterrupt  # (an update in flight finishes its step first)
                row = self._recovering_step(history)
                last = self.step == cfg.total_steps
                if cfg.test_freq > 0 and (self.step % cfg.test_freq == 0 or last):
                    with _timed(row, "timing_s/testing"):
                        row.update(self.validate())
                if cfg.save_freq > 0 and (self.step % cfg.save_freq == 0 or last):
                    with _timed(row, "timing_s/save_checkpoint"):
                        self.save_checkpoint()
                self._log_row(row)
                history.append(row)
                bar.update(1)
                bar.set_postfix(reward=f"{row['critic/score/mean']:.3f}")
                if self.on_step is not None:
                    self.on_step(row)
            status = "completed"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            self._fitting = None
            stop.uninstall()
            bar.close()
            self._finish(status, time.perf_counter() - start)
        self.export_pretrained(self.run_dir / "hf_model")
        return history

    def _how_far_ahead(self, step: int) -> _Ahead:
        """How much of ``step`` :meth:`fit` may start while the step before it finishes:
        nothing outside fit, past the last step or after Ctrl-C, and not the update when
        validation, a checkpoint or the ``on_step`` callback comes between the two steps (they
        must see the policy before it)."""
        cfg = self.config.trainer
        stop = self._fitting
        if stop is None or stop.requested or not cfg.pipeline_steps or step > cfg.total_steps:
            return _Ahead.NOTHING
        before = step - 1
        pause = (
            (cfg.test_freq > 0 and before % cfg.test_freq == 0)
            or (cfg.save_freq > 0 and before % cfg.save_freq == 0)
            or self.on_step is not None
        )
        return _Ahead.FIRST_STAGES if pause else _Ahead.WHOLE_STEP

    def _step_seed(self, step: int) -> int:
        """Step ``step``'s seed: its rollout's first row seed and its update's shuffle."""
        return self.config.trainer.seed * 100_003 + step

    def _update_in_flight(self) -> bool:
        """Whether the next step's update is already submitted (its step must be trained)."""
        return self._ahead is not None and self._ahead.updates is not None

    def _check_no_update_in_flight(self, what: str) -> None:
        """Refuse ``what`` (a checkpoint, an export) while the ranks' policy is ahead of
        :attr:`step`: it would be written under the wrong step."""
        if self._update_in_flight():
            assert self._ahead is not None
            raise StepInFlightError(
                f"{what}: step {self._ahead.step}'s update was submitted before fit stopped, so "
                f"the ranks' policy is no longer step {self.step}'s; call trainer.train_step() "
                f"to finish step {self._ahead.step} first (or trainer.fit() to go on)"
            )

    def _finish(self, status: str, wall_s: float) -> None:
        """Write ``reward_curve.png`` and ``summary.json``, also when the run stopped early
        (a failure here is logged, never raised over the run's own exception)."""
        try:
            self._write_figure()
            vals = [
                r["val/accuracy"]
                for r in read_metrics(self.run_dir / "metrics.jsonl")
                if r.get("val/accuracy") is not None
            ]
            latest = self.checkpoints.latest()
            self.summary = {
                "status": status,
                "step": self.step,
                "total_steps": self.config.trainer.total_steps,
                "wall_s": round(wall_s, 1),
                "val_accuracy_first": vals[0] if vals else None,
                "val_accuracy_last": vals[-1] if vals else None,
                "latest_checkpoint": str(latest) if latest is not None else None,
                "run_dir": str(self.run_dir),
            }
            write_summary(self.run_dir, self.summary)
        except Exception as exc:  # the run's own outcome matters more than its summary
            _log.warning("summary.json or the plot could not be written", error=repr(exc))

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
    def export_pretrained(self, directory: str | Path) -> Path:
        """Write the current policy and tokenizer with ``save_pretrained`` into ``directory``
        (``AutoModelForCausalLM.from_pretrained(directory)`` loads it)."""
        self.init_workers()
        self._check_no_update_in_flight("export_pretrained")
        assert self.actor is not None
        path = Path(directory)
        self.actor.call(ActorRolloutWorker.export_pretrained, str(path))
        _log.info("policy exported", path=str(path))
        return path

    def save_checkpoint(self) -> Path:
        """Write an atomic checkpoint of every role and the trainer state for this step."""
        self._check_no_update_in_flight("save_checkpoint")
        assert self.actor is not None
        actor, critic, tokenizer = self.actor, self.critic, self.tokenizer

        def write_parts(directory: Path) -> None:
            actor.call(ActorRolloutWorker.save_checkpoint, str(directory))
            if critic is not None:
                critic.call(CriticWorker.save_checkpoint, str(directory))
            tokenizer.save_pretrained(directory / "tokenizer")

        state = {
            "step": self.step,
            "sampler": self._sampler_state(),
            "kl_ctrl": self.kl_ctrl.state_dict(),
            "rng_torch": torch.get_rng_state(),
            "rng_python": list(random.getstate()[1]),
        }
        path = self.checkpoints.save(self.step, state, write_parts, meta=self._resume_view())
        _log.info("checkpoint saved", step=self.step, path=str(path))
        return path

    def _sampler_state(self) -> dict[str, int]:
        """The data position of the next step to train (prompts already drawn for steps still
        in flight are drawn again after a resume)."""
        if self._ahead is not None:
            return self._ahead.sampler_state
        if self._pipeline is not None:
            state = self._pipeline.sampler_state_for(self.step + 1)
            if state is not None:
                return state
        return self.sampler.state_dict()

    def _resume_view(self) -> dict[str, Any]:
        """What a checkpoint records for the resume check: the resolved config and the
        tokenizer in use (see :mod:`ppo.resume_check`)."""
        tok = type(self.tokenizer)
        return {
            "config": config_to_dict(self.config),
            "tokenizer_in_use": {
                "class": f"{tok.__module__}.{tok.__qualname__}",
                "vocab_size": self.tokenizer.vocab_size,
            },
        }

    def _prepare_run_dir(self) -> Path | None:
        """Before any worker starts: pick the checkpoint to resume (refusing an incompatible
        one), claim the run directory (refusing another run's), repair a metrics file cut by
        a kill, and write ``config.toml``. Returns the checkpoint to load, if any."""
        cfg = self.config.trainer
        resume = self.checkpoints.resolve(cfg.resume)
        own = resume is not None and resume.resolve().parent == self.checkpoints.root.resolve()
        if resume is not None:
            meta = self.checkpoints.read_meta(resume)
            if "config" in meta:
                saved = {**meta["config"], "tokenizer_in_use": meta.get("tokenizer_in_use", {})}
                view = self._resume_view()
                check_resume(
                    saved, {**view["config"], "tokenizer_in_use": view["tokenizer_in_use"]}, resume
                )
            else:
                _log.warning(
                    "checkpoint has no meta.json; config compatibility unchecked", path=str(resume)
                )
            if own and "run_id" in meta:
                self.checkpoints.run_id = str(meta["run_id"])
        prepare_run_dir(self.run_dir, fresh=not own, overwrite=cfg.overwrite)
        repair_metrics(self.run_dir / "metrics.jsonl")
        write_config_toml(self.run_dir, config_to_dict(self.config))
        return resume

    def _load(self, path: Path) -> None:
        assert self.actor is not None
        state = self.checkpoints.load_trainer_state(path)
        self.actor.call(ActorRolloutWorker.load_checkpoint, str(path))
        if self.critic is not None:
            self.critic.call(CriticWorker.load_checkpoint, str(path))
        self._ahead = None  # started from the data position being replaced
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


class _Ahead(enum.Enum):
    """How much of the next step :meth:`PPOTrainer.fit` starts while a step finishes."""

    NOTHING = "nothing"
    #: Generation, scoring, log-probs and values (they do not change the policy).
    FIRST_STAGES = "first stages"
    #: The update as well, where the ranks compute the advantages.
    WHOLE_STEP = "whole step"


class _StopRequest:
    """Ctrl-C during :meth:`PPOTrainer.fit` stops the run *between* steps: the first SIGINT
    only sets a flag (a KeyboardInterrupt raised at an arbitrary point can be swallowed by a
    library, e.g. inside a garbage-collection callback while plotting), and restores the
    previous handler so a second Ctrl-C interrupts at once. A no-op outside the main thread."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self._previous = signal.getsignal(signal.SIGINT) or signal.default_int_handler
        signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: object) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)
        _log.warning("stopping after this step (press Ctrl-C again to stop now)")

    def uninstall(self) -> None:
        if self._previous is not None and not self.requested:
            signal.signal(signal.SIGINT, self._previous)
        self._previous = None


@contextlib.contextmanager
def _timed(into: dict[str, Any], key: str) -> Iterator[None]:
    """Add the block's wall time in seconds to ``into[key]``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        into[key] = into.get(key, 0.0) + time.perf_counter() - t0


def _process_id(worker: object) -> int:
    import os

    return os.getpid()


#: A step's submitted updates by role (``"critic"``, ``"actor"``): each rank's metrics.
_Updates = dict[str, GroupFuture[list[dict[str, float]]]]


def _collect_updates(
    pending: _Updates, timing: dict[str, float], t_submit: float
) -> dict[str, Any]:
    """Each role's update metrics averaged over its ranks (``critic/...``, ``actor/...``);
    ``timing_s/update_<role>`` runs from ``t_submit`` until that role's results arrive."""
    metrics: dict[str, Any] = {}
    for role, future in pending.items():
        per_rank = future.get()
        timing[f"update_{role}"] = time.perf_counter() - t_submit
        metrics.update({f"{role}/{k}": v for k, v in _average(per_rank).items()})
    return metrics


def _average(per_rank: Sequence[Mapping[str, float]]) -> dict[str, float]:
    keys = sorted({k for m in per_rank for k in m})
    return {k: float(np.mean([m[k] for m in per_rank if k in m])) for k in keys}


def _check_even_split(rows: int, group: WorkerGroup[Any], role: str) -> None:
    """The update must not pad (a repeated row would train twice): ``rows`` must divide."""
    if rows % group.world_size:
        raise ConfigError(
            f"resources.{role}_ranks = {group.world_size}: the step's {rows} sequences "
            f"(data.prompts_per_step * rollout.n) must divide evenly over the {role} ranks"
        )


def _data_metrics(batch: Batch, max_response_len: int) -> dict[str, float]:
    """The step's data metrics, named as verl names them (see docs/metrics.md), from the
    controller's columns (:mod:`ppo.dataflow`)."""
    t = batch.tensors
    mask = t[C.RESPONSE_MASK].float()
    lengths = mask.sum(dim=1)
    prompt_lengths = t[C.PROMPT_MASK].sum(dim=1).float()
    # Cut at the limit: every one of the max_response_len tokens used, and the last not EOS.
    clipped = (lengths >= max_response_len) & ~t[C.ENDS_WITH_EOS]
    valid = mask.bool()
    adv, score = t[C.ADVANTAGES], t[C.SCORE]
    out = {
        "critic/score/mean": float(score.mean()),
        "critic/score/max": float(score.max()),
        "critic/score/min": float(score.min()),
        "critic/rewards/mean": float(t[C.TOKEN_LEVEL_REWARDS].sum(dim=1).mean()),
        "critic/acc/mean": float(t[C.ACC].mean()),
        "critic/advantages/mean": float(masked_mean(adv, mask)),
        "critic/advantages/max": float(adv[valid].max()) if valid.any() else 0.0,
        "critic/advantages/min": float(adv[valid].min()) if valid.any() else 0.0,
        "response_length/mean": float(lengths.mean()),
        "response_length/max": float(lengths.max()),
        "response_length/min": float(lengths.min()),
        "response_length/clip_ratio": float(clipped.float().mean()),
        "prompt_length/mean": float(prompt_lengths.mean()),
        "actor/entropy_rollout": float(masked_mean(t[C.ENTROPY], mask)),
    }
    if C.VALUES in t:
        out["critic/values/mean"] = float(masked_mean(t[C.VALUES], mask))
        out["critic/returns/mean"] = float(masked_mean(t[C.RETURNS], mask))
    if C.REF_LOG_PROBS in t:
        kl = t[C.OLD_LOG_PROBS] - t[C.REF_LOG_PROBS]
        out["actor/reward_kl_penalty"] = float(masked_mean(kl, mask))
    return {k: (v if math.isfinite(v) else float("nan")) for k, v in out.items()}
