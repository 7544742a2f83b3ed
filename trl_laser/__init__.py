"""LaSeR (last-token self-rewarding) and self-rewarding correction for Hugging Face TRL."""

from ._version import __version__ as __version__
from .core.recipe import SelfRewardConfig, load_self_reward_config
from .scoring.reference_constant import estimate_reference_constant
from .scoring.scorer import SelfRewardScorer
from .tasks.data import load_problems
from .tasks.task import Task
from .training.config import LaSeRConfig
from .training.trainer import LaSeRGRPOTrainer


__all__ = [
    "LaSeRConfig",
    "LaSeRGRPOTrainer",
    "SelfRewardConfig",
    "SelfRewardScorer",
    "Task",
    "estimate_reference_constant",
    "load_problems",
    "load_self_reward_config",
]
