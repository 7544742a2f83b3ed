"""Evaluation of a model's self-reward: verification metrics, test-time voting, plots, and `evaluate` (sample, score,
grade, vote and report)."""

from .evaluate import EvaluationConfig, evaluate, evaluate_samples
from .metrics import auroc, expected_calibration_error, verification_report
from .voting import aggregation_curves, best_of_n, group_answers, majority_vote, pass_at_k, self_reward_vote


__all__ = [
    "EvaluationConfig",
    "aggregation_curves",
    "auroc",
    "best_of_n",
    "evaluate",
    "evaluate_samples",
    "expected_calibration_error",
    "group_answers",
    "majority_vote",
    "pass_at_k",
    "self_reward_vote",
    "verification_report",
]
