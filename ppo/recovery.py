"""Recovery without restarting the job: a dead rank is replaced and training goes on.

When a rank dies during a training step (:class:`runtime.errors.WorkerDiedError`) and
``trainer.max_restarts`` allows it, :meth:`Recovery.recover`:

1. restarts every worker group with a dead rank (:meth:`runtime.WorkerGroup.restart`: the same
   ranks, placement and master address, fresh processes; every role of a fused group);
2. re-forms ``torch.distributed`` through the roles' ``init_distributed``, the same explicit
   call the trainer makes at start;
3. reloads the last complete checkpoint into every role (restarted or not) and the trainer's
   state (step, data position, KL controller, RNG), and drops the metrics rows of the steps
   that are trained again;

then the trainer trains the step after the checkpoint. Each recovery logs one warning line,
and the next completed step's metrics carry ``recovery/restarts`` (how many so far) and
``recovery/restart_s`` (seconds from the failed call to the end of that step).

Not recovered (the error is raised as before): a death with no checkpoint written yet, more
deaths than ``max_restarts``, a death outside a training step (validation, checkpoint
writing) and async mode (its rollout pipeline is not restarted).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ppo.workers import ActorRolloutWorker, CriticWorker
from runtime import WorkerGroup, get_logger
from runtime.errors import WorkerDiedError

if TYPE_CHECKING:
    from ppo.trainer import PPOTrainer

__all__ = ["Recovery"]

_log = get_logger(component="ppo")

#: How long replacing a group's hosts may take (process start + model build).
RESTART_TIMEOUT_S = 300.0


class Recovery:
    """Counts restarts against ``max_restarts`` and performs them for one trainer."""

    def __init__(self, max_restarts: int) -> None:
        self.max_restarts = max_restarts
        #: Recoveries done so far.
        self.restarts = 0
        #: ``time.monotonic()`` of the failure being recovered, until a step completes.
        self._failed_at: float | None = None

    def recover(self, trainer: PPOTrainer, err: WorkerDiedError) -> bool:
        """Replace the dead ranks and reload the last checkpoint; ``False`` when this failure
        cannot be recovered (the caller raises ``err``)."""
        failed_at = time.monotonic()
        if self.restarts >= self.max_restarts:
            if self.max_restarts > 0:
                _log.error("no restarts left", max_restarts=self.max_restarts)
            return False
        if trainer.config.trainer.mode != "sync":
            _log.error(
                "restarts cover trainer.mode = 'sync' only", mode=trainer.config.trainer.mode
            )
            return False
        checkpoint = trainer.checkpoints.latest()
        if checkpoint is None:
            _log.error(
                "no checkpoint to recover from yet; lower trainer.save_freq to checkpoint sooner",
                save_freq=trainer.config.trainer.save_freq,
            )
            return False
        self.restarts += 1
        self._failed_at = failed_at
        restarted = _restart_dead_groups(trainer)
        _reload(trainer, checkpoint)
        _log.warning(
            f"rank {err.rank} of {err.role!r} died in {err.method!r}; restarted "
            f"{', '.join(restarted)} and resumed from {checkpoint.name} "
            f"(restart {self.restarts} of {self.max_restarts})",
            node=err.node,
            step=trainer.step,
        )
        return True

    def annotate(self, row: dict[str, Any]) -> None:
        """Add the recovery metrics to a completed step's row."""
        row["recovery/restarts"] = self.restarts
        if self._failed_at is not None:
            row["recovery/restart_s"] = time.monotonic() - self._failed_at
            self._failed_at = None


def _restart_dead_groups(trainer: PPOTrainer) -> list[str]:
    """Restart each distinct group (a fused group once) that has a dead rank; returns their
    names."""
    views: list[WorkerGroup[Any]] = [
        g for g in (trainer.actor, trainer.critic, trainer.reward) if g is not None
    ]
    done: dict[str, bool] = {}
    for view in views:
        if view.name in done:
            continue
        try:
            view.check_alive()
            done[view.name] = False
        except WorkerDiedError:
            view.restart(timeout=RESTART_TIMEOUT_S)
            done[view.name] = True
    return [name for name, restarted in done.items() if restarted] or ["no group (all alive)"]


def _reload(trainer: PPOTrainer, checkpoint: Path) -> None:
    """Re-form ``torch.distributed`` and load ``checkpoint`` into the roles and the trainer."""
    assert trainer.actor is not None
    trainer.actor.call(ActorRolloutWorker.init_distributed)
    if trainer.critic is not None:
        trainer.critic.call(CriticWorker.init_distributed)
    trainer._load(checkpoint)  # the resume path of init_workers
    trainer.metrics.truncate_after(trainer.step)
