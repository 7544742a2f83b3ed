"""Evaluation of a model's self-reward: verification metrics, test-time voting, plots, and `evaluate` (sample, score,
grade, vote and report)."""

from .evaluate import EvaluationConfig, evaluate, evaluate_samples
from .metrics import adjust_to_prior, auroc, estimate_prior, expected_calibration_error, verification_report
from .voting import aggregation_curves, best_of_n, group_answers, majority_vote, pass_at_k, self_reward_vote


__all__ = [
    "EvaluationConfig",
    "adjust_to_prior",
    "aggregation_curves",
    "auroc",
    "best_of_n",
    "estimate_prior",
    "evaluate",
    "evaluate_samples",
    "expected_calibration_error",
    "group_answers",
    "majority_vote",
    "pass_at_k",
    "self_reward_vote",
    "verification_report",
]
