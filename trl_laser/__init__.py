"""LaSeR (last-token self-rewarding) and self-rewarding correction for Hugging Face TRL."""

import importlib
from typing import TYPE_CHECKING


__version__ = "0.1.0"

# Imported on first use, so `import trl_laser` stays light (the CLI and the examples import only what they need).
_EXPORTS = {
    "LaSeRConfig": "trl_laser.laser_config",
    "LaSeRGRPOTrainer": "trl_laser.laser_trainer",
    "SelfRewardConfig": "trl_laser.metadata",
    "load_self_reward_config": "trl_laser.metadata",
    "estimate_reference_constant": "trl_laser.reference_constant",
    "SelfRewardScorer": "trl_laser.inference.scorer",
}

__all__ = [
    "LaSeRConfig",
    "LaSeRGRPOTrainer",
    "SelfRewardConfig",
    "SelfRewardScorer",
    "estimate_reference_constant",
    "load_self_reward_config",
]

if TYPE_CHECKING:
    from .inference.scorer import SelfRewardScorer
    from .laser_config import LaSeRConfig
    from .laser_trainer import LaSeRGRPOTrainer
    from .metadata import SelfRewardConfig, load_self_reward_config
    from .reference_constant import estimate_reference_constant


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'trl_laser' has no attribute {name!r}")
