"""Free verifiers: read during generation, equal to a separate forward over the same tokens; their formulas, AUROC,
ROC curve and DeepConf votes by hand."""

import math
from types import SimpleNamespace

import pytest
import torch

from trl_laser import SelfRewardScorer
from trl_laser.core.recipe import SelfRewardConfig
from trl_laser.evaluation.free_verifiers import (
    best_free_verifier,
    filtered_weighted_vote,
    free_verifier_report,
    percentile,
    sample_verifiers,
    self_consistency,
)
from trl_laser.evaluation.metrics import auroc, roc_curve
from trl_laser.scoring.confidence import (
    ConfidenceSettings,
    position_statistics,
    trace_verifiers,
    vllm_trace_verifiers,
    window_means,
)
from trl_laser.testing import tiny_model, tiny_tokenizer


pytestmark = pytest.mark.usefixtures("one_thread")
TOLERANCE = 1e-4


def oracle_verifiers(scorer, prompt, token_ids, settings):
    """The free verifiers from one plain forward over prompt + completion (no padding, no cache)."""
    prompt_ids = scorer.encode_prompt(prompt)
    with torch.no_grad():
        logits = scorer.model(input_ids=torch.tensor([prompt_ids + token_ids])).logits[0]
    # The distribution that produced completion token t is the output at the position before it.
    steps = logits[len(prompt_ids) - 1 : len(prompt_ids) - 1 + len(token_ids)].log_softmax(-1)
    vocab = steps.shape[-1]
    token_lp = [steps[t, token].item() for t, token in enumerate(token_ids)]
    confidence = [-steps[t].topk(settings.top_k).values.mean().item() for t in range(len(token_ids))]
    certainty = [(-math.log(vocab) - steps[t].mean()).item() for t in range(len(token_ids))]
    windows = [
        sum(confidence[i : i + min(settings.group_window, len(confidence))])
        / min(settings.group_window, len(confidence))
        for i in range(len(confidence) - min(settings.group_window, len(confidence)) + 1)
    ]
    tail = confidence[-settings.tail_window :]
    return {
        "mean_log_prob": sum(token_lp) / len(token_lp),
        "token_confidence": sum(confidence) / len(confidence),
        "lowest_group_confidence": min(windows),
        "tail_confidence": sum(tail) / len(tail),
        "self_certainty": sum(certainty) / len(certainty),
    }


@pytest.mark.parametrize("with_recipe", [True, False], ids=["recipe", "no_recipe"])
@pytest.mark.parametrize("pad_is_eos", [True, False], ids=["pad_is_eos", "pad_not_eos"])
def test_generation_verifiers_equal_a_separate_forward(with_recipe, pad_is_eos):
    tokenizer = tiny_tokenizer(pad_is_eos=pad_is_eos)
    recipe = SelfRewardConfig(token="<reserved_0>", beta=0.1, ref_constant=-5.0) if with_recipe else None
    # Small windows so that the lowest group and the tail differ from the whole-trace mean on these lengths.
    settings = ConfidenceSettings(top_k=20, group_window=3, tail_window=4)
    scorer = SelfRewardScorer(tiny_model(tokenizer).eval(), tokenizer, recipe, confidence=settings)
    # Temperature 2 reshapes sampling but not the verifiers: they read the untempered distribution.
    samples = scorer.generate(["x", "what is it?"], num_samples=4, max_new_tokens=12, temperature=2.0, seed=0)
    completions = [(s.prompt, c) for s in samples for c in s.completions]
    assert any(c.finished for _, c in completions) and not all(c.finished for _, c in completions)
    for prompt, completion in completions:
        expected = oracle_verifiers(scorer, prompt, completion.token_ids, settings)
        assert completion.verifiers.keys() == expected.keys()
        for name, value in expected.items():
            assert completion.verifiers[name] == pytest.approx(value, abs=TOLERANCE), name
    # The windows matter: on some completion the lowest group is below the mean.
    assert any(c.verifiers["lowest_group_confidence"] < c.verifiers["token_confidence"] - 1e-3 for _, c in completions)


def test_verifiers_are_skipped_when_disabled():
    tokenizer = tiny_tokenizer()
    scorer = SelfRewardScorer(tiny_model(tokenizer).eval(), tokenizer, None, confidence=None)
    samples = scorer.generate(["x"], num_samples=2, max_new_tokens=4, seed=0)
    assert all(c.verifiers == {} for c in samples[0].completions)


def test_position_statistics_by_hand():
    # Uniform over 4 tokens: every log-prob is −log 4; KL(U ‖ U) = 0.
    log_probs, confidence, certainty = position_statistics(torch.zeros(1, 4), top_k=2)
    assert confidence.item() == pytest.approx(math.log(4))
    assert certainty.item() == pytest.approx(0.0, abs=1e-6)
    # p = (1/2, 1/4, 1/8, 1/8): top-2 confidence = (log 2 + log 4) / 2 = 1.5 log 2;
    # KL(U ‖ p) = −log 4 − (1/4)(−log 2 − 2 log 2 − 3 log 2 − 3 log 2) = −2 log 2 + 9/4 log 2 = 0.25 log 2.
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.125, 0.125]]))
    log_probs, confidence, certainty = position_statistics(logits, top_k=2)
    assert log_probs[0, 1].item() == pytest.approx(math.log(0.25))
    assert confidence.item() == pytest.approx(1.5 * math.log(2))
    assert certainty.item() == pytest.approx(0.25 * math.log(2))


def test_trace_verifiers_by_hand():
    settings = ConfidenceSettings(top_k=20, group_window=2, tail_window=3)
    values = trace_verifiers([-1.0, -3.0, -2.0, 0.0], [4.0, 1.0, 3.0, 6.0], [0.5, 1.5, 1.0, 1.0], settings)
    assert values == {
        "mean_log_prob": -1.5,  # (−1 − 3 − 2 + 0) / 4
        "token_confidence": 3.5,  # 14 / 4
        "lowest_group_confidence": 2.0,  # windows (4,1), (1,3), (3,6): means 2.5, 2.0, 4.5
        "tail_confidence": 10 / 3,  # (1 + 3 + 6) / 3
        "self_certainty": 1.0,
    }
    # Shorter than the window: one group, the whole trace.
    assert window_means([2.0, 4.0], 2048) == [3.0]
    assert trace_verifiers([], [], []) == {}
    with pytest.raises(ValueError, match="unequal lengths"):
        trace_verifiers([-1.0], [1.0, 2.0], [0.0])


def test_vllm_verifiers_from_top_k_log_probs():
    def candidates(**values):
        return {int(k[1:]): SimpleNamespace(logprob=v) for k, v in values.items()}

    # Position 1: sampled token 7 is outside the top 2 (vLLM returns it besides them); position 2: no log-probs.
    positions = [candidates(t5=-0.1, t6=-2.5, t9=-4.0), candidates(t1=-0.5, t2=-1.0, t7=-3.0), None]
    settings = ConfidenceSettings(top_k=2)
    values = vllm_trace_verifiers([5, 7, 2], positions, settings)
    assert values["mean_log_prob"] == pytest.approx((-0.1 - 3.0) / 2)
    # C = −mean of the 2 highest: (0.1 + 2.5) / 2 = 1.3 and (0.5 + 1.0) / 2 = 0.75.
    assert values["token_confidence"] == pytest.approx((1.3 + 0.75) / 2)
    assert "self_certainty" not in values  # needs the whole distribution, which vLLM does not return
    assert vllm_trace_verifiers([1], [None]) == {}


# ---------------------------------------------------------------------------------------------------------------------
# Measuring them: AUROC on the samples r_s is measured on, and DeepConf's filtered, weighted vote


def test_self_consistency_and_percentile_by_hand():
    assert self_consistency([0, 1, 0, None]) == [0.5, 0.25, 0.5, 0.0]
    # numpy's linear interpolation: position (n − 1) q / 100
    assert percentile([4.0, 1.0, 3.0, 2.0], 10) == pytest.approx(1.3)  # 1 + 0.3 · (2 − 1)
    assert percentile([4.0, 1.0, 3.0, 2.0], 90) == pytest.approx(3.7)
    assert percentile([5.0], 50) == 5.0


def test_filtered_weighted_vote_by_hand():
    groups = [0, 0, 0, 1, 1]
    weights = [0.2, 0.3, 0.25, 0.9, 0.1]
    # keep 90 %: threshold = percentile 10 = 0.1 + 0.4 · (0.2 − 0.1) = 0.14 → samples 0–3 kept;
    # totals: answer 0 → 0.75, answer 1 → 0.9 → answer 1 (its first kept member, index 3).
    assert filtered_weighted_vote(groups, weights, 0.9) == 3
    # keep 10 %: threshold = percentile 90 = 0.3 + 0.6 · (0.9 − 0.3) = 0.66 → only sample 3.
    assert filtered_weighted_vote(groups, weights, 0.1) == 3
    # Keeping everything, the answer with the larger total weight wins: 1.5 > 0.9.
    assert filtered_weighted_vote([0, 0, 0, 1], [0.5, 0.5, 0.5, 0.9], 1.0) == 0
    assert filtered_weighted_vote([None, 1], [None, None], 0.9) is None
    # A sample without a value is dropped, not counted at weight 0 in the percentile.
    assert filtered_weighted_vote([0, 1], [None, 0.1], 0.1) == 1


def test_free_verifier_report_by_hand():
    # Two problems, 3 samples each. Problem 0: answers a, a, b (a right); problem 1: c, d, d (c right).
    groups = [[0, 0, 1], [0, 1, 1]]
    correct = [[True, True, False], [True, False, False]]
    finished = [[True, True, True], [True, True, False]]
    traces = [
        [{"mean_log_prob": -0.1}, {"mean_log_prob": -0.2}, {"mean_log_prob": -0.3}],
        [{"mean_log_prob": -0.05}, {"mean_log_prob": -1.0}, {"mean_log_prob": -2.0}],
    ]
    values = [sample_verifiers(g, t, [5, 6, 7]) for g, t in zip(groups, traces, strict=True)]
    assert values[0][2] == {"mean_log_prob": -0.3, "self_consistency": 1 / 3, "length": -7.0}
    report = free_verifier_report(groups, correct, finished, values)
    assert list(report) == ["mean_log_prob", "self_consistency", "length"]  # only the verifiers the samples have
    # Finished samples: (−0.1 ✓, −0.2 ✓, −0.3 ✗, −0.05 ✓, −1.0 ✗): every right one above every wrong one.
    assert report["mean_log_prob"]["auroc"] == 1.0 and report["mean_log_prob"]["num_samples"] == 5
    # self-consistency (2/3 ✓, 2/3 ✓, 1/3 ✗, 1/3 ✓, 2/3 ✗): pairs (✓, ✗) = 3 · 2 = 6;
    # 2/3 vs 1/3: win ×2 (two right at 2/3), tie with the wrong 2/3 ×2 (½ each), 1/3 right: tie with 1/3 wrong (½),
    # lose to 2/3 wrong → (2 + 1 + 0.5 + 0) / 6.
    assert report["self_consistency"]["auroc"] == pytest.approx(3.5 / 6)
    # Votes: problem 0 → a (right) either way; problem 1, exp(mean_log_prob) weights 0.951, 0.368, 0.135:
    # keep 90 % drops the lowest (threshold 0.135 + 0.2 · 0.233 = 0.182) → c 0.951 vs d 0.368 → c (right);
    # keep 10 % → c alone. Majority-like self-consistency picks d in problem 1.
    assert report["mean_log_prob"]["weighted_maj@3"] == 1.0
    assert report["mean_log_prob"]["top10_weighted_maj@3"] == 1.0
    assert report["self_consistency"]["weighted_maj@3"] == 0.5
    assert best_free_verifier(report) == ("mean_log_prob", 1.0)
    assert free_verifier_report([], [], [], []) == {}


def test_roc_curve_by_hand_and_its_area_is_the_auroc():
    scores = [0.9, 0.8, 0.8, 0.3, None, 0.1]
    labels = [True, False, True, True, False, False]
    fpr, tpr = roc_curve(scores, labels)
    # thresholds: > 0.9 (0, 0); 0.9 (0, 1/3); 0.8 tie (1/2, 2/3); 0.3 (1/2, 1); 0.1 (1, 1). The unscored one is out.
    assert fpr == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert tpr == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0, 1.0])
    area = sum((fpr[i + 1] - fpr[i]) * (tpr[i + 1] + tpr[i]) / 2 for i in range(len(fpr) - 1))
    assert area == pytest.approx(auroc(scores, labels))
    assert roc_curve([0.5], [True]) == ([], [])


# ---------------------------------------------------------------------------------------------------------------------
# A scorer without a recipe: it says so at load, and what needs r_s refuses its completions


def test_scorer_without_recipe_warns_and_its_samples_are_refused(caplog):
    from trl_laser.correction import self_correct
    from trl_laser.evaluation.evaluate import evaluate_samples
    from trl_laser.tasks import COMPARE_TASK

    tokenizer = tiny_tokenizer()
    with caplog.at_level("WARNING", logger="trl_laser"):
        scorer = SelfRewardScorer(tiny_model(tokenizer).eval(), tokenizer, None)
    assert "No scoring recipe" in caplog.text and "SelfRewardConfig" in caplog.text
    assert not scorer.has_scores

    def end_at_second_step(input_ids, scores):  # every row writes one token, then EOS: all finished
        scores = scores.clone()
        if input_ids.shape[1] > width:
            scores[:] = -math.inf
            scores[:, scorer.eos_ids[0]] = 0.0
        return scores

    width = len(scorer.encode_prompt("x"))
    samples = scorer.generate(["x"], num_samples=4, max_new_tokens=3, seed=0, logits_processor=[end_at_second_step])
    finished = [c for c in samples[0].completions if c.finished]
    assert len(finished) == 4 and all(c.score is None for c in finished)
    # Free verifiers are still there: any model has them.
    assert all(c.verifiers for c in samples[0].completions)
    with pytest.raises(ValueError, match="weighted voting and best-of-N needs r_s.*without a scoring recipe"):
        evaluate_samples([{"problem": "x", "answer": "1"}], samples, COMPARE_TASK)
    with pytest.raises(ValueError, match="LaSeR correction loop decides by r_s.*no scoring recipe"):
        self_correct(["Which is larger, 1 or 2?"], scorer, COMPARE_TASK, mode="laser", max_attempts=2)
