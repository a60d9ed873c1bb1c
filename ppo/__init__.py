"""PPO/GRPO post-training on the runtime: ``PPOTrainer(backend=..., config=...)``.

Never imports ray: the trainer receives a :class:`runtime.Backend`. Pure algorithms live in
:mod:`ppo.algos`; the small transformer, tokenizer and verifiable tasks in :mod:`ppo.model`,
:mod:`ppo.tokenizer` and :mod:`ppo.tasks`.
"""

from ppo.checkpoint import CheckpointManager
from ppo.config import ConfigError, PPOConfig, load_config
from ppo.tasks import RewardFn, Task, TaskExample, get_task
from ppo.trainer import PPOTrainer
from ppo.workers import ActorRolloutWorker, CriticWorker, RewardWorker

__all__ = [
    "ActorRolloutWorker",
    "CheckpointManager",
    "ConfigError",
    "CriticWorker",
    "PPOConfig",
    "PPOTrainer",
    "RewardFn",
    "RewardWorker",
    "Task",
    "TaskExample",
    "get_task",
    "load_config",
]
