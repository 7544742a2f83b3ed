"""Adaptive test-time sampling: sample each problem in rounds until its stopping rule says the answer is settled.

A problem is sampled in rounds of b completions, up to K in all (the last round is cut to what is left); every round
is one generation call for the problems still open. A round that follows n samples of a problem uses the seed
`seed + n`: vLLM gives the i-th sample of a request the seed `seed + i`, so a problem's samples carry the seeds seed,
seed + 1, …, seed + K − 1, as in one request for K samples with `seed`, and no two of them share a seed. After each
round, a problem's rule looks at its n samples so far: answers grouped into equivalence classes g_i (None: no answer),
each sample with a value v_i and a vote weight w_i. The problem stops when

    consensus:      n ≥ m  and  W(a*) ≥ τ · W  and  W(a*) > W(a₂),
                    W(a) = Σ_{i: g_i = a} w_i,   W = Σ_{i: g_i ≠ None} w_i > 0
    single sample:  some sample with an answer has v_i > θ               (θ optional; `consistency` has none)

or when n = K. a* is the weighted vote's winner (`voting.weighted_vote`: most weight, then most votes, then seen
first) and a₂ the runner-up (W(a₂) = 0 when a* is the only answer): a tie for the lead never stops a problem, whatever
τ. W sums the answered samples only, under every rule (as DeepConf's consensus divides by the answered votes), so a
sample without an answer (e.g. one cut by the token limit) counts neither for nor against the consensus; n ≥ m still
counts every sample drawn. The problem's final answer is a* over all its samples, however it stopped. The rules
differ in v and w:

    self_reward   v_i = r_s,i                         w_i = clip(r_s,i, 0, 1)  (`voting.vote_weights`; unscored: 0)
    confidence    v_i = the raw value of a verifier   w_i = max(v_i, 0), or exp(v_i) for mean_log_prob   (DeepConf)
    consistency   (no value)                          w_i = 1: plain votes, W(a*) / W = the majority's share of the
                                                      answered samples

`confidence` reads a free verifier of the completion (`trl_laser.scoring.confidence`), so any model can use it;
DeepConf (Fu et al. 2025) weights votes by the confidence itself and stops once the weighted consensus reaches τ.
`consistency` is DeepConf's consensus stop on plain votes, the baseline without any score: with τ = 1 it stops as soon
as, after at least m samples (at a round's end), every answered sample gives the same answer.

Replay: the rules are pure functions of the samples in round order, so the stopping point and answer of the live
sampler are those of `replay` on the pool that the same rounds would draw without stopping (`draw_pool`: the same
loop, never stopping). That is exact when a sample depends only on its prompt and its seed (as with vLLM's per-request
seeds, up to numerical differences between batch compositions); with transformers a round's draws also depend on
which prompts share the batch, so the replay matches the live sampler in distribution.
`adaptive_curves` sweeps the thresholds by replay on one pool and sets every rule's (mean samples, mean tokens,
accuracy) beside fixed-K maj@k and self-reward weighted maj@k. The thresholds are picked on the same pool they are
scored on, so a rule's best point is optimistic, the more so the more points its sweep has (it has more chances to
match the target by noise); `sweep_points` reports how many each rule has.
"""

import contextlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from ..core.recipe import SelfRewardConfig
from ..scoring.confidence import TRACE_VERIFIERS
from ..tasks.task import Task
from .evaluate import ModelReportArguments, json_safe, make_output_dir
from .free_verifiers import percentile, vote_weight
from .voting import aggregation_curves, vote_weights, weighted_vote


RuleKind = Literal["self_reward", "confidence", "consistency"]
RULES: tuple[str, ...] = get_args(RuleKind)
"""The stopping rules: r_s-weighted consensus, free-verifier-weighted consensus (DeepConf), plain consensus."""
DEFAULT_VERIFIER = "lowest_group_confidence"
"""DeepConf's choice for online stopping."""
ROUNDING_SLACK = 1e-12
"""Slack on threshold tests (share ≥ τ, accuracy ≥ target − 0.005), so that a value equal to its threshold passes
whatever the rounding of the division that computed it; and on the strict lead (a share equal to the runner-up's up
to rounding is a tie)."""
MATCH_TOLERANCE = 0.005
"""How close (half a point of accuracy) a rule must come to the fixed-K target to match it."""


# ---------------------------------------------------------------------------------------------------------------------
# The rules: pure functions on answer groups and per-sample values


def check_verifier_name(name: str) -> str:
    if name not in TRACE_VERIFIERS:
        raise ValueError(f"Unknown verifier {name!r}; choose one of {list(TRACE_VERIFIERS)}.")
    return name


def check_verifiers(verifiers: Sequence[dict[str, float]], name: str) -> None:
    """Raise a ValueError when no sample has any verifier (the generator does not read them) or when a sample has
    verifiers but not `name` (vLLM returns no self_certainty)."""
    if verifiers and not any(verifiers):
        raise ValueError(
            "The completions carry no free verifiers, which the confidence rule reads; generate with a "
            "SelfRewardScorer that reads them (its `confidence` settings, on by default), or drop the confidence rule."
        )
    for entry in verifiers:
        if entry and name not in entry:
            raise ValueError(
                f"The completions have no {name!r} verifier (they have {sorted(entry)}); choose one of those."
            )


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def confidence_weights(values: Sequence[float | None], verifier: str) -> list[float]:
    """DeepConf's vote weights (`free_verifiers.vote_weight`): the confidence itself, or w = exp(v) for mean_log_prob
    (a mean log-probability, ≤ 0, so exp(v) is the geometric-mean token probability). Missing, non-finite or negative
    weights count 0."""
    weights = [vote_weight(verifier, v) if _finite(v) else None for v in values]
    return [max(w, 0.0) if _finite(w) else 0.0 for w in weights]


@dataclass(frozen=True)
class KindReading:
    """How a rule kind reads samples: `value(r_s, verifiers, verifier name)` gives a sample's v, `weights(values,
    verifier name)` the vote weights w of a list of values; `reads_verifiers`: v comes from the free verifiers;
    `has_value`: there is a v to threshold (θ)."""

    value: Callable[[float | None, dict[str, float], str], float | None]
    weights: Callable[[Sequence[float | None], str], list[float]]
    reads_verifiers: bool = False
    has_value: bool = True


KINDS: dict[str, KindReading] = {
    "self_reward": KindReading(lambda score, verifiers, name: score, lambda values, name: vote_weights(values)),
    "confidence": KindReading(
        lambda score, verifiers, name: verifiers.get(name), confidence_weights, reads_verifiers=True
    ),
    "consistency": KindReading(
        lambda score, verifiers, name: None, lambda values, name: [1.0] * len(values), has_value=False
    ),
}
"""v and w of each rule (see the module docstring); the rules' code reads them from here, keyed by kind."""


@dataclass(frozen=True)
class StoppingRule:
    """A stopping rule with its thresholds (see the module docstring).

    Args:
        kind: "self_reward", "confidence" or "consistency".
        share: τ, the share of the answered samples' vote weight the leading answer needs (0 < τ ≤ 1).
        min_samples: m, the samples a problem needs before its consensus may stop it.
        single_threshold: θ: stop as soon as a sample with an answer has a value above it (r_s for self_reward, the
            raw verifier value for confidence); None: no single-sample stop. Always None for consistency.
        verifier: the free verifier of the confidence rule (a name of `TRACE_VERIFIERS`).
    """

    kind: RuleKind
    share: float = 0.9
    min_samples: int = 2
    single_threshold: float | None = None
    verifier: str = DEFAULT_VERIFIER

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Unknown stopping rule {self.kind!r}; choose from {list(RULES)}.")
        if not 0 < self.share <= 1:
            raise ValueError(f"The consensus share τ must be in (0, 1], got {self.share}.")
        if self.min_samples < 1:
            raise ValueError(f"min_samples (m) must be at least 1, got {self.min_samples}.")
        if not KINDS[self.kind].has_value and self.single_threshold is not None:
            raise ValueError(
                f"The {self.kind} rule has no per-sample value to threshold; leave single_threshold None."
            )
        check_verifier_name(self.verifier)

    @property
    def read_verifier(self) -> str | None:
        """The free verifier the rule reads (None when it reads none)."""
        return self.verifier if KINDS[self.kind].reads_verifiers else None

    def value(self, score: float | None, verifiers: dict[str, float]) -> float | None:
        """v of a sample with this r_s and these verifiers: r_s for self_reward, the verifier's raw value for
        confidence (None where the sample has none, e.g. no generated token), None for consistency."""
        return KINDS[self.kind].value(score, verifiers, self.verifier)

    def values(self, completions: Sequence) -> list[float | None]:
        """v_i of each completion (`.score`, `.verifiers`)."""
        return [self.value(c.score, c.verifiers) for c in completions]

    def weights(self, values: Sequence[float | None]) -> list[float]:
        """w_i: clip(r_s, 0, 1) (self_reward), `confidence_weights` (confidence), 1 (consistency)."""
        return KINDS[self.kind].weights(values, self.verifier)

    @property
    def label(self) -> str:
        """e.g. "self_reward τ=0.9 θ=0.7"."""
        threshold = "" if self.single_threshold is None else f" θ={self.single_threshold:g}"
        return f"{self.kind} τ={self.share:g}{threshold}"


def consensus(groups: Sequence[int | None], weights: Sequence[float]) -> tuple[int | None, float, float]:
    """The weighted vote's winner (index of the first member of its group; None when no sample has an answer), its
    share of the answered samples' weight W(a*) / W, and the runner-up's share W(a₂) / W (0 without another answer).
    Both shares are 0 when the answered samples weigh nothing."""
    winner = weighted_vote(groups, weights)
    totals: dict[int, float] = {}
    for group, weight in zip(groups, weights, strict=True):
        if group is not None:
            totals[group] = totals.get(group, 0.0) + weight
    total = sum(totals.values())
    if winner is None or total <= 0:
        return winner, 0.0, 0.0
    leading = totals.pop(groups[winner])
    return winner, leading / total, max(totals.values(), default=0.0) / total


def should_stop(rule: StoppingRule, groups: Sequence[int | None], values: Sequence[float | None]) -> bool:
    """Whether `rule` stops a problem whose samples so far have these answer groups and values:
    (some answered v_i > θ) or (n ≥ m and W(a*) ≥ τ · W and W(a*) > W(a₂))."""
    if rule.single_threshold is not None and any(
        g is not None and _finite(v) and v > rule.single_threshold for g, v in zip(groups, values, strict=True)
    ):
        return True
    if len(groups) < rule.min_samples:
        return False
    winner, share, runner_up = consensus(groups, rule.weights(values))
    # A tie for the lead is no consensus: with τ ≤ 1/2, two answers could each hold τ of the weight.
    return winner is not None and share - runner_up > ROUNDING_SLACK and share >= rule.share - ROUNDING_SLACK


def final_answer(rule: StoppingRule, groups: Sequence[int | None], values: Sequence[float | None]) -> int | None:
    """The rule's vote: index of the first member of argmax_a Σ_i w_i · 1[g_i = a] (None: no sample has an answer)."""
    return weighted_vote(groups, rule.weights(values))


def round_sizes(max_samples: int, round_size: int) -> list[int]:
    """The sizes of the rounds: b, b, …, and what is left of K last (K = 5, b = 2: [2, 2, 1])."""
    if not 1 <= round_size <= max_samples:
        raise ValueError(f"The round size b must be in [1, K = {max_samples}], got {round_size}.")
    return [min(round_size, max_samples - start) for start in range(0, max_samples, round_size)]


def replay(
    rule: StoppingRule,
    groups: Sequence[int | None],
    values: Sequence[float | None],
    max_samples: int,
    round_size: int,
) -> tuple[int, int | None]:
    """Where the sampler stops a problem whose samples, in round order, are these (at least K of them): the number of
    samples drawn, checking the rule at each round's end, and the index of the final answer's sample."""
    if len(groups) < max_samples or len(values) < max_samples:
        raise ValueError(f"Replay needs the K = {max_samples} samples of the pool, got {len(groups)}.")
    drawn = 0
    for size in round_sizes(max_samples, round_size):
        drawn += size
        if should_stop(rule, groups[:drawn], values[:drawn]):
            break
    return drawn, final_answer(rule, groups[:drawn], values[:drawn])


# ---------------------------------------------------------------------------------------------------------------------
# Sampling in rounds


def extend_groups(
    representatives: list, answers: Sequence[Any | None], equivalent: Callable[[Any, Any], bool]
) -> list[int | None]:
    """Group ids of `answers`, continuing a greedy grouping (`voting.group_answers`) whose groups' first members are
    `representatives` (extended in place by the new groups). Each answer is compared with those members only, as
    `group_answers` does, so the ids are those of grouping the whole list at once, and a round costs (new answers) ×
    (groups) answer checks instead of regrouping every earlier answer."""
    groups: list[int | None] = []
    for answer in answers:
        if answer is None:
            groups.append(None)
            continue
        group = next((g for g, first in enumerate(representatives) if equivalent(first, answer)), None)
        if group is None:
            representatives.append(answer)
            group = len(representatives) - 1
        groups.append(group)
    return groups


@dataclass
class ProblemSamples:
    """What the sampler drew for one prompt, in round order, and the answer its rule voted for. `representatives`:
    the first answer of each group, in group order."""

    prompt: Any
    completions: list = field(default_factory=list)
    answers: list[str | None] = field(default_factory=list)
    groups: list[int | None] = field(default_factory=list)
    num_rounds: int = 0
    answer_index: int | None = None
    representatives: list[str] = field(default_factory=list, repr=False)

    @property
    def num_samples(self) -> int:
        return len(self.completions)

    @property
    def num_tokens(self) -> int:
        return sum(c.num_tokens for c in self.completions)

    @property
    def answer(self) -> str | None:
        return None if self.answer_index is None else self.answers[self.answer_index]


def _progress_bar(enabled: bool, total: int):
    """A tqdm bar of samples drawn out of `total` (a context manager, so that an error closes it), or a null context
    that yields None."""
    if not enabled:
        return contextlib.nullcontext()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="Samples", unit="sample")


def sample_in_rounds(
    generator,
    prompts: Sequence,
    task: Task,
    stop: Callable[[ProblemSamples], bool] | None,
    max_samples: int = 8,
    round_size: int = 2,
    seed: int = 0,
    progress: bool = False,
    check_round: Callable[[list], None] | None = None,
    **generate_kwargs,
) -> list[ProblemSamples]:
    """Sample `prompts` in rounds: a round is one `generator.generate(open prompts, num_samples=b_r, seed=seed + n)`
    call, n the samples every open problem already has (so that, under vLLM, a problem's samples have the seeds seed,
    seed + 1, … of one request for K samples). After it, each problem's new answers are read and grouped with the task
    against its groups so far (`extend_groups`), and `stop(problem)` (None: never) closes it. A problem closes at K
    samples in any case. `check_round`, if given, sees every completion of each round first (to fail on the first
    round, not after K samples). `generate_kwargs` go to every call. `progress` shows a bar of the samples drawn (a
    problem that closes early takes the samples it will not draw off the total)."""
    sizes = round_sizes(max_samples, round_size)
    problems = [ProblemSamples(prompt) for prompt in prompts]
    still_open = list(range(len(problems)))
    drawn = 0  # by every open problem
    with _progress_bar(progress, len(problems) * max_samples) as bar:
        for size in sizes:
            if not still_open:
                break
            outputs = generator.generate(
                [problems[i].prompt for i in still_open], num_samples=size, seed=seed + drawn, **generate_kwargs
            )
            drawn += size
            if len(outputs) != len(still_open):
                raise RuntimeError(f"The generator answered {len(outputs)} prompts out of {len(still_open)}.")
            if check_round is not None:
                check_round([c for output in outputs for c in output.completions])
            closing = set()
            for i, output in zip(still_open, outputs, strict=True):
                if len(output.completions) != size:
                    raise RuntimeError(f"The generator returned {len(output.completions)} completions, not {size}.")
                problem = problems[i]
                answers = [task.extract_answer(c.text) for c in output.completions]
                problem.completions.extend(output.completions)
                problem.answers.extend(answers)
                problem.groups.extend(extend_groups(problem.representatives, answers, task.same_answer))
                problem.num_rounds += 1
                if problem.num_samples >= max_samples or (stop is not None and stop(problem)):
                    closing.add(i)
            still_open = [i for i in still_open if i not in closing]
            if bar is not None:
                bar.total -= sum(max_samples - problems[i].num_samples for i in closing)
                bar.update(size * len(outputs))
                bar.set_postfix(open=len(still_open))
    return problems


def adaptive_sample(
    generator,
    prompts: Sequence,
    task: Task,
    rule: StoppingRule,
    max_samples: int = 8,
    round_size: int = 2,
    seed: int = 0,
    progress: bool = False,
    **generate_kwargs,
) -> list[ProblemSamples]:
    """Sample each prompt in rounds until `rule` stops it (or K samples), and vote: each result's `answer_index`.

    `generator` has `generate(prompts, num_samples, seed, **generate_kwargs)` returning, per prompt, an object whose
    `.completions` have `.text`, `.score`, `.verifiers` and `.num_tokens` (a `SelfRewardScorer`, for one)."""

    def stop(problem: ProblemSamples) -> bool:
        return should_stop(rule, problem.groups, rule.values(problem.completions))

    check = verifier_check(rule.read_verifier)
    problems = sample_in_rounds(
        generator, prompts, task, stop, max_samples, round_size, seed, progress, check, **generate_kwargs
    )
    for problem in problems:
        problem.answer_index = final_answer(rule, problem.groups, rule.values(problem.completions))
    return problems


def verifier_check(verifier: str | None) -> Callable[[list], None] | None:
    """The round check that the completions carry `verifier` (`check_verifiers`); None when no verifier is read."""
    if verifier is None:
        return None
    return lambda completions: check_verifiers([c.verifiers for c in completions], verifier)


def draw_pool(
    generator,
    prompts: Sequence,
    task: Task,
    max_samples: int = 8,
    round_size: int = 2,
    seed: int = 0,
    progress: bool = False,
    verifier: str | None = None,
    **generate_kwargs,
) -> list[ProblemSamples]:
    """The K samples of every prompt, drawn by the rounds of `adaptive_sample` (same sizes, same seeds) with no rule
    stopping them, so that round r's samples are the pool's r-th chunk (under vLLM, the samples of one request for K
    samples with `seed`). With `verifier`, the first round already checks that the completions carry it (rather than
    after all K samples)."""
    check = verifier_check(verifier)
    return sample_in_rounds(
        generator, prompts, task, None, max_samples, round_size, seed, progress, check, **generate_kwargs
    )


# ---------------------------------------------------------------------------------------------------------------------
# Accuracy against compute, by replay on a pool


@dataclass
class GradedPool:
    """The K samples of every gradable problem in round order, as plain lists (one row per problem)."""

    groups: list[list[int | None]] = field(default_factory=list)
    scores: list[list[float | None]] = field(default_factory=list)
    verifiers: list[list[dict[str, float]]] = field(default_factory=list)
    tokens: list[list[int]] = field(default_factory=list)
    correct: list[list[bool]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.groups)

    def values(self, rule: StoppingRule) -> list[list[float | None]]:
        """v_i of `rule` for every sample, row by row."""
        if rule.read_verifier is not None:
            check_verifiers([entry for row in self.verifiers for entry in row], rule.read_verifier)
        return [
            [rule.value(score, verifiers) for score, verifiers in zip(scores, row, strict=True)]
            for scores, row in zip(self.scores, self.verifiers, strict=True)
        ]


def grade_pool(
    problems: Sequence[dict], samples: Sequence[ProblemSamples], task: Task
) -> tuple[GradedPool, list[list[bool | None]]]:
    """The `GradedPool` of `samples` (one per problem row, with `answer`) and every sample's label. A problem whose
    reference answer cannot be read is left out of the pool (as in `evaluate_samples`); its labels are all None."""
    pool, labels = GradedPool(), []
    for problem, sample in zip(problems, samples, strict=True):
        row = [task.check(c.text, problem["answer"]) for c in sample.completions]
        if None in row:
            labels.append([None] * len(row))
            continue
        labels.append(row)
        pool.groups.append(list(sample.groups))
        pool.scores.append([c.score for c in sample.completions])
        pool.verifiers.append([dict(c.verifiers) for c in sample.completions])
        pool.tokens.append([c.num_tokens for c in sample.completions])
        pool.correct.append(row)
    return pool, labels


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def rule_point(rule: StoppingRule, pool: GradedPool, max_samples: int, round_size: int) -> dict:
    """One operating point of `rule`, by replay on `pool`: mean samples and mean generated tokens per problem, and
    accuracy (a vote that picks no answer counts as wrong)."""
    values = pool.values(rule)
    samples, tokens, hits = [], [], []
    for groups, row_values, row_tokens, correct in zip(pool.groups, values, pool.tokens, pool.correct, strict=True):
        drawn, winner = replay(rule, groups, row_values, max_samples, round_size)
        samples.append(drawn)
        tokens.append(sum(row_tokens[:drawn]))
        hits.append(float(winner is not None and correct[winner]))
    return {"mean_samples": _mean(samples), "mean_tokens": _mean(tokens), "accuracy": _mean(hits)}


def fixed_k_points(
    pool: GradedPool, max_samples: int, num_subsets: int = 32, seed: int = 0, weighted: bool = True
) -> dict[str, dict[int, dict]]:
    """maj@k (and, with `weighted`, self-reward weighted maj@k) for k = 1..K as operating points: accuracy from
    `voting.aggregation_curves` on the pool (the same subsets), k samples, and k × the mean tokens of a sample."""
    curves = aggregation_curves(
        pool.groups, pool.scores, pool.correct, range(1, max_samples + 1), num_subsets=num_subsets, seed=seed
    )
    tokens_per_sample = _mean([sum(row) / len(row) for row in pool.tokens])
    methods = ("majority", "weighted") if weighted else ("majority",)
    return {
        method: {
            k: {"mean_samples": float(k), "mean_tokens": k * tokens_per_sample, "accuracy": accuracy}
            for k, accuracy in curves[method].items()
        }
        for method in methods
    }


def pareto_front(points: Sequence[dict]) -> list[int]:
    """Indices of the points no other point beats: none has fewer (or as many) mean samples and a higher accuracy.
    Sorted by mean samples."""
    order = sorted(range(len(points)), key=lambda i: (points[i]["mean_samples"], -points[i]["accuracy"]))
    front, best = [], -math.inf
    for i in order:
        if points[i]["accuracy"] > best:
            front.append(i)
            best = points[i]["accuracy"]
    return front


def samples_fraction_to_match(
    points: Sequence[dict], target: float, max_samples: int, tolerance: float = MATCH_TOLERANCE
) -> float | None:
    """The smallest mean samples / K among the points whose accuracy is at least `target` − `tolerance`; None when
    none gets there."""
    if not math.isfinite(target):
        return None
    fractions = [
        p["mean_samples"] / max_samples for p in points if p["accuracy"] >= target - tolerance - ROUNDING_SLACK
    ]
    return min(fractions) if fractions else None


def sweep_rules(
    kinds: Sequence[str],
    shares: Sequence[float],
    min_samples: int = 2,
    self_reward_thresholds: Sequence[float] = (),
    confidence_thresholds: Sequence[float] = (),
    verifier: str = DEFAULT_VERIFIER,
) -> list[StoppingRule]:
    """Every (τ, θ) of each rule: τ in `shares` times θ in (none, *thresholds of the rule); consistency has no θ.
    A value given twice is swept once (a repeated point would count as one more chance to match the target)."""
    thresholds = {"self_reward": self_reward_thresholds, "confidence": confidence_thresholds, "consistency": ()}
    return [
        StoppingRule(kind, share, min_samples, threshold, verifier)
        for kind in dict.fromkeys(kinds)
        for share in dict.fromkeys(shares)
        for threshold in dict.fromkeys((None, *thresholds[kind]))
    ]


def adaptive_curves(
    pool: GradedPool,
    rules: Sequence[StoppingRule],
    max_samples: int,
    round_size: int,
    num_subsets: int = 32,
    seed: int = 0,
    weighted: bool | None = None,
) -> dict:
    """Accuracy against compute: every rule's operating point (by replay), the fixed-K curves, the target and, per rule
    kind, the number of distinct sweep points (`sweep_points`) and the smallest mean-samples fraction of K that reaches
    the target within half a point (`samples_fraction_to_match_<target>`). The target is self-reward weighted maj@K
    when `weighted` (default: when some sample has a score; a scorer without a recipe scores none), else maj@K.

    The thresholds are picked on the same pool they are scored on: the more points a rule's sweep has, the more
    chances it has to match the target by noise."""
    if weighted is None:
        weighted = any(_finite(s) for row in pool.scores for s in row)
    fixed = fixed_k_points(pool, max_samples, num_subsets, seed, weighted)
    method, name = ("weighted", f"weighted_maj@{max_samples}") if weighted else ("majority", f"maj@{max_samples}")
    target = fixed[method].get(max_samples, {}).get("accuracy", float("nan"))
    by_kind: dict[str, list[dict]] = {}
    for rule in dict.fromkeys(rules):
        point = {"share": rule.share, "single_threshold": rule.single_threshold, "min_samples": rule.min_samples}
        by_kind.setdefault(rule.kind, []).append({**point, **rule_point(rule, pool, max_samples, round_size)})
    for points in by_kind.values():
        front = set(pareto_front(points))
        for i, point in enumerate(points):
            point["samples_fraction"] = point["mean_samples"] / max_samples
            point["pareto"] = i in front
    return {
        "fixed": {"majority": fixed["majority"], "weighted": fixed.get("weighted")},
        "target": {"name": name, "method": method, "k": max_samples, "accuracy": target},
        "rules": by_kind,
        "sweep_points": {kind: len(points) for kind, points in by_kind.items()},
        f"samples_fraction_to_match_{name}": {
            kind: samples_fraction_to_match(points, target, max_samples) for kind, points in by_kind.items()
        },
    }


# ---------------------------------------------------------------------------------------------------------------------
# The report of `trl-laser adaptive`


@dataclass
class AdaptiveConfig(ModelReportArguments):
    """Settings of `evaluate_adaptive` (and of `trl-laser adaptive`)."""

    rules: list[str] = field(
        default_factory=lambda: list(RULES),
        metadata={
            "help": "Stopping rules to compare: self_reward (r_s-weighted consensus; needs a scoring recipe), "
            "confidence (consensus weighted by a free verifier, DeepConf), consistency (plain-vote consensus)."
        },
    )
    num_samples: int = field(default=8, metadata={"help": "Most solutions per problem (K)."})
    round_size: int = field(
        default=2,
        metadata={"help": "Solutions per open problem and round (b); the rules are checked after each round."},
    )
    min_samples: int = field(
        default=2, metadata={"help": "Samples a problem needs before its consensus may stop it (m)."}
    )
    shares: list[float] = field(
        default_factory=lambda: [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0],
        metadata={"help": "Consensus shares τ to sweep: stop when the leading answer holds at least τ of the weight."},
    )
    self_reward_thresholds: list[float] = field(
        default_factory=lambda: [0.5, 0.7, 0.9],
        metadata={
            "help": "self_reward: single-sample thresholds θ to sweep (stop once an answered sample has r_s > θ); "
            "no single-sample stop is always swept too."
        },
    )
    confidence_thresholds: list[float] = field(
        default_factory=list,
        metadata={
            "help": "confidence: single-sample thresholds to sweep, raw values of the verifier (default: its 50th, "
            "75th and 90th percentiles over the sampled solutions); no single-sample stop is always swept too."
        },
    )
    verifier: str = field(
        default=DEFAULT_VERIFIER,
        metadata={"help": f"Free verifier of the confidence rule: one of {', '.join(TRACE_VERIFIERS)}."},
    )
    max_new_tokens: int = field(default=512, metadata={"help": "Token limit of a solution."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold."})
    batch_size: int = field(default=16, metadata={"help": "Sequences per generation batch."})
    seed: int = field(
        default=0,
        metadata={
            "help": "A problem's i-th sample has the seed seed + i (a round starts at seed + the samples drawn "
            "before it), as in one vLLM request for K samples; also seeds the voting subsets."
        },
    )
    num_subsets: int = field(default=32, metadata={"help": "Random subsets per k for the fixed-K curves."})
    backend: Literal["transformers", "vllm"] = field(
        default="transformers", metadata={"help": "Generation backend ('vllm' needs a GPU)."}
    )

    def __post_init__(self):
        unknown = [rule for rule in self.rules if rule not in RULES]
        checks = [
            (bool(self.rules), f"Give at least one rule with --rules (from {list(RULES)})."),
            (not unknown, f"Unknown rules {unknown}; choose from {list(RULES)}."),
            (len(set(self.rules)) == len(self.rules), f"--rules lists a rule twice: {self.rules}."),
            (self.num_samples >= 1, f"num_samples (K) must be at least 1, got {self.num_samples}."),
            (
                1 <= self.round_size <= self.num_samples,
                f"round_size (b) must be between 1 and num_samples (K = {self.num_samples}), got {self.round_size}.",
            ),
            (
                1 <= self.min_samples <= self.num_samples,
                f"min_samples (m) must be between 1 and num_samples (K = {self.num_samples}), got {self.min_samples}; "
                "with m > K the consensus could never stop a problem.",
            ),
            (bool(self.shares), "Give at least one consensus share with --shares."),
            (all(0 < s <= 1 for s in self.shares), f"Every share τ must be in (0, 1], got {self.shares}."),
            (self.num_subsets >= 1, f"num_subsets must be at least 1, got {self.num_subsets}."),
            (
                self.temperature > 0,
                f"temperature must be above 0, got {self.temperature}: greedy decoding draws K identical samples, so "
                "the consensus is always unanimous and the curves measure nothing; sample, e.g. --temperature 1.0.",
            ),
            (self.max_new_tokens >= 1, f"max_new_tokens must be at least 1, got {self.max_new_tokens}."),
            (self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}."),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        check_verifier_name(self.verifier)
        if self.backend == "vllm" and self.verifier == "self_certainty" and "confidence" in self.rules:
            raise ValueError(
                "vLLM returns only the top-k log-probabilities, so self_certainty (it needs the whole distribution) "
                "is not available with --backend vllm; choose another --verifier."
            )

    def self_reward_config(self) -> SelfRewardConfig | None:
        """The scoring recipe (the checkpoint's metadata with the values given here replacing the saved ones), or None
        when there is none, no rule needs it and no --self-reward-* option was given. Raises, before any model is
        loaded, when the self_reward rule needs one that is missing, or when the options given do not make one."""
        self.local_model_directory()  # a path that is a file is an error whatever the rules
        try:
            return super().self_reward_config()
        except ValueError as error:
            if "self_reward" in self.rules:
                others = " ".join(rule for rule in self.rules if rule != "self_reward") or "confidence consistency"
                raise ValueError(
                    f"The self_reward rule needs a scoring recipe. {error} Or leave the rule out: --rules {others}."
                ) from None
            given = (self.self_reward_token, self.self_reward_beta, self.self_reward_ref_constant)
            if any(value is not None for value in given):
                raise ValueError(
                    f"The --self-reward-* options given do not make a scoring recipe. {error} Or drop those options."
                ) from None
            return None


def confidence_sweep_thresholds(pool: GradedPool, config: AdaptiveConfig) -> list[float]:
    """The confidence rule's θ values: the given ones, else the 50th, 75th and 90th percentiles of the verifier's
    values on the pool (DeepConf sets its threshold from the confidences of warm-up traces; no labels are used)."""
    if config.confidence_thresholds or "confidence" not in config.rules:
        return list(config.confidence_thresholds)
    values = [v for row in pool.verifiers for entry in row if _finite(v := entry.get(config.verifier))]
    return sorted({percentile(values, q) for q in (50, 75, 90)}) if values else []


def evaluate_adaptive(
    config: AdaptiveConfig,
    problems,
    task: Task,
    recipe: SelfRewardConfig | None = None,
    dataset_name: str | None = None,
    generator=None,
) -> dict:
    """Draw a pool of K samples per problem in rounds, grade it, replay every rule over its threshold sweep, and write
    `results.json`, `adaptive.md` (the table), `adaptive_curves.png` and `samples.jsonl` into `config.output_dir`.
    The rules are not run live: every rule's points are replays on the pool (`"replayed": true` in results.json).

    Problems whose reference answer cannot be read are left out before sampling (`Task.check` is None for them,
    whatever the text) and counted in `num_ungradable`. `generator` defaults to a `SelfRewardScorer` loaded from
    `config.model_name_or_path` with `recipe`."""
    make_output_dir(config.output_dir)
    problems = list(problems)
    kept = [i for i, problem in enumerate(problems) if task.check("", problem["answer"]) is not None]
    gradable = [problems[i] for i in kept]
    if generator is None:
        from ..scoring.scorer import SelfRewardScorer

        generator = SelfRewardScorer.from_pretrained(config.model_name_or_path, recipe, backend=config.backend)
    samples = draw_pool(
        generator,
        [problem["prompt"] for problem in gradable],
        task,
        config.num_samples,
        config.round_size,
        config.seed,
        progress=True,
        verifier=config.verifier if any(KINDS[kind].reads_verifiers for kind in config.rules) else None,
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        batch_size=config.batch_size,
    )
    pool, labels = grade_pool(gradable, samples, task)
    rules = sweep_rules(
        config.rules,
        config.shares,
        config.min_samples,
        config.self_reward_thresholds,
        confidence_sweep_thresholds(pool, config),
        config.verifier,
    )
    recipe = getattr(generator, "config", recipe)
    results = {
        "model": config.model_name_or_path,
        "dataset": dataset_name,
        "task": task.name,
        "self_reward": None
        if recipe is None
        else {key: getattr(recipe, key) for key in ("token", "token_id", "beta", "ref_constant")},
        "generation": {
            "num_samples": config.num_samples,
            "round_size": config.round_size,
            "max_new_tokens": config.max_new_tokens,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "seed": config.seed,
        },
        "backend": config.backend,
        "replayed": True,
        "min_samples": config.min_samples,
        "verifier": config.verifier,
        "num_problems": len(problems),
        "num_ungradable": len(problems) - len(pool),
        **adaptive_curves(
            pool, rules, config.num_samples, config.round_size, config.num_subsets, config.seed, recipe is not None
        ),
        "table": "adaptive.md",
        "plot": "adaptive_curves.png",
    }
    write_samples(os.path.join(config.output_dir, "samples.jsonl"), gradable, samples, labels, kept)
    with open(os.path.join(config.output_dir, results["table"]), "w") as f:
        f.write(format_table(results))
    plot_adaptive_curves(results, os.path.join(config.output_dir, results["plot"]))
    with open(os.path.join(config.output_dir, "results.json"), "w") as f:
        json.dump(json_safe(results), f, indent=2)
        f.write("\n")
    return results


def write_samples(
    path: str,
    problems: Sequence[dict],
    samples: Sequence[ProblemSamples],
    labels: Sequence[Sequence[bool | None]],
    indices: Sequence[int] | None = None,
) -> None:
    """One JSON line per sample of the pool, in round order (replaying the rules again needs nothing else).
    `indices`: each problem's index in the dataset (default: its position in `problems`)."""
    indices = range(len(problems)) if indices is None else indices
    with open(path, "w") as f:
        for index, problem, sample, row in zip(indices, problems, samples, labels, strict=True):
            for j, completion in enumerate(sample.completions):
                line = {
                    "problem_index": index,
                    "sample_index": j,
                    "problem": problem["problem"],
                    "reference": problem["answer"],
                    "completion": completion.text,
                    "answer": sample.answers[j],
                    "group": sample.groups[j],
                    "correct": row[j],
                    "score": completion.score,
                    "verifiers": completion.verifiers,
                    "finished": completion.finished,
                    "num_tokens": completion.num_tokens,
                }
                f.write(json.dumps(json_safe(line)) + "\n")


def _pct(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def format_table(results: dict) -> str:
    """Markdown: the fixed-K rows, then each rule's Pareto-optimal sweep points, then the samples needed to match."""
    k = results["generation"]["num_samples"]
    target = results["target"]
    sweep = ", ".join(f"{kind} {count}" for kind, count in results["sweep_points"].items())
    lines = [
        "# Adaptive sampling: accuracy against compute",
        "",
        f"K = {k}, rounds of b = {results['generation']['round_size']}, m = {results['min_samples']}, confidence "
        f"verifier `{results['verifier']}`; {results['num_problems'] - results['num_ungradable']} graded problems. "
        f"The rules are replayed on one pool of K samples per problem (backend {results['backend']}): a row is where "
        "the live sampler would stop with those samples. Each rule's rows are the points of its (τ, θ) sweep that no "
        "other point beats (fewer samples, higher accuracy); θ empty: no single-sample stop. The sweeps are scored on "
        f"the pool they are picked on; sweep points: {sweep}.",
        "",
        "| method | τ | θ | samples / problem | tokens / problem | accuracy |",
        "|---|---|---|---|---|---|",
    ]
    names = {"majority": "maj@{k}", "weighted": "weighted maj@{k}"}
    for method, per_k in results["fixed"].items():
        for size, point in (per_k or {}).items():
            lines.append(_row(names[method].format(k=size), "", "", point))
    for kind, points in results["rules"].items():
        for point in sorted((p for p in points if p["pareto"]), key=lambda p: p["mean_samples"]):
            threshold = "" if point["single_threshold"] is None else f"{point['single_threshold']:.4g}"
            lines.append(_row(kind, f"{point['share']:g}", threshold, point))
    matched = results[f"samples_fraction_to_match_{target['name']}"]
    reached = ", ".join(
        f"{kind} {'never' if fraction is None else f'{fraction:.2f}·K'}" for kind, fraction in matched.items()
    )
    lines += [
        "",
        f"Samples to reach {target['name']} ({_pct(target['accuracy'])}) within half a point: {reached}.",
        "",
    ]
    return "\n".join(lines)


def _row(name: str, share: str, threshold: str, point: dict) -> str:
    return (
        f"| {name} | {share} | {threshold} | {point['mean_samples']:.2f} | {point['mean_tokens']:.1f} | "
        f"{_pct(point['accuracy'])} |"
    )


RULE_COLORS = {"self_reward": "tab:blue", "confidence": "tab:orange", "consistency": "tab:green"}
FIXED_COLORS = {"majority": "gray", "weighted": "black"}


def plot_adaptive_curves(results: dict, path: str) -> str:
    """Accuracy against mean samples per problem: each rule's sweep (faint points) and its Pareto front (a line),
    and the fixed-K maj@k and weighted maj@k curves."""
    from .plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, style, label in (("majority", "o--", "maj@k"), ("weighted", "s--", "self-reward weighted maj@k")):
        per_k = results["fixed"].get(method) or {}
        ks = sorted(per_k, key=int)  # keys are strings once read back from results.json
        if ks:
            accuracies = [per_k[k]["accuracy"] for k in ks]
            color = FIXED_COLORS[method]
            ax.plot([int(k) for k in ks], accuracies, style, color=color, linewidth=1, label=f"fixed K: {label}")
    for kind, points in results["rules"].items():
        front = sorted((p for p in points if p["pareto"]), key=lambda p: p["mean_samples"])
        color = RULE_COLORS.get(kind)
        x, y = [p["mean_samples"] for p in front], [p["accuracy"] for p in front]
        ax.plot(x, y, "^-", color=color, label=f"adaptive: {kind}")
        x, y = [p["mean_samples"] for p in points], [p["accuracy"] for p in points]
        ax.scatter(x, y, s=8, alpha=0.3, color=color)
    ax.set_xlabel("mean samples per problem")
    ax.set_ylabel("accuracy")
    ax.set_title("Adaptive sampling: accuracy against compute")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def format_summary(results: dict, output_dir: str) -> str:
    """A few lines for the terminal: the target and, per rule, the share of K it needs to reach it."""
    target = results["target"]
    matched = results[f"samples_fraction_to_match_{target['name']}"]
    lines = [
        f"{results['num_problems']} problems, K = {results['generation']['num_samples']} in rounds of "
        f"{results['generation']['round_size']}: {target['name']} {_pct(target['accuracy'])}"
    ]
    for kind, fraction in matched.items():
        reach = "never reaches it" if fraction is None else f"reaches it with {100 * fraction:.0f}% of the samples"
        lines.append(f"  {kind}: {reach}")
    lines.append(f"report written to {output_dir}/")
    return "\n".join(lines)
