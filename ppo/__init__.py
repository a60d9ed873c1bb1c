"""PPO/GRPO post-training of Hugging Face causal LMs on the runtime:
``PPOTrainer(backend=..., config=...)``.

Never imports ray: the trainer receives a :class:`runtime.Backend`. Pure algorithms live in
:mod:`ppo.algos`; models in :mod:`ppo.lm`; the rollout seam in :mod:`ppo.rollout`; the
tokenizer in :mod:`ppo.tokenizer`; rewards per batch in :mod:`ppo.scoring`; verifiable tasks
in :mod:`ppo.tasks`; asynchronous rollouts in :mod:`ppo.pipeline`.
"""

from ppo.checkpoint import CheckpointManager
from ppo.config import ConfigError, PPOConfig, load_config
from ppo.pipeline import RolloutWorker
from ppo.rollout import HFRolloutEngine, RolloutEngine, SamplingParams
from ppo.scoring import RewardFnScorer, Scorer
from ppo.tasks import RewardFn, Task, TaskExample, get_task
from ppo.tokenizer import HFTokenizer, Tokenizer, load_tokenizer
from ppo.trainer import PPOTrainer, StepInFlightError
from ppo.workers import ActorRolloutWorker, CriticWorker, RewardWorker

__all__ = [
    "ActorRolloutWorker",
    "CheckpointManager",
    "ConfigError",
    "CriticWorker",
    "HFRolloutEngine",
    "HFTokenizer",
    "PPOConfig",
    "PPOTrainer",
    "RewardFn",
    "RewardFnScorer",
    "RewardWorker",
    "RolloutEngine",
    "RolloutWorker",
    "SamplingParams",
    "Scorer",
    "StepInFlightError",
    "Task",
    "TaskExample",
    "Tokenizer",
    "get_task",
    "load_config",
    "load_tokenizer",
]
