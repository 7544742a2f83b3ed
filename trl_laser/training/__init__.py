"""LaSeR training: `LaSeRConfig`, `LaSeRGRPOTrainer`, the LaSeR math as pure tensor functions (`self_reward`), and
an SFT warm-start on a task's worked solutions (`warm_start`)."""

import importlib
from typing import TYPE_CHECKING


# Imported on first use: the scorer and the evaluation need only the pure math in `self_reward`, not TRL's trainer.
_EXPORTS = {
    "LaSeRConfig": ".config",
    "LaSeRGRPOTrainer": ".trainer",
    "WarmStartArguments": ".warm_start",
    "sft_warm_start": ".warm_start",
}
__all__ = ["LaSeRConfig", "LaSeRGRPOTrainer", "WarmStartArguments", "sft_warm_start"]

if TYPE_CHECKING:
    from .config import LaSeRConfig
    from .trainer import LaSeRGRPOTrainer
    from .warm_start import WarmStartArguments, sft_warm_start


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
