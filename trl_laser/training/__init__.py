"""LaSeR training: `LaSeRConfig`, `LaSeRGRPOTrainer` (the TRL adapter; the math is in `trl_laser.core`), and an SFT
warm-start on a task's worked solutions (`warm_start`)."""

from .config import LaSeRConfig
from .trainer import LaSeRGRPOTrainer
from .warm_start import WarmStartArguments, sft_warm_start


__all__ = ["LaSeRConfig", "LaSeRGRPOTrainer", "WarmStartArguments", "sft_warm_start"]
