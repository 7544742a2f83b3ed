"""How good is the self-reward as a verifier? Functions of plain lists.

Inputs are per-sample scores r_s (None for completions that hit the length limit and so have no score) and
correctness labels. Unscored samples are left out of every metric here. Calibration treats clip(r_s, 0, 1) as the
model's probability that its answer is correct.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..core.self_reward import CORRECT_THRESHOLD, metrics_from_counts, verification_counts
from ..core.self_reward import auroc as ranked_auroc


NAN = float("nan")


def clip01(score: float) -> float:
    """clip(r_s, 0, 1): the score used as a vote weight and as a probability."""
    return min(max(score, 0.0), 1.0)


def _scored(scores: Sequence[float | None], labels: Sequence[bool]) -> tuple[list[float], list[bool]]:
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores but {len(labels)} labels.")
    pairs = [(float(s), bool(y)) for s, y in zip(scores, labels, strict=True) if s is not None and not math.isnan(s)]
    return [s for s, _ in pairs], [y for _, y in pairs]


def auroc(scores: Sequence[float | None], labels: Sequence[bool]) -> float:
    """AUROC of the scored samples (`self_reward.auroc`: P(s⁺ > s⁻) + ½ P(s⁺ = s⁻)); NaN when a class is empty."""
    return ranked_auroc(*_scored(scores, labels))


def roc_curve(scores: Sequence[float | None], labels: Sequence[bool]) -> tuple[list[float], list[float]]:
    """The ROC curve of `scores` for finding correct (True) samples: false- and true-positive rates as the threshold
    sweeps from above the highest score down through every distinct score (ties move together), from (0, 0) to
    (1, 1). Its trapezoid area is `auroc`. Empty lists when a class is empty."""
    values, targets = _scored(scores, labels)
    num_pos = sum(targets)
    num_neg = len(targets) - num_pos
    if num_pos == 0 or num_neg == 0:
        return [], []
    order = sorted(range(len(values)), key=lambda i: -values[i])
    fpr, tpr = [0.0], [0.0]
    true_pos = false_pos = 0
    for rank, i in enumerate(order):
        true_pos += targets[i]
        false_pos += not targets[i]
        if rank + 1 == len(order) or values[order[rank + 1]] != values[i]:
            fpr.append(false_pos / num_neg)
            tpr.append(true_pos / num_pos)
    return fpr, tpr


@dataclass
class ReliabilityBin:
    """One bin [lower, upper) of a reliability diagram (the last bin includes 1)."""

    lower: float
    upper: float
    count: int
    confidence: float  # mean clip(r_s, 0, 1) of the samples in the bin (NaN when empty)
    accuracy: float  # fraction correct in the bin (NaN when empty)


def reliability_bins(
    scores: Sequence[float | None], labels: Sequence[bool], num_bins: int = 10
) -> list[ReliabilityBin]:
    """Equal-width bins of p = clip(r_s, 0, 1) on [0, 1], with the mean p and the accuracy in each."""
    values, targets = _scored(scores, labels)
    members: list[list[int]] = [[] for _ in range(num_bins)]
    for i, score in enumerate(values):
        p = clip01(score)
        members[min(int(p * num_bins), num_bins - 1)].append(i)
    bins = []
    for b, idx in enumerate(members):
        confidence = sum(clip01(values[i]) for i in idx) / len(idx) if idx else NAN
        accuracy = sum(targets[i] for i in idx) / len(idx) if idx else NAN
        bins.append(ReliabilityBin(b / num_bins, (b + 1) / num_bins, len(idx), confidence, accuracy))
    return bins


def expected_calibration_error(scores: Sequence[float | None], labels: Sequence[bool], num_bins: int = 10) -> float:
    """ECE = Σ_b (n_b / N) · |accuracy_b − confidence_b| over equal-width bins of p = clip(r_s, 0, 1).

    NaN when there is no scored sample.
    """
    bins = reliability_bins(scores, labels, num_bins)
    total = sum(b.count for b in bins)
    if total == 0:
        return NAN
    return sum(b.count / total * abs(b.accuracy - b.confidence) for b in bins if b.count)


def adjust_to_prior(score: float, prior: float, eps: float = 1e-6) -> float:
    """The probability of "correct" that a balanced-prior score p = clip(r_s, 0, 1) implies at a base rate `prior`.

        p' = π p / (π p + (1 − π)(1 − p))

    LaSeR's class-balanced loss weighs right and wrong answers equally, so r_s estimates P(correct) as if half the
    answers were right (Bayes' rule with the odds re-weighted, Saerens et al. 2002). This puts it back on the base
    rate of the data scored. The 0.5 threshold of `verification_report` stays on r_s itself.
    """
    p = min(max(clip01(score), eps), 1 - eps)
    return prior * p / (prior * p + (1 - prior) * (1 - p))


def estimate_prior(scores: Sequence[float | None], iterations: int = 100, tol: float = 1e-8) -> float:
    """The base rate of correct answers among `scores`, estimated without labels: the fixed point of
    π = mean_i adjust_to_prior(r_s_i, π) (the EM of Saerens et al. 2002, starting from the balanced 0.5).
    NaN when no sample is scored."""
    values = [clip01(float(s)) for s in scores if s is not None and not math.isnan(s)]
    if not values:
        return NAN
    prior = 0.5
    for _ in range(iterations):
        updated = sum(adjust_to_prior(v, prior) for v in values) / len(values)
        if abs(updated - prior) < tol:
            return updated
        prior = updated
    return prior


def verification_report(
    scores: Sequence[float | None], labels: Sequence[bool], threshold: float = CORRECT_THRESHOLD, num_bins: int = 10
) -> dict[str, float]:
    """Self-verification of the scored samples: "judged correct" means r_s > threshold (`CORRECT_THRESHOLD`).

    Returns the per-class accuracies (`acc_correct`: judged correct among correct samples, `acc_incorrect`: judged
    incorrect among incorrect ones), their harmonic mean `f1` (the LaSeR authors' definition), overall `accuracy` of
    the judgement, `auroc`, `ece`, the mean r_s per class and the counts. A metric with an empty class is NaN.

    `estimated_prior` is the share of correct answers the scores imply (`estimate_prior`, no labels used) and
    `ece_prior_adjusted` the ECE of the scores moved to that base rate (`adjust_to_prior`): how well calibrated r_s is
    once the class balance of its training loss is undone.
    """
    values, targets = _scored(scores, labels)
    prior = estimate_prior(values)
    adjusted = [adjust_to_prior(v, prior) for v in values]
    # The same sums and per-class metrics as the training logs (`self_reward/` metrics), on all the scored samples.
    counts = verification_counts(
        torch.tensor(values, dtype=torch.float64),
        torch.tensor(targets, dtype=torch.float64),
        torch.ones(len(values), dtype=torch.bool),
        threshold,
    ).tolist()
    per_class = metrics_from_counts(counts)
    num_correct, num_incorrect = int(counts[4]), int(counts[5])
    return {
        "acc_correct": per_class["acc_correct"],
        "acc_incorrect": per_class["acc_incorrect"],
        "f1": per_class["f1"],
        "accuracy": (counts[2] + counts[3]) / len(values) if values else NAN,
        "auroc": auroc(values, targets),
        "ece": expected_calibration_error(values, targets, num_bins),
        "estimated_prior": prior,
        "ece_prior_adjusted": expected_calibration_error(adjusted, targets, num_bins),
        "score_correct": per_class["score_correct"],
        "score_incorrect": per_class["score_incorrect"],
        "num_correct": num_correct,
        "num_incorrect": num_incorrect,
        "num_unscored": len(scores) - len(values),
    }
