"""Self-rewarding correction (Xiong et al. 2025): a model that solves, judges its answer with an explicit verdict,
revises when it judged itself wrong, and stops by itself; plus the cheap variant whose "revise or stop" decision is
the LaSeR last-token score.

- the trajectory format is data, `trl_laser.tasks.format` (each task carries its wording as `Task.correction`),
- `rejection_sampling`: stage 1 data (sequential rejection sampling → a dataset for TRL's `SFTTrainer`),
- `rewards`: the stage-2 reward on the last answer of a trajectory,
- `laser`: the LaSeR variant's attempts: their context, training rows and reward (where the score is trained and read),
- `loop`: `self_correct`, the verbal and the LaSeR loops (generation and scoring by `SelfRewardScorer`),
- `evaluation`: the method's metrics and `evaluate_correction`.
"""

from ..tasks.format import CORRECT, WRONG, Attempt, CorrectionFormat
from .evaluation import correction_metrics, evaluate_correction
from .laser import attempt_prefix, attempt_prompt_text, attempt_rows, make_attempt_reward, trajectory_attempts
from .loop import CorrectionResult, self_correct
from .rejection_sampling import (
    RejectionSamplingConfig,
    assemble_trajectories,
    balance_types,
    run_rejection_sampling,
    select_evaluations,
    select_revisions,
)
from .rewards import final_answer, make_trajectory_reward


__all__ = [
    "CORRECT",
    "WRONG",
    "Attempt",
    "CorrectionFormat",
    "CorrectionResult",
    "RejectionSamplingConfig",
    "assemble_trajectories",
    "attempt_prefix",
    "attempt_prompt_text",
    "attempt_rows",
    "balance_types",
    "correction_metrics",
    "evaluate_correction",
    "final_answer",
    "make_attempt_reward",
    "make_trajectory_reward",
    "run_rejection_sampling",
    "select_evaluations",
    "select_revisions",
    "self_correct",
    "trajectory_attempts",
]
