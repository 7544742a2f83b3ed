"""Built-in tasks with verifiable answers, and the reward functions that check them."""

from .compare import COMPARE_FEW_SHOT, make_compare_dataset
from .rewards import exact_answer_reward, extract_last_integer, math_answer_reward


__all__ = [
    "COMPARE_FEW_SHOT",
    "exact_answer_reward",
    "extract_last_integer",
    "make_compare_dataset",
    "math_answer_reward",
]
