"""Test-time aggregation of K sampled solutions: majority vote, self-reward-weighted vote, best-of-K.

Pure functions on plain lists. Answers are first grouped into equivalence classes (with the task's answer check:
math-verify for math, so that "1/2", "0.5" and "\\frac{1}{2}" share a vote); the votes then work on group ids, where
None means "no answer".

    majority:   a* = argmax_a Σ_i 1[answer_i ≡ a]
    weighted:   a* = argmax_a Σ_i clip(r_s,i, 0, 1) · 1[answer_i ≡ a]      (LaSeR §6; unscored samples weigh 0)
    best-of-K:  the answer of argmax_i clip(r_s,i, 0, 1)

Tie-breaking is deterministic: among groups with the same total weight, the one with more votes wins, then the one
whose first member comes earliest. Best-of-K breaks ties in clip(r_s) (e.g. several samples at 1) by the unclipped
r_s, then by position, so it is the argmax of the unclipped score. Samples without an answer never win; unscored
samples rank below every scored one in best-of-K.

pass@k (some sample among k is correct, an upper bound for any vote) uses the exact unbiased estimator
1 − C(n − c, k) / C(n, k) over the n samples of a problem, c of them correct.
"""

import itertools
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

from .metrics import clip01


def group_answers(
    answers: Sequence[Any | None], equivalent: Callable[[Any, Any], bool] | None = None
) -> list[int | None]:
    """Group ids for a list of answers: equal ids mean equivalent answers, None means no answer.

    Greedy in order: each answer joins the first existing group whose first member it is equivalent to, else starts
    a new group. `equivalent` defaults to `==`. Group ids count up from 0 in order of first appearance.
    """
    equivalent = equivalent or (lambda a, b: a == b)
    representatives: list[Any] = []
    groups: list[int | None] = []
    for answer in answers:
        if answer is None:
            groups.append(None)
            continue
        for group, representative in enumerate(representatives):
            if equivalent(representative, answer):
                groups.append(group)
                break
        else:
            representatives.append(answer)
            groups.append(len(representatives) - 1)
    return groups


def weighted_vote(groups: Sequence[int | None], weights: Sequence[float]) -> int | None:
    """Index of the winning sample (the first member of the winning group), or None when no sample has an answer.

    The winning group maximises (total weight, number of votes, −position of its first member).
    """
    totals: dict[int, list] = {}
    for i, (group, weight) in enumerate(zip(groups, weights, strict=True)):
        if group is None:
            continue
        entry = totals.setdefault(group, [0.0, 0, i])
        entry[0] += weight
        entry[1] += 1
    if not totals:
        return None
    _, _, first = max(totals.values(), key=lambda entry: (entry[0], entry[1], -entry[2]))
    return first


def majority_vote(groups: Sequence[int | None]) -> int | None:
    """maj@K: index of the first member of the most frequent answer (ties: the answer seen first)."""
    return weighted_vote(groups, [1.0] * len(groups))


def vote_weights(scores: Sequence[float | None]) -> list[float]:
    """clip(r_s, 0, 1) per sample; an unscored (truncated) sample weighs 0."""
    return [0.0 if s is None or math.isnan(s) else clip01(s) for s in scores]


def self_reward_vote(groups: Sequence[int | None], scores: Sequence[float | None]) -> int | None:
    """Self-reward weighted majority vote: index of the first member of argmax_a Σ_i clip(r_s,i, 0, 1)·1[a_i ≡ a]."""
    return weighted_vote(groups, vote_weights(scores))


def best_of_n(groups: Sequence[int | None], scores: Sequence[float | None]) -> int | None:
    """Best-of-K: index of the answered sample with the highest clip(r_s, 0, 1) (ties: higher r_s, then earlier)."""

    def key(i: int):
        score = scores[i]
        scored = score is not None and not math.isnan(score)
        return (scored, clip01(score) if scored else 0.0, score if scored else 0.0, -i)

    candidates = [i for i, group in enumerate(groups) if group is not None]
    return max(candidates, key=key) if candidates else None


def k_values(num_samples: int) -> list[int]:
    """k = 1, 2, 4, … below `num_samples`, then `num_samples` itself."""
    ks, k = [], 1
    while k < num_samples:
        ks.append(k)
        k *= 2
    return [*ks, num_samples] if num_samples > 0 else []


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """1 − C(n − c, k) / C(n, k): the probability that k samples drawn without replacement from n, c of them
    correct, hold at least one correct sample."""
    if not 0 < k <= num_samples:
        raise ValueError(f"k must be in [1, {num_samples}], got {k}.")
    return 1.0 - math.comb(num_samples - num_correct, k) / math.comb(num_samples, k)


def sample_subsets(num_samples: int, k: int, num_subsets: int, rng: random.Random) -> list[tuple[int, ...]]:
    """Subsets of size k of range(num_samples), each sorted: all of them when there are at most `num_subsets`, else
    `num_subsets` drawn uniformly (with replacement between draws) from `rng`."""
    if math.comb(num_samples, k) <= num_subsets:
        return list(itertools.combinations(range(num_samples), k))
    return [tuple(sorted(rng.sample(range(num_samples), k))) for _ in range(num_subsets)]


METHODS = ("majority", "weighted", "best_of", "pass")
"""Curve names: maj@k, self-reward weighted maj@k, best-of-k by score, and pass@k (any correct: an upper bound)."""


def aggregation_curves(
    groups: Sequence[Sequence[int | None]],
    scores: Sequence[Sequence[float | None]],
    correct: Sequence[Sequence[bool]],
    ks: Sequence[int] | None = None,
    num_subsets: int = 32,
    seed: int = 0,
) -> dict[str, dict[int, float]]:
    """Accuracy of each aggregation method as a function of k, averaged over problems.

    For each problem and each k, the votes see the same subsets of its K samples (all of them when there are few,
    else `num_subsets` random ones from a generator seeded with `seed`), so their curves are paired; a vote that picks
    no answer counts as wrong. pass@k is exact (`pass_at_k`). Returns {method: {k: accuracy}}.
    """
    if not groups:
        return {method: {} for method in METHODS}
    sizes = {len(g) for g in groups}
    if len(sizes) != 1:
        raise ValueError(f"Every problem needs the same number of samples, got sizes {sorted(sizes)}.")
    num_samples = sizes.pop()
    ks = list(ks) if ks is not None else k_values(num_samples)
    rng = random.Random(seed)
    totals = {method: dict.fromkeys(ks, 0.0) for method in METHODS}
    for problem_groups, problem_scores, problem_correct in zip(groups, scores, correct, strict=True):
        for k in ks:
            subsets = sample_subsets(num_samples, k, num_subsets, rng)
            hits = dict.fromkeys(("majority", "weighted", "best_of"), 0)
            for subset in subsets:
                g = [problem_groups[i] for i in subset]
                s = [problem_scores[i] for i in subset]
                for method, winner in (
                    ("majority", majority_vote(g)),
                    ("weighted", self_reward_vote(g, s)),
                    ("best_of", best_of_n(g, s)),
                ):
                    hits[method] += winner is not None and problem_correct[subset[winner]]
            for method, count in hits.items():
                totals[method][k] += count / len(subsets)
            totals["pass"][k] += pass_at_k(num_samples, sum(problem_correct), k)
    return {method: {k: total / len(groups) for k, total in per_k.items()} for method, per_k in totals.items()}
