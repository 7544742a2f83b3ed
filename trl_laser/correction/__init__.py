"""Self-rewarding correction (Xiong et al. 2025): a model that solves, judges its answer with an explicit verdict,
revises when it judged itself wrong, and stops by itself; plus the cheap variant whose "revise or stop" decision is
the LaSeR last-token score.

- `format`: prompts and the trajectory format (data, overridable),
- `rejection_sampling`: stage 1 data (sequential rejection sampling → a dataset for TRL's `SFTTrainer`),
- `rewards`: answer checking and the stage-2 reward on the last answer of a trajectory,
- `generation`: batched generation (transformers; vLLM when installed),
- `loop`: `self_correct`, the verbal and the LaSeR loops,
- `evaluation`: the method's metrics and `evaluate_correction`.
"""

from .evaluation import correction_metrics, evaluate_correction
from .format import COMPARE_FORMAT, CORRECT, MATH_FORMAT, WRONG, Attempt, CorrectionFormat, default_format
from .generation import Completion, Generator, TransformersGenerator, VLLMGenerator, load_generator
from .loop import CorrectionResult, laser_score_fn, self_correct
from .rejection_sampling import (
    RejectionSamplingConfig,
    assemble_trajectories,
    run_rejection_sampling,
    select_evaluations,
    select_revisions,
)
from .rewards import answers_match, extract_answer, final_answer, is_correct, last_boxed, make_trajectory_reward


__all__ = [
    "COMPARE_FORMAT",
    "CORRECT",
    "MATH_FORMAT",
    "WRONG",
    "Attempt",
    "Completion",
    "CorrectionFormat",
    "CorrectionResult",
    "Generator",
    "RejectionSamplingConfig",
    "TransformersGenerator",
    "VLLMGenerator",
    "answers_match",
    "assemble_trajectories",
    "correction_metrics",
    "default_format",
    "evaluate_correction",
    "extract_answer",
    "final_answer",
    "is_correct",
    "laser_score_fn",
    "last_boxed",
    "load_generator",
    "make_trajectory_reward",
    "run_rejection_sampling",
    "select_evaluations",
    "select_revisions",
    "self_correct",
]
