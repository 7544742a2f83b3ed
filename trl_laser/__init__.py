"""LaSeR (last-token self-rewarding) and self-rewarding correction for Hugging Face TRL."""

import importlib
from typing import TYPE_CHECKING


__version__ = "0.1.0"

# Imported on first use, so `import trl_laser` stays light (the CLI and the examples import only what they need).
_EXPORTS = {
    "LaSeRConfig": "trl_laser.training.config",
    "LaSeRGRPOTrainer": "trl_laser.training.trainer",
    "SelfRewardConfig": "trl_laser.scoring.recipe",
    "load_self_reward_config": "trl_laser.scoring.recipe",
    "estimate_reference_constant": "trl_laser.scoring.reference_constant",
    "SelfRewardScorer": "trl_laser.scoring.scorer",
    "Task": "trl_laser.tasks.task",
    "load_problems": "trl_laser.tasks.data",
}

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

if TYPE_CHECKING:
    from .scoring.recipe import SelfRewardConfig, load_self_reward_config
    from .scoring.reference_constant import estimate_reference_constant
    from .scoring.scorer import SelfRewardScorer
    from .tasks.data import load_problems
    from .tasks.task import Task
    from .training.config import LaSeRConfig
    from .training.trainer import LaSeRGRPOTrainer


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'trl_laser' has no attribute {name!r}")
