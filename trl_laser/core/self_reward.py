"""The LaSeR math as pure functions on tensors (no trainer state).

Notation (Yang et al. 2025, "LaSeR: Reinforcement Learning with Last-Token Self-Rewarding"):
- r_v: verifier reward of a completion (in [0, 1]; "correct" means r_v > 0.5),
- log π(z_c | x, y): log-probability of the self-reward token z_c at the position right after the completion's EOS,
- r_s = β_v · (log π(z_c | x, y) − c_ref): the self-reward score,
- the alignment loss α · Σ_i w_i (r_s,i − r_v,i)² / N over the N finished, rewarded completions.
"""

import math
from collections.abc import Sequence

import torch


CORRECT_THRESHOLD = 0.5
"""A completion counts as correct when r_v > 0.5, and as *judged* correct by the model when r_s > 0.5."""


def reference_constant(log_probs: Sequence[float]) -> tuple[float, float]:
    """c_ref = mean over finished completions of log π_ref(z_c | x, y), and the sample standard deviation of those
    values (0 for a single value), which says how far the untrained score spreads around 0."""
    if not log_probs:
        raise ValueError("c_ref needs at least one finished completion.")
    mean = sum(log_probs) / len(log_probs)
    if len(log_probs) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in log_probs) / (len(log_probs) - 1))


def self_reward_score(token_log_probs: torch.Tensor, beta: float, ref_log_probs: torch.Tensor | float) -> torch.Tensor:
    """r_s = β_v · (log π_θ(z_c | x, y) − log π_ref(z_c | x, y)), paper Eq. (8).

    `ref_log_probs` is either the reference model's log-prob per completion (exact form) or the constant c_ref that
    replaces it (the paper's approximation: z_c is a token the model never emits, so π_ref(z_c | ·) barely varies).
    """
    return beta * (token_log_probs - ref_log_probs)


def class_weights(targets: torch.Tensor, valid: torch.Tensor, balance: bool = True) -> torch.Tensor:
    """Per-completion weights w_i of the alignment loss.

    Over the valid completions (finished and rewarded), with N of them, N_1 correct and N_0 incorrect:
    w = N / (2 N_1) for correct ones and N / (2 N_0) for incorrect ones when `balance`, else w = 1. Invalid
    completions get 0, and so does an absent class. With these weights, Σ_i w_i e_i / N is the mean of the two
    per-class mean errors: the rarer class is not drowned out early in training, when most answers are wrong.

    Pass the targets of the *whole* generation batch (all processes) so that the weights do not depend on how the
    batch is split.
    """
    valid = valid.bool()
    weights = valid.to(torch.float32)
    if not balance:
        return weights
    correct = valid & (targets > CORRECT_THRESHOLD)
    incorrect = valid & ~(targets > CORRECT_THRESHOLD)
    num_valid = valid.sum().float()
    num_correct, num_incorrect = correct.sum().float(), incorrect.sum().float()
    weights = torch.zeros_like(weights)
    if num_correct > 0:
        weights[correct] = num_valid / (2 * num_correct)
    if num_incorrect > 0:
        weights[incorrect] = num_valid / (2 * num_incorrect)
    return weights


def weighted_squared_error_sum(scores: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ_i w_i (r_s,i − r_v,i)², the numerator of the alignment loss.

    Rows with w_i = 0 contribute exactly 0 (and no NaN) even when their target is missing (NaN) or their score is
    undefined. The gradient reaches only `scores`: targets and weights are constants of the loss.
    """
    mask = weights != 0
    error = torch.where(mask, scores - torch.nan_to_num(targets.detach(), nan=0.0), torch.zeros_like(scores))
    return (weights.detach() * error.square()).sum()


def mix_advantages(
    verifier_advantages: torch.Tensor,
    scores: torch.Tensor,
    finished: torch.Tensor,
    num_generations: int,
    coef: float,
    std_threshold: float,
    scale: str = "group",
) -> torch.Tensor:
    """Mix a self-reward advantage into the verifier advantage ("reward re-weighting", paper §4.2).

        s_i   = clip(r_s,i, 0, 1) if finished else 0
        Â_s,i = (s_i − mean_g(s)) / σ   if std_g(s) > threshold, else Â_v,i
        A_i   = (1 − τ) Â_v,i + τ Â_s,i

    Groups g are consecutive blocks of `num_generations` completions of the same prompt (TRL's layout). σ follows the
    verifier advantage's scaling (TRL's `scale_rewards`), so that both advantages are on the same scale: the group's
    std(s) for "group" (the paper), the whole batch's std(s) for "batch", 1 for "none". std is the unbiased sample
    standard deviation, as TRL uses. All inputs are for the whole generation batch (all processes), so that group
    statistics see every member of a group.
    """
    if scale not in ("group", "batch", "none"):
        raise ValueError(f"scale must be 'group', 'batch' or 'none' (TRL's scale_rewards), not {scale!r}.")
    if scores.numel() % num_generations != 0:
        raise ValueError(f"{scores.numel()} scores do not split into groups of num_generations={num_generations}.")
    s = torch.where(finished.bool(), scores.clamp(0.0, 1.0), torch.zeros_like(scores)).view(-1, num_generations)
    mean = s.mean(dim=1, keepdim=True)
    std = s.std(dim=1, keepdim=True) if num_generations > 1 else torch.zeros_like(mean)
    informative = (std > std_threshold).expand_as(s)
    if scale == "group":
        sigma = std
    elif scale == "batch":
        sigma = (s.std() if s.numel() > 1 else torch.zeros(())).expand_as(std)
    else:
        sigma = torch.ones_like(std)
    self_advantages = torch.where(informative, (s - mean) / sigma.clamp(min=torch.finfo(s.dtype).tiny), 0.0)
    self_advantages = torch.where(informative, self_advantages, verifier_advantages.view(-1, num_generations))
    return (1 - coef) * verifier_advantages + coef * self_advantages.view(-1)


def verification_counts(
    scores: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, threshold: float = CORRECT_THRESHOLD
) -> torch.Tensor:
    """Additive statistics of self-verification over the valid rows, as a tensor of 6 sums:

    [Σ r_s over correct, Σ r_s over incorrect, #correct judged correct (r_s > threshold), #incorrect judged incorrect
    (r_s ≤ threshold), #correct, #incorrect], a row being correct when its target r_v > 0.5. Sums (not means) so that
    micro-batches and processes add up exactly. In float32, or float64 for float64 scores.
    """
    dtype = torch.promote_types(scores.dtype, torch.float32)
    valid = valid.bool()
    scores = torch.where(valid, scores.detach().to(dtype), torch.zeros_like(scores, dtype=dtype))
    correct = valid & (targets > CORRECT_THRESHOLD)
    incorrect = valid & ~(targets > CORRECT_THRESHOLD)
    judged_correct = scores > threshold
    return torch.stack(
        [
            (scores * correct).sum(),
            (scores * incorrect).sum(),
            (judged_correct & correct).sum().to(dtype),
            (~judged_correct & incorrect).sum().to(dtype),
            correct.sum().to(dtype),
            incorrect.sum().to(dtype),
        ]
    )


def harmonic_f1(acc_correct: float, acc_incorrect: float) -> float:
    """Self-verification F1 as the LaSeR authors define it: harmonic mean of the two class accuracies."""
    if acc_correct + acc_incorrect == 0:
        return 0.0
    return 2 * acc_correct * acc_incorrect / (acc_correct + acc_incorrect)


def metrics_from_counts(counts: Sequence[float]) -> dict[str, float]:
    """Mean score and accuracy per class, and F1, from the 6 sums of [`verification_counts`] (added up over any number
    of micro-batches and processes). A class without rows gives NaN, so every fraction lies in [0, 1] or is NaN."""
    s_c, s_i, ok_c, ok_i, n_c, n_i = (float(c) for c in counts)
    nan = float("nan")
    metrics = {
        "score_correct": s_c / n_c if n_c else nan,
        "score_incorrect": s_i / n_i if n_i else nan,
        "acc_correct": ok_c / n_c if n_c else nan,
        "acc_incorrect": ok_i / n_i if n_i else nan,
    }
    metrics["f1"] = harmonic_f1(metrics["acc_correct"], metrics["acc_incorrect"]) if n_c and n_i else nan
    return metrics


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve of `scores` for separating positive (True) from negative labels:

        AUROC = P(s⁺ > s⁻) + ½ · P(s⁺ = s⁻)

    over all (positive, negative) pairs (the Mann–Whitney statistic with average ranks; ties count half), computed by
    sorting in O(n log n). NaN when a class is empty. Unlike F1 it does not depend on the 0.5 threshold, so it shows
    whether the score ranks before it is calibrated."""
    num_pos = sum(bool(y) for y in labels)
    num_neg = len(labels) - num_pos
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores but {len(labels)} labels.")
    if num_pos == 0 or num_neg == 0:
        return float("nan")
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    positive_rank_sum, start = 0.0, 0
    while start < len(order):  # blocks of tied scores share the mean of their 1-based ranks
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        rank = (start + end) / 2 + 1
        positive_rank_sum += rank * sum(bool(labels[order[j]]) for j in range(start, end + 1))
        start = end + 1
    return (positive_rank_sum - num_pos * (num_pos + 1) / 2) / (num_pos * num_neg)
