"""LaSeR training: `LaSeRConfig`, `LaSeRGRPOTrainer` and the LaSeR math as pure tensor functions (`self_reward`)."""

import importlib
from typing import TYPE_CHECKING


# Imported on first use: the scorer and the evaluation need only the pure math in `self_reward`, not TRL's trainer.
_EXPORTS = {"LaSeRConfig": ".config", "LaSeRGRPOTrainer": ".trainer"}
__all__ = ["LaSeRConfig", "LaSeRGRPOTrainer"]

if TYPE_CHECKING:
    from .config import LaSeRConfig
    from .trainer import LaSeRGRPOTrainer


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
