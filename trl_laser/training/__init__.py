"""LaSeR training: `LaSeRConfig`, `LaSeRGRPOTrainer` and the LaSeR math as pure tensor functions."""

from .config import LaSeRConfig
from .trainer import LaSeRGRPOTrainer


__all__ = ["LaSeRConfig", "LaSeRGRPOTrainer"]
