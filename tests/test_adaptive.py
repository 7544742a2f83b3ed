"""Adaptive sampling: stopping points computed by hand for each rule, rounds that batch only the open problems and
never reuse a seed, the K cap, ties and unanswered samples in the share, replay equal to the live sampler, the fixed-K
curves, the report, and `trl-laser adaptive` end to end and its errors."""

import json
import math

import pytest

from trl_laser.cli import main
from trl_laser.core.recipe import SelfRewardConfig
from trl_laser.evaluation.adaptive import (
    KINDS,
    RULES,
    AdaptiveConfig,
    GradedPool,
    StoppingRule,
    adaptive_curves,
    adaptive_sample,
    confidence_sweep_thresholds,
    confidence_weights,
    consensus,
    draw_pool,
    evaluate_adaptive,
    extend_groups,
    fixed_k_points,
    grade_pool,
    pareto_front,
    replay,
    round_sizes,
    samples_fraction_to_match,
    should_stop,
    sweep_rules,
)
from trl_laser.evaluation.voting import group_answers
from trl_laser.scoring.scorer import Completion, GeneratedSamples
from trl_laser.tasks import INTEGER_ANSWERS, Task
from trl_laser.tasks.answers import IntegerAnswers


TASK = Task("scripted", INTEGER_ANSWERS)  # the answer is the last integer of the text


class ScriptedGenerator:
    """`script[prompt]` lists a prompt's samples in rounds (for reading) as (text, r_s, verifiers, tokens). As vLLM
    does, a call with `seed` gives the i-th sample of a prompt the seed seed + i; the sample with seed j is the j-th
    of the prompt's script. Every call is recorded as (prompts, num_samples, seed), every prompt's seeds in `seeds`."""

    def __init__(self, script):
        self.script = {prompt: [row for rows in rounds for row in rows] for prompt, rounds in script.items()}
        self.calls = []
        self.seeds = {prompt: [] for prompt in script}

    def generate(self, prompts, num_samples, seed, **kwargs):
        self.calls.append((list(prompts), num_samples, seed))
        outputs = []
        for prompt in prompts:
            seeds = range(seed, seed + num_samples)
            self.seeds[prompt].extend(seeds)
            completions = [
                Completion(text, [0] * tokens, finished=score is not None, score=score, verifiers=dict(verifiers))
                for text, score, verifiers, tokens in (self.script[prompt][j] for j in seeds)
            ]
            outputs.append(GeneratedSamples(prompt, completions))
        return outputs


def s(text, score=None, confidence=None, tokens=10):
    """A scripted sample; `confidence` is its lowest_group_confidence."""
    return (text, score, {} if confidence is None else {"lowest_group_confidence": confidence}, tokens)


# K = 6 in rounds of b = 2 (starting at seeds 0, 2, 4). References: A 7, B 5, C 4, D 8.
SCRIPT = {
    "A": [[s("7", 0.6), s("7", 0.5)], [s("1", 0.9), s("1", 0.9)], [s("1", 0.9), s("1", 0.9)]],
    "B": [
        [s("3", 0.4), s("5", 0.3)],
        [s("5", 0.2), s("5", 0.7)],
        [s("5", 0.5, tokens=20), s("none", 0.95, tokens=20)],
    ],
    "C": [[s("9", 0.95), s("4", 0.8)], [s("4", 0.6), s("4", 0.6)], [s("4", 0.6), s("4", 0.6)]],
    "D": [[s("2", -0.3), s("2", None)], [s("2", 0.1), s("8", 0.02)], [s("8", 0.3), s("8", 0.3)]],
}
REFERENCES = {"A": "7", "B": "5", "C": "4", "D": "8"}
PROBLEMS = [{"prompt": p, "problem": p, "answer": a} for p, a in REFERENCES.items()]
SELF_REWARD = StoppingRule("self_reward", share=0.8, min_samples=2, single_threshold=0.9)
CONSISTENCY = StoppingRule("consistency", share=1.0, min_samples=2)


def run(rule, script=SCRIPT, max_samples=6, round_size=2):
    generator = ScriptedGenerator(script)
    results = adaptive_sample(generator, list(script), TASK, rule, max_samples, round_size, seed=0)
    return results, generator.calls


def test_self_reward_rule_stops_where_computed_by_hand():
    # τ = 0.8, m = 2, θ = 0.9; weights clip(r_s, 0, 1); the share counts the answered samples.
    # A  n=2: {7: 0.6 + 0.5}, share 1.1 / 1.1 = 1 ≥ 0.8                                        -> stop at 2, answer 7
    # B  n=2: {3: 0.4, 5: 0.3}, share 0.4 / 0.7 = 0.571; n=4: {5: 1.2, 3: 0.4}, 1.2 / 1.6 = 0.75;
    #    n=6: the unanswered sample's r_s 0.95 > θ stops nothing and is left out of W: 5 holds 1.7 / 2.1 = 0.81
    #                                                                                           -> K: 6, answer 5
    # C  n=2: r_s 0.95 > θ on an answered sample; vote {9: 0.95, 4: 0.8}                     -> stop at 2, answer 9
    # D  n=2: weights clip(-0.3) = 0 and unscored 0, no mass, share 0; n=4: {2: 0.1, 8: 0.02},
    #    0.1 / 0.12 = 0.833 ≥ 0.8                                                               -> stop at 4, answer 2
    results, calls = run(SELF_REWARD)
    assert [r.num_samples for r in results] == [2, 6, 2, 4]
    assert [r.answer for r in results] == ["7", "5", "9", "2"]
    assert [r.num_rounds for r in results] == [1, 3, 1, 2]
    assert [r.num_tokens for r in results] == [20, 80, 20, 40]
    # one call per round, for the problems still open, each round starting at seed + the samples drawn before it
    assert calls == [(["A", "B", "C", "D"], 2, 0), (["B", "D"], 2, 2), (["B"], 2, 4)]


def test_consistency_rule_stops_where_computed_by_hand():
    # τ = 1, m = 2: stop once every answered sample (at a round's end) gives the same answer.
    # A  n=2: 7, 7                                                           -> stop at 2, answer 7
    # B  n=2: 3, 5 (1/2); n=4: 5 holds 3/4; n=6: 4 of the 5 answered         -> K: 6, answer 5
    # C  n=2: 9, 4 (1/2); n=4: 3/4; n=6: 5/6                                  -> K: 6, answer 4
    # D  n=2: 2, 2 (an unscored sample is still a vote)                       -> stop at 2, answer 2
    results, calls = run(CONSISTENCY)
    assert [r.num_samples for r in results] == [2, 6, 6, 2]
    assert [r.answer for r in results] == ["7", "5", "4", "2"]
    assert calls == [(["A", "B", "C", "D"], 2, 0), (["B", "C"], 2, 2), (["B", "C"], 2, 4)]
    # τ = 0.75: B stops at 4 (3/4), C too (3/4)
    results, _ = run(StoppingRule("consistency", share=0.75, min_samples=2))
    assert [r.num_samples for r in results] == [2, 4, 4, 2]


def test_confidence_rule_stops_where_computed_by_hand():
    # lowest_group_confidence as weight and raw threshold; τ = 0.7, m = 2, θ = 12, K = 5, b = 1 (seeds 0..4).
    # E  n=1: m not reached, 10 ≤ 12; n=2: {6: 10 + 2}, share 1                                 -> stop at 2, answer 6
    # F  n=2: {5: 4, 2: 6}, 2 leads with 6 / 10 = 0.6; n=3: 2 holds 7 / 11 = 0.636;
    #    n=4: the raw value 13 > 12; the vote {5: 4 + 13, 2: 7}                                 -> stop at 4, answer 5
    script = {
        "E": [[s("6", confidence=10.0)], [s("6", confidence=2.0)], [s("3", confidence=1.0)], [s("3", confidence=1.0)],
              [s("3", confidence=1.0)]],
        "F": [[s("5", confidence=4.0)], [s("2", confidence=6.0)], [s("2", confidence=1.0)], [s("5", confidence=13.0)],
              [s("2", confidence=1.0)]],
    }  # fmt: skip
    rule = StoppingRule("confidence", share=0.7, min_samples=2, single_threshold=12.0)
    results, calls = run(rule, script, max_samples=5, round_size=1)
    assert [r.num_samples for r in results] == [2, 4]
    assert [r.answer for r in results] == ["6", "5"]
    assert calls == [(["E", "F"], 1, 0), (["E", "F"], 1, 1), (["F"], 1, 2), (["F"], 1, 3)]


def test_mean_log_prob_weighs_by_its_exponential():
    # w = exp(v): exp(-0.1) = 0.905, exp(-2) = 0.135, share 0.905 / 1.040 = 0.870
    assert confidence_weights([-0.1, -2.0, None], "mean_log_prob") == pytest.approx([0.9048, 0.1353, 0.0], abs=1e-4)
    assert confidence_weights([3.0, -1.0, float("nan")], "token_confidence") == [3.0, 0.0, 0.0]
    rule = StoppingRule("confidence", share=0.85, min_samples=2, verifier="mean_log_prob")
    assert should_stop(rule, [0, 1], [-0.1, -2.0])
    assert not should_stop(StoppingRule("confidence", 0.9, 2, verifier="mean_log_prob"), [0, 1], [-0.1, -2.0])


def test_consensus_and_single_sample_stop_on_plain_lists():
    # W sums the answered samples, 0.5 + 0.4 + 0.1 = 1.0: the leader 0 holds 0.5 + 0.1 = 0.6, the runner-up 1 holds 0.4
    assert consensus([0, 1, 0, None], [0.5, 0.4, 0.1, 1.0]) == (0, pytest.approx(0.6), pytest.approx(0.4))
    assert consensus([None, None], [1.0, 1.0]) == (None, 0.0, 0.0)
    assert consensus([0, 1], [0.0, 0.0]) == (0, 0.0, 0.0)  # no mass: no consensus (the vote still picks an answer)
    rule = StoppingRule("self_reward", share=1.0, min_samples=3, single_threshold=0.9)
    assert not should_stop(rule, [0, 0], [0.5, 0.5])  # n < m
    assert should_stop(rule, [0, 0, 0], [0.5, 0.5, 0.5])
    assert should_stop(rule, [0, 0, 1], [0.5, 0.5, None])  # the unscored sample weighs 0: share 1.0 / 1.0
    assert not should_stop(rule, [0, 0, 1], [0.5, 0.5, 0.1])  # 1.0 / 1.1
    assert should_stop(rule, [1], [0.91]) and not should_stop(rule, [1], [0.9])  # strictly above θ
    assert not should_stop(rule, [None], [5.0])  # a sample without an answer never stops the problem


def test_a_tie_for_the_lead_never_stops():
    # τ = 1/2, m = 2: two answers with one vote each both hold 1/2; the leader must weigh more than the runner-up
    half = StoppingRule("consistency", share=0.5, min_samples=2)
    assert consensus([0, 1], [1.0, 1.0]) == (0, 0.5, 0.5)
    assert not should_stop(half, [0, 1], [None, None])
    assert should_stop(half, [0, 1, 1], [None] * 3)  # 2/3 against 1/3
    # a tie up to rounding: 0.1 + 0.2 = 0.30000000000000004 against 0.3
    assert not should_stop(StoppingRule("self_reward", share=0.5, min_samples=2), [0, 0, 1], [0.1, 0.2, 0.3])
    # on SCRIPT: B (3, 5) and C (9, 4) tie at n=2 and go on to n=4, where 5 and 4 hold 3 of 4 votes: both right
    results, _ = run(half)
    assert [r.num_samples for r in results] == [2, 4, 4, 2]
    assert [r.answer for r in results] == ["7", "5", "4", "2"]


def test_samples_without_an_answer_are_left_out_of_the_share_under_every_rule():
    # 7, 7 and a sample without an answer: W counts the two answered samples, so τ = 1 holds under every rule:
    # consistency 2 / 2 (counting the third sample: 2 / 3), self_reward (0.5 + 0.5) / 1.0 (counting its r_s 0.95:
    # 1.0 / 1.95), confidence (4 + 4) / 8 (counting its confidence 8: 8 / 16)
    groups = [0, 0, None]
    assert should_stop(StoppingRule("consistency", share=1.0, min_samples=3), groups, [None] * 3)
    assert should_stop(StoppingRule("self_reward", share=1.0, min_samples=3), groups, [0.5, 0.5, 0.95])
    assert should_stop(StoppingRule("confidence", share=1.0, min_samples=3), groups, [4.0, 4.0, 8.0])


def test_a_nan_self_reward_weighs_nothing_and_stops_nothing():
    # τ = 0.8, m = 2, θ = 0.9; a NaN r_s weighs 0 and never clears θ.
    # P  n=2: {3: 0 + 0.5}, share 0.5 / 0.5 = 1                                               -> stop at 2, answer 3
    # Q  n=2: {4: 0, 5: 0}, no mass; n=4: {4: 0 + 0, 5: 0 + 0.6}, 5 holds 0.6 / 0.6 = 1 > 0    -> stop at 4, answer 5
    nan = float("nan")
    script = {
        "P": [[s("3", nan), s("3", 0.5)], [s("1", 0.1)] * 2, [s("1", 0.1)] * 2],
        "Q": [[s("4", nan), s("5", nan)], [s("5", 0.6), s("4", nan)], [s("4", nan)] * 2],
    }
    results, calls = run(SELF_REWARD, script)
    assert [r.num_samples for r in results] == [2, 4] and [r.answer for r in results] == ["3", "5"]
    assert math.isnan(results[1].completions[0].score)
    samples, pool = pool_of(script)
    values = pool.values(SELF_REWARD)
    assert [replay(SELF_REWARD, pool.groups[i], values[i], 6, 2)[0] for i in range(2)] == [2, 4]


def test_a_problems_samples_have_distinct_seeds_as_in_one_request_for_k():
    # K = 8 in rounds of b = 3 (3, 3, 2): the rounds start at seeds 0, 3, 6, so the pool is the one request for K
    # samples with seed 0 (seeds seed + r would give the rounds 0-2, 1-3 and 2-3: 4 distinct samples out of 8)
    script = {"P": [[s(str(j), 0.5) for j in range(8)]]}
    generator = ScriptedGenerator(script)
    samples = draw_pool(generator, ["P"], TASK, 8, 3, seed=0)
    assert [call[1:] for call in generator.calls] == [(3, 0), (3, 3), (2, 6)]  # (b_r, seed) of each round
    assert generator.seeds["P"] == list(range(8))
    (one_request,) = ScriptedGenerator(script).generate(["P"], 8, seed=0)
    assert [c.text for c in samples[0].completions] == [c.text for c in one_request.completions]
    # live: however many rounds a problem takes, its seeds never repeat
    generator = ScriptedGenerator(SCRIPT)
    results = adaptive_sample(generator, list(SCRIPT), TASK, SELF_REWARD, 6, 2, seed=0)
    assert [generator.seeds[r.prompt] for r in results] == [list(range(r.num_samples)) for r in results]


class CountingAnswers(IntegerAnswers):
    """Integer answers that count the answer checks."""

    def __init__(self):
        self.comparisons = 0

    def equivalent(self, a, b):
        self.comparisons += 1
        return super().equivalent(a, b)


def test_new_answers_are_grouped_against_the_groups_so_far():
    answers = ["7", None, "07", "3", "3", None, "8", "-0", "0", "08", "7"]
    representatives, groups = [], []
    for start, size in [(0, 2), (2, 3), (5, 1), (6, 5)]:
        groups += extend_groups(representatives, answers[start : start + size], TASK.same_answer)
    assert groups == group_answers(answers, TASK.same_answer) == [0, None, 0, 1, 1, None, 2, 3, 3, 2, 0]
    assert representatives == ["7", "3", "8", "-0"]
    # The sampler checks each new answer against the groups' first members only: K = 6 different answers in rounds
    # of 2 cost 0 + 1 + 2 + 3 + 4 + 5 = 15 checks (regrouping all answers every round: 1 + 6 + 15 = 22).
    checker = CountingAnswers()
    script = {"P": [[s("1"), s("2")], [s("3"), s("4")], [s("5"), s("6")]]}
    samples = draw_pool(ScriptedGenerator(script), ["P"], Task("counting", checker), 6, 2)
    assert samples[0].groups == [0, 1, 2, 3, 4, 5] and checker.comparisons == 15


def test_the_progress_bar_counts_samples_and_closes_on_errors(monkeypatch):
    bars = []

    class RecordingBar:
        def __init__(self, total, **kwargs):
            self.total, self.n, self.closed = total, 0, False
            bars.append(self)

        def update(self, n):
            self.n += n

        def set_postfix(self, **kwargs):
            pass

        def close(self):
            self.closed = True

        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            self.close()

    class FailingGenerator(ScriptedGenerator):
        def generate(self, prompts, num_samples, seed, **kwargs):
            if self.calls:
                raise RuntimeError("out of memory")
            return super().generate(prompts, num_samples, seed, **kwargs)

    monkeypatch.setattr("tqdm.auto.tqdm", RecordingBar)
    adaptive_sample(ScriptedGenerator(SCRIPT), list(SCRIPT), TASK, SELF_REWARD, 6, 2, progress=True)
    # stops at 2, 6, 2, 4 (above): 4 × 6 = 24 at most, less 2 × 4 when A and C close at 2 and 2 when D closes at 4
    assert (bars[0].n, bars[0].total, bars[0].closed) == (14, 14, True)
    with pytest.raises(RuntimeError, match="out of memory"):
        adaptive_sample(FailingGenerator(SCRIPT), list(SCRIPT), TASK, CONSISTENCY, 6, 2, progress=True)
    assert (bars[1].n, bars[1].closed) == (8, True)  # the first round's 4 × 2 samples


def test_rounds_respect_the_cap_and_invalid_rules_are_refused():
    assert round_sizes(5, 2) == [2, 2, 1] and round_sizes(4, 4) == [4] and round_sizes(3, 1) == [1, 1, 1]
    with pytest.raises(ValueError, match="round size b must be in"):
        round_sizes(4, 5)
    # answers never agree: the problem is sampled to K = 5 in rounds of 2, 2, 1
    script = {"P": [[s("1", 0.5), s("2", 0.5)], [s("3", 0.5), s("4", 0.5)], [s("5", 0.5)]]}
    results, calls = run(CONSISTENCY, script, max_samples=5, round_size=2)
    assert results[0].num_samples == 5 and [c[1] for c in calls] == [2, 2, 1]
    with pytest.raises(ValueError, match="no per-sample value"):
        StoppingRule("consistency", single_threshold=0.5)
    with pytest.raises(ValueError, match="Unknown verifier 'entropy'"):
        StoppingRule("confidence", verifier="entropy")
    with pytest.raises(ValueError, match=r"share τ must be in \(0, 1\]"):
        StoppingRule("self_reward", share=0.0)


def test_confidence_rule_fails_on_the_first_round_without_verifiers():
    script = {"P": [[s("1", 0.5), s("1", 0.5)], [s("1", 0.5), s("1", 0.5)]]}
    generator = ScriptedGenerator(script)
    with pytest.raises(ValueError, match="carry no free verifiers"):
        draw_pool(generator, ["P"], TASK, 4, 2, verifier="lowest_group_confidence")
    assert len(generator.calls) == 1
    with pytest.raises(ValueError, match="no 'self_certainty' verifier"):
        run(StoppingRule("confidence", verifier="self_certainty"), {"P": [[s("1", confidence=1.0)] * 2]}, 2, 2)


def pool_of(script, max_samples=6, round_size=2):
    generator = ScriptedGenerator(script)
    samples = draw_pool(generator, list(script), TASK, max_samples, round_size, seed=0)
    sizes = round_sizes(max_samples, round_size)
    starts = [sum(sizes[:r]) for r in range(len(sizes))]
    # every problem in every round
    assert generator.calls == [(list(script), size, start) for size, start in zip(sizes, starts, strict=True)]
    problems = [{"prompt": p, "problem": p, "answer": REFERENCES.get(p, "0")} for p in script]
    return samples, grade_pool(problems, samples, TASK)[0]


def with_confidences(script):
    """SCRIPT with lowest_group_confidence = 20 · r_s + 1 (or 1 when unscored) on every sample."""
    return {
        prompt: [[s(t, r, 1.0 if r is None else 20 * r + 1, n) for t, r, _, n in rows] for rows in rounds]
        for prompt, rounds in script.items()
    }


@pytest.mark.parametrize("max_samples, round_size", [(6, 2), (5, 2)], ids=["K=6 b=2", "K=5 b=2"])
@pytest.mark.parametrize(
    "rule",
    [
        SELF_REWARD,
        CONSISTENCY,
        StoppingRule("self_reward", share=0.6, min_samples=1),
        StoppingRule("consistency", share=0.7, min_samples=4),
        StoppingRule("confidence", share=0.8, min_samples=2, single_threshold=18.5),
    ],
    ids=lambda rule: rule.label,
)
def test_replay_on_the_pool_equals_the_live_sampler(rule, max_samples, round_size):
    # K = 5, b = 2: rounds of 2, 2, 1, the last one cut
    script = with_confidences(SCRIPT)
    samples, pool = pool_of(script, max_samples, round_size)
    # round r's samples are the pool's r-th chunk
    assert [c.text for c in samples[1].completions] == [t for rows in script["B"] for t, *_ in rows][:max_samples]
    live, _ = run(rule, script, max_samples, round_size)
    values = pool.values(rule)
    for i, result in enumerate(live):
        drawn, winner = replay(rule, pool.groups[i], values[i], max_samples, round_size)
        assert drawn == result.num_samples
        assert winner == result.answer_index and samples[i].answers[winner] == result.answer


def test_fixed_k_curves_and_the_samples_needed_to_match():
    samples, pool = pool_of(SCRIPT)
    fixed = fixed_k_points(pool, 6, num_subsets=32, seed=0)
    assert set(fixed["majority"]) == set(fixed["weighted"]) == {1, 2, 3, 4, 5, 6}
    # k = 1: the 6 single samples of each problem; a vote on one answered sample picks it, whatever its weight, so both
    # votes score the share of right samples: A 2/6 (7, 7, 1, 1, 1, 1), B 4/6 (3, 5, 5, 5, 5, none), C 5/6, D 3/6
    # (2, 2, 2, 8, 8, 8): (2 + 4 + 5 + 3) / 24 = 7/12.
    assert fixed["majority"][1]["accuracy"] == fixed["weighted"][1]["accuracy"] == pytest.approx(7 / 12)
    # On the full pool, by hand. maj@6: A {1: 4, 7: 2} -> 1 wrong; B 5 right; C 4 right; D {2: 3, 8: 3} tie -> 2
    # (seen first) wrong: 2/4. weighted: A {7: 1.1, 1: 3.6} wrong; B {5: 1.7, 3: 0.4} right; C {4: 3.2, 9: 0.95}
    # right; D {2: 0.1, 8: 0.62} right: 3/4.
    assert fixed["majority"][6]["accuracy"] == 0.5 and fixed["weighted"][6]["accuracy"] == 0.75
    # tokens: k × the mean tokens per sample, (10 + 80/6 + 10 + 10) / 4 = 10.833
    assert fixed["weighted"][6]["mean_tokens"] == pytest.approx(65.0) and fixed["majority"][1]["mean_samples"] == 1
    result = adaptive_curves(pool, [SELF_REWARD, CONSISTENCY, SELF_REWARD], 6, 2, num_subsets=32, seed=0)
    # self_reward (stops 2, 6, 2, 4; answers 7 ✓, 5 ✓, 9 ✗, 2 ✗): 3.5 samples, tokens (20 + 80 + 20 + 40) / 4 = 40, 1/2
    # consistency (stops 2, 6, 6, 2; answers 7 ✓, 5 ✓, 4 ✓, 2 ✗): 4 samples, tokens (20 + 80 + 60 + 20) / 4 = 45, 3/4
    (self_reward,) = result["rules"]["self_reward"]  # a rule given twice is one sweep point
    (consistency,) = result["rules"]["consistency"]
    assert result["sweep_points"] == {"self_reward": 1, "consistency": 1}
    assert (self_reward["mean_samples"], self_reward["mean_tokens"], self_reward["accuracy"]) == (3.5, 40.0, 0.5)
    assert (consistency["mean_samples"], consistency["mean_tokens"], consistency["accuracy"]) == (4.0, 45.0, 0.75)
    assert result["target"] == {"name": "weighted_maj@6", "method": "weighted", "k": 6, "accuracy": 0.75}
    # consistency reaches weighted maj@6 with 4 of 6 samples; self_reward never does
    assert result["samples_fraction_to_match_weighted_maj@6"] == {
        "self_reward": None,
        "consistency": pytest.approx(2 / 3),
    }


def test_a_problem_without_a_readable_reference_is_left_out():
    samples, _ = pool_of(SCRIPT)
    problems = [dict(problem) for problem in PROBLEMS]
    problems[1]["answer"] = "five"  # no integer to compare with
    pool, labels = grade_pool(problems, samples, TASK)
    assert len(pool) == 3 and labels[1] == [None] * 6
    assert labels[0] == pool.correct[0] == [True, True, False, False, False, False]  # A: 7, 7, 1, 1, 1, 1


def test_pareto_front_matching_and_sweeps():
    points = [{"mean_samples": n, "accuracy": a} for n, a in [(2, 0.5), (3, 0.5), (4, 0.75), (1, 0.25), (4, 0.6)]]
    assert pareto_front(points) == [3, 0, 2]
    # within half a point: 0.746 matches a target of 0.75, 0.744 does not
    assert samples_fraction_to_match([{"mean_samples": 3, "accuracy": 0.746}], 0.75, 6) == 0.5
    assert samples_fraction_to_match([{"mean_samples": 3, "accuracy": 0.744}], 0.75, 6) is None
    # values given twice are swept once
    rules = sweep_rules(["self_reward", "consistency"], [0.5, 1.0, 0.5], 2, self_reward_thresholds=[0.7, 0.7])
    assert [(r.kind, r.share, r.single_threshold) for r in rules] == [
        ("self_reward", 0.5, None), ("self_reward", 0.5, 0.7), ("self_reward", 1.0, None), ("self_reward", 1.0, 0.7),
        ("consistency", 0.5, None), ("consistency", 1.0, None),
    ]  # fmt: skip


def test_config_checks():
    assert tuple(KINDS) == RULES  # one reading per rule
    with pytest.raises(ValueError, match="round_size"):
        AdaptiveConfig("m", "o", num_samples=4, round_size=5)
    with pytest.raises(ValueError, match="Unknown rules"):
        AdaptiveConfig("m", "o", rules=["self_reward", "entropy"])
    with pytest.raises(ValueError, match="self_certainty"):
        AdaptiveConfig("m", "o", backend="vllm", verifier="self_certainty")
    cases = [
        ({"temperature": 0.0}, "temperature must be above 0, got 0.0: greedy decoding"),
        ({"max_new_tokens": 0}, "max_new_tokens must be at least 1"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
    ]
    for settings, message in cases:
        with pytest.raises(ValueError, match=message):
            AdaptiveConfig("m", "o", **settings)
    # without the self_reward rule, a missing recipe is fine unless --self-reward-* options were given for one
    assert AdaptiveConfig("m", "o", rules=["consistency"]).self_reward_config() is None
    with pytest.raises(ValueError, match="options given do not make a scoring recipe. Cannot score"):
        AdaptiveConfig("m", "o", rules=["consistency"], self_reward_beta=0.1).self_reward_config()


def test_confidence_thresholds_default_to_percentiles_of_the_pool():
    # the values 1, 2, 3, 4, 5 (a missing and a NaN value are skipped, other verifiers ignored); numpy's linear
    # interpolation at positions (5 − 1) · q / 100 = 2, 3, 3.6: the 50th percentile 3, the 75th 4, the 90th
    # 4 + 0.6 · (5 − 4) = 4.6
    name = "lowest_group_confidence"
    pool = GradedPool(
        verifiers=[
            [{name: 5.0}, {name: 1.0}, {name: 3.0}],
            [{name: 2.0}, {}, {name: float("nan")}, {name: 4.0, "tail_confidence": 100.0}],
        ]
    )
    config = AdaptiveConfig("m", "o", rules=["confidence"])
    assert confidence_sweep_thresholds(pool, config) == pytest.approx([3.0, 4.0, 4.6])
    # equal percentiles are swept once; given thresholds are used as they are; no confidence rule, no thresholds
    assert confidence_sweep_thresholds(GradedPool(verifiers=[[{name: 2.0}] * 4]), config) == [2.0]
    given = AdaptiveConfig("m", "o", rules=["confidence"], confidence_thresholds=[7.0])
    assert confidence_sweep_thresholds(pool, given) == [7.0]
    assert confidence_sweep_thresholds(pool, AdaptiveConfig("m", "o", rules=["consistency"])) == []


def test_the_report_skips_unreadable_references_before_sampling(tmp_path):
    # E's reference is no integer: it is counted as ungradable and never sampled (the script has no E to give)
    problems = [PROBLEMS[0], {"prompt": "E", "problem": "E", "answer": "five"}, *PROBLEMS[1:]]
    generator = ScriptedGenerator(SCRIPT)
    config = AdaptiveConfig(
        "scripted",
        str(tmp_path / "report"),
        rules=["self_reward", "consistency"],
        num_samples=6,
        round_size=2,
        shares=[0.5],
        self_reward_thresholds=[0.9],
    )
    recipe = SelfRewardConfig(token="<reserved_0>", token_id=3, beta=0.1, ref_constant=-5.0)  # SCRIPT's r_s stand in
    results = evaluate_adaptive(config, problems, TASK, recipe, generator=generator)
    assert all("E" not in prompts for prompts, *_ in generator.calls)
    assert results["num_problems"] == 5 and results["num_ungradable"] == 1
    assert results["replayed"] is True and results["backend"] == "transformers"
    # τ = 1/2 on the pool of SCRIPT.
    # self_reward, with or without θ = 0.9: A stops at 2 (7 ✓); B at 2, 3 leads 0.4 / 0.7 (✗); C at 2, 9 leads
    #   0.95 / 1.75 (✗); D at 4, 2 leads 0.1 / 0.12 (✗): 1/4, never the 3/4 of weighted maj@6 (two sweep points).
    # consistency: A 7, 7 stops at 2 (✓); B 3, 5 and C 9, 4 tie, go on, and stop at 4 with 3 of 4 votes (✓, ✓);
    #   D 2, 2 at 2 (✗): 3/4 with (2 + 4 + 4 + 2) / 4 = 3 samples, half of K.
    assert results["sweep_points"] == {"self_reward": 2, "consistency": 1}
    assert [p["accuracy"] for p in results["rules"]["self_reward"]] == [0.25, 0.25]
    (consistency,) = results["rules"]["consistency"]
    assert (consistency["mean_samples"], consistency["accuracy"]) == (3.0, 0.75)
    assert results["samples_fraction_to_match_weighted_maj@6"] == {"self_reward": None, "consistency": 0.5}
    report = tmp_path / "report"
    assert json.loads((report / "results.json").read_text())["replayed"] is True
    table = (report / "adaptive.md").read_text()
    assert "replayed on one pool of K samples per problem (backend transformers)" in table
    assert "sweep points: self_reward 2, consistency 1." in table
    assert "within half a point: self_reward never, consistency 0.50·K." in table
    lines = [json.loads(line) for line in (report / "samples.jsonl").read_text().splitlines()]
    assert len(lines) == 4 * 6 and sorted({line["problem_index"] for line in lines}) == [0, 2, 3, 4]


# ---------------------------------------------------------------------------------------------------------------------
# The command


def adaptive(model, output, flags: str = "") -> int:
    """Run `trl-laser adaptive` on MODEL into OUTPUT with FLAGS (space-separated; test paths have no spaces)."""
    return main(["adaptive", "--model_name_or_path", str(model), "--output-dir", str(output), *flags.split()])


@pytest.mark.usefixtures("one_thread")
def test_adaptive_command_end_to_end(laser_model_dir, tmp_path, capsys, loads):
    report = tmp_path / "report"
    flags = "--num-problems 3 --num_samples 4 --round-size 2 --max-new-tokens 24 --shares 0.5 1.0"
    assert adaptive(laser_model_dir, report, flags) == 0
    assert loads["count"] == 1
    results = json.loads((report / "results.json").read_text())
    assert results["self_reward"] == {"token": "<reserved_0>", "token_id": 3, "beta": 0.1, "ref_constant": -5.0}
    assert results["generation"]["num_samples"] == 4 and results["generation"]["round_size"] == 2
    assert set(results["fixed"]) == {"majority", "weighted"} and set(results["fixed"]["weighted"]) == {
        "1",
        "2",
        "3",
        "4",
    }
    assert set(results["samples_fraction_to_match_weighted_maj@4"]) == {"self_reward", "confidence", "consistency"}
    assert len(results["rules"]["self_reward"]) == 2 * 4  # τ ∈ {0.5, 1} × θ ∈ {none, 0.5, 0.7, 0.9}
    assert len(results["rules"]["consistency"]) == 2
    assert results["sweep_points"] == {kind: len(points) for kind, points in results["rules"].items()}
    assert results["replayed"] is True and results["backend"] == "transformers"
    for points in results["rules"].values():
        for point in points:
            assert 2 <= point["mean_samples"] <= 4  # rounds of 2, at most K = 4
            assert 0 <= point["accuracy"] <= 1 and point["samples_fraction"] == point["mean_samples"] / 4
        assert any(point["pareto"] for point in points)
    lines = [json.loads(line) for line in (report / "samples.jsonl").read_text().splitlines()]
    assert len(lines) == 12 and all("lowest_group_confidence" in line["verifiers"] for line in lines)
    # the fixed-K point at K is the weighted vote of the whole pool, recomputed from the written samples
    assert results["fixed"]["weighted"]["4"]["accuracy"] == pytest.approx(weighted_accuracy(lines))
    assert "| maj@1 |" in (report / "adaptive.md").read_text()
    assert (report / "adaptive_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "weighted_maj@4" in capsys.readouterr().out


def weighted_accuracy(lines) -> float:
    by_problem = {}
    for line in lines:
        by_problem.setdefault(line["problem_index"], []).append(line)
    hits = 0
    for rows in by_problem.values():
        totals = {}
        for row in rows:
            if row["group"] is not None:
                weight = 0.0 if row["score"] is None else min(max(row["score"], 0.0), 1.0)
                entry = totals.setdefault(row["group"], [0.0, 0, -row["sample_index"]])
                entry[0] += weight
                entry[1] += 1
        if totals:
            best = max(totals, key=lambda g: tuple(totals[g]))
            hits += next(r["correct"] for r in rows if r["group"] == best)
    return hits / len(by_problem)


def test_options_from_a_yaml_file(tmp_path):
    from trl_laser.cli.adaptive import make_parser

    config = tmp_path / "adaptive.yaml"
    config.write_text("model_name_or_path: m\nrules: [consistency, confidence]\nshares: [0.9]\nround_size: 4\n")
    argv = ["--config", str(config), "--output_dir", "o", "--round-size", "1", "--verifier", "tail_confidence"]
    _, parsed = make_parser().parse_args_and_config(argv)
    assert parsed.rules == ["consistency", "confidence"] and parsed.shares == [0.9]
    assert parsed.round_size == 1 and parsed.verifier == "tail_confidence"  # the command line wins


@pytest.mark.usefixtures("one_thread")
def test_a_model_without_a_recipe_runs_the_free_rules(tiny_model_dir, tmp_path):
    report = tmp_path / "report"
    flags = "--num-problems 2 --num_samples 2 --max-new-tokens 3 --rules consistency confidence --shares 1.0"
    assert adaptive(tiny_model_dir, report, flags) == 0
    results = json.loads((report / "results.json").read_text())
    assert results["self_reward"] is None and results["fixed"]["weighted"] is None
    assert results["target"]["name"] == "maj@2" and "samples_fraction_to_match_maj@2" in results


def test_bad_input_is_reported_before_the_model_is_loaded(laser_model_dir, tiny_model_dir, tmp_path, capsys, loads):
    loads["refuse"] = True
    cases = [
        (laser_model_dir, "--num_samples 4 --round_size 5", "round_size (b) must be between 1 and num_samples"),
        (laser_model_dir, "--verifier entropy", "Unknown verifier 'entropy'"),
        (laser_model_dir, "--rules majority", "Unknown rules ['majority']"),
        (laser_model_dir, "--num_samples 2 --min_samples 3", "min_samples (m) must be between 1"),
        (laser_model_dir, "--shares 1.5", "must be in (0, 1]"),
        (tiny_model_dir, "--rules self_reward consistency", "--self-reward-ref-constant"),
        (laser_model_dir, "--temperature 0", "temperature must be above 0"),
        (laser_model_dir, "--batch_size 0", "batch_size must be at least 1"),
        (tiny_model_dir, "--rules consistency --self-reward-beta 0.1", "options given do not make a scoring recipe"),
    ]
    for model, flags, message in cases:
        assert adaptive(model, tmp_path / "r", flags) == 2
        assert message in capsys.readouterr().err
    assert adaptive(tiny_model_dir, tmp_path / "r", "--rules self_reward consistency") == 2
    error = capsys.readouterr().err
    assert "self_reward rule needs a scoring recipe" in error and "--rules consistency" in error
    taken = tmp_path / "taken"
    taken.write_text("")
    assert adaptive(laser_model_dir, taken) == 2
    assert "is a file; pass a directory" in capsys.readouterr().err
    assert loads["count"] == 0
