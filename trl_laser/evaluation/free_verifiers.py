"""The free verifiers beside r_s: how well each one separates right from wrong answers, and the vote that uses it.

A user who does not train a self-verifier still has the model's own signals at test time (the trace verifiers of
`trl_laser.scoring.confidence`, read from the same generation), the agreement among the K samples of a problem, and
the length of an answer. Each is measured here exactly like r_s: the AUROC over the same samples (the finished ones,
on which r_s is defined), and a vote over each problem's K samples.

The vote is DeepConf's offline one (Fu et al. 2025): keep the samples whose value is at least the (100 − η)-th
percentile of the problem's values, then a majority weighted by confidence. η = 90 % (DeepConf-high) and η = 10 %
(DeepConf-low) are both reported. A weight must be positive: the DeepConf confidences are already; the mean token
log-probability weighs exp(value) (the geometric mean of the token probabilities), the share of agreeing samples
weighs itself, and the length weighs 1 / (number of tokens).

Functions of plain lists.
"""

import math
from collections.abc import Callable, Sequence

from ..scoring.confidence import TRACE_VERIFIERS
from .metrics import auroc
from .voting import weighted_vote


FREE_VERIFIERS = (*TRACE_VERIFIERS, "self_consistency", "length")
"""Every free verifier, in report order (higher: more confident)."""

DEEPCONF_KEEP = {"weighted_maj": 0.9, "top10_weighted_maj": 0.1}
"""DeepConf's filters, by the name of their vote: the share η of a problem's samples kept before the weighted vote
(`weighted_maj@K` keeps the top 90 %, `top10_weighted_maj@K` the top 10 %)."""

VOTE_WEIGHT: dict[str, Callable[[float], float]] = {
    "mean_log_prob": math.exp,
    "length": lambda value: 1.0 / max(-value, 1.0),  # the value is −(number of tokens)
}
"""How a verifier's value becomes a positive vote weight, where it is not one already."""


def self_consistency(groups: Sequence[int | None]) -> list[float]:
    """Per sample, the share of the problem's samples whose answer is equivalent to its own (0 without an answer)."""
    counts: dict[int, int] = {}
    for group in groups:
        if group is not None:
            counts[group] = counts.get(group, 0) + 1
    return [0.0 if group is None else counts[group] / len(groups) for group in groups]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (q in [0, 100]) with linear interpolation between order statistics (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def filtered_weighted_vote(groups: Sequence[int | None], values: Sequence[float | None], keep: float) -> int | None:
    """DeepConf's vote on one problem: index of the winning sample, or None when no kept sample has an answer.

    Samples with a value at least the (1 − keep) quantile of the values are kept (ties all kept); among them, the
    answer with the largest total weight wins (`voting.weighted_vote`: then more votes, then the earlier one).
    `values` must already be weights (positive); a sample without a value is dropped.
    """
    present = [v for v in values if v is not None]
    if not present:
        return None
    threshold = percentile(present, 100 * (1 - keep))
    kept_groups = [g if v is not None and v >= threshold else None for g, v in zip(groups, values, strict=True)]
    kept_weights = [v if v is not None and v >= threshold else 0.0 for v in values]
    return weighted_vote(kept_groups, kept_weights)


def vote_weight(name: str, value: float | None) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return VOTE_WEIGHT.get(name, float)(value)


def sample_verifiers(
    groups: Sequence[int | None], traces: Sequence[dict[str, float]], num_tokens: Sequence[int]
) -> list[dict[str, float]]:
    """Every free verifier of each sample of one problem: its trace verifiers (`Completion.verifiers`), the share of
    the problem's samples that agree with it, and its length as −(number of tokens)."""
    share = self_consistency(groups)
    return [
        {**trace, "self_consistency": agree, "length": -float(tokens)}
        for trace, agree, tokens in zip(traces, share, num_tokens, strict=True)
    ]


def free_verifier_report(
    groups: Sequence[Sequence[int | None]],
    correct: Sequence[Sequence[bool]],
    finished: Sequence[Sequence[bool]],
    values: Sequence[Sequence[dict[str, float]]],
) -> dict[str, dict[str, float | int]]:
    """For each free verifier: `auroc` over the finished samples (those r_s is measured on), `num_samples` counted
    there, and the accuracies over problems of DeepConf's votes over all K samples (`weighted_maj@K` with η = 90 %,
    `top10_weighted_maj@K` with η = 10 %; a problem whose vote picks no answer counts as wrong).

    `values[p][i]` holds the free verifiers of sample i of problem p (`sample_verifiers`). A verifier that no sample
    has (self-certainty under vLLM, or the trace verifiers of a scorer built with `confidence=None`) is left out.
    """
    report: dict[str, dict[str, float | int]] = {}
    if not groups:
        return report
    k = len(groups[0])
    for name in FREE_VERIFIERS:
        if not any(name in v for problem in values for v in problem):
            continue
        scores, labels = [], []
        for problem, problem_correct, problem_finished in zip(values, correct, finished, strict=True):
            for v, label, done in zip(problem, problem_correct, problem_finished, strict=True):
                if done:
                    scores.append(v.get(name))
                    labels.append(label)
        entry: dict[str, float | int] = {
            "auroc": auroc(scores, labels),
            "num_samples": sum(s is not None for s in scores),
        }
        for vote_name, keep in DEEPCONF_KEEP.items():
            hits = 0
            for problem, problem_groups, problem_correct in zip(values, groups, correct, strict=True):
                weights = [vote_weight(name, v.get(name)) for v in problem]
                winner = filtered_weighted_vote(problem_groups, weights, keep)
                hits += winner is not None and problem_correct[winner]
            entry[f"{vote_name}@{k}"] = hits / len(groups)
        report[name] = entry
    return report


def best_free_verifier(report: dict[str, dict], key: str = "auroc") -> tuple[str | None, float]:
    """The free verifier with the highest `key` (NaN values skipped) and that value; (None, NaN) when none."""
    best = (None, math.nan)
    for name, entry in report.items():
        value = entry.get(key)
        if value is not None and not math.isnan(value) and (best[0] is None or value > best[1]):
            best = (name, value)
    return best
