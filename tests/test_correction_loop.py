"""Stopping rules of the verbal and the LaSeR correction loops, and the metrics, with a scripted generator."""

import json
import math

import pytest

from trl_laser.correction import correction_metrics, evaluate_correction, self_correct
from trl_laser.tasks import COMPARE_TASK
from trl_laser.testing import FakeGenerator


TASK = COMPARE_TASK
EVAL_PREFIX = TASK.correction.evaluation_prefix
Scripted = FakeGenerator.scripted


P1, P2, P3 = (f"Which number is larger, {a} or {b}?" for a, b in [(31, 17), (45, 72), (10, 99)])


def _words(prompt, prefix):
    # FakeGenerator's tokens are words; without a tokenizer the loop counts the prompt's messages and the prefix
    return sum(len(m["content"].split()) for m in TASK.build_prompt(prompt)) + len(prefix.split())


class ScoredFake(FakeGenerator):
    """A scripted generator whose finished completions carry a score, as `SelfRewardScorer.generate` gives them."""

    def __init__(self, script, score_of):
        super().__init__(FakeGenerator.scripted(script).respond)
        self.score_of = score_of
        self.stops = []

    def generate(self, prompts, num_samples=1, max_new_tokens=256, *, assistant_prefixes=None, stop=None, **kw):
        self.stops.append(stop)
        outputs = super().generate(prompts, num_samples, max_new_tokens, assistant_prefixes=assistant_prefixes,
                                   stop=stop, **kw)  # fmt: skip
        for completion in (c for o in outputs for c in o.completions):
            completion.score = self.score_of(completion.text) if completion.finished else None
        return outputs


def test_verbal_loop_stops_on_correct_revises_on_wrong_and_caps_attempts():
    gen = Scripted(
        {
            # right away right, judged correct: one attempt
            P1: ["31\n\nSelf-evaluation: [VERIFY] correct.", " [VERIFY] correct."],
            # wrong, judged wrong, revised right
            P2: [
                "45\n\nSelf-evaluation:",
                " 45 is smaller. [VERIFY] wrong.",
                " 72\n\nSelf-evaluation: [VERIFY] correct.",
                " [VERIFY] correct.",
            ],
            # judged wrong twice, max_attempts=3 ends it after the third attempt (which is not judged)
            P3: ["10 Self-evaluation:", " [VERIFY] wrong.", " 10 Self-evaluation:", " [VERIFY] wrong.", " 99"],
        }
    )
    r1, r2, r3 = self_correct([P1, P2, P3], gen, TASK, mode="verbal", max_attempts=3)
    assert (r1.attempts, r1.verdicts, r1.final_answer) == (["31"], ["correct"], "31")
    assert r1.trajectory == "31\n\nSelf-evaluation: [VERIFY] correct."
    assert (r2.attempts, r2.verdicts, r2.final_answer) == (["45", "72"], ["wrong", "correct"], "72")
    assert r2.trajectory == (
        "45\n\nSelf-evaluation: 45 is smaller. [VERIFY] wrong.\n\nRevision: 72\n\nSelf-evaluation: [VERIFY] correct."
    )
    assert (r3.attempts, r3.verdicts, r3.final_answer) == (["10", "10", "99"], ["wrong", "wrong"], "99")
    # verification cost: the evaluation prefix (1 "token" here) + the generated evaluation, per judged attempt
    assert r1.verification_tokens == 1 + 2
    assert r2.verification_tokens == (1 + 5) + (1 + 2)
    assert r3.verification_tokens == 2 * (1 + 2)
    # ... and what the model processed for it: the evaluation call's prefill of prompt + trajectory + prefix, and
    # the decoded evaluation
    assert r1.verification_compute_tokens == _words(P1, "31" + EVAL_PREFIX) + 2
    first = "45" + EVAL_PREFIX
    second = "45\n\nSelf-evaluation: 45 is smaller. [VERIFY] wrong.\n\nRevision: 72" + EVAL_PREFIX
    assert r2.verification_compute_tokens == (_words(P2, first) + 5) + (_words(P2, second) + 2)
    assert r2.revision_prompt_tokens == 1 and r3.revision_prompt_tokens == 2
    assert not any(r.format_broken for r in (r1, r2, r3))
    # the evaluation is generated in the trajectory's context: after the attempt and the evaluation prefix
    assert first in gen.prefixes


def test_verbal_loop_no_self_evaluation_breaks_the_format_and_is_not_forced():
    # The model ended its turn (EOS) or hit the token limit ("...") where a self-evaluation was due: the loop does
    # not force one, it stops, and the format counts as broken (the first answer is final).
    gen = Scripted({P1: ["31"], P2: ["45 and then ..."]})
    r1, r2 = self_correct([P1, P2], gen, TASK, mode="verbal", max_attempts=2)
    assert gen.requests == 2  # the two first attempts; no evaluation was asked for
    for r, answer in ((r1, "31"), (r2, "45")):
        assert r.format_broken and r.verdicts == [] and r.num_attempts == 1 and r.final_answer == answer
        assert r.verification_tokens == r.verification_compute_tokens == 0
    # with a single allowed attempt no self-evaluation is due: ending the turn is not a format break
    (r,) = self_correct([P1], Scripted({P1: ["31"]}), TASK, mode="verbal", max_attempts=1)
    assert not r.format_broken and r.final_answer == "31"


def test_verbal_loop_broken_format_keeps_first_answer():
    gen = Scripted(
        {
            P1: ["17 Self-evaluation:", " I am not sure."],  # no verdict: stop, first answer final
            P2: ["45 Self-evaluation:", " [VERIFY] wrong.", " I give up"],  # revision without answer: first answer
        }
    )
    r1, r2 = self_correct([P1, P2], gen, TASK, mode="verbal", max_attempts=2)
    assert r1.format_broken and r1.attempts == ["17"] and r1.final_answer == "17" and r1.verdicts == [None]
    assert r2.format_broken and r2.attempts == ["45", "I give up"] and r2.final_answer == "45"


def test_single_attempt_is_never_judged():
    gen = Scripted({P1: ["17"]})
    (r,) = self_correct([P1], gen, TASK, mode="verbal", max_attempts=1)
    assert r.verdicts == [] and r.verification_tokens == 0 and r.final_answer == "17"


def test_laser_loop_revises_only_when_score_at_most_threshold():
    table = {"31": 0.9, "45": 0.2, "99\n\nSelf-evaluation: [VERIFY] wrong.": 0.5}
    gen = ScoredFake({P1: ["31"], P2: ["45", " 72"], P3: ["99\n\nSelf-evaluation: [VERIFY] wrong.", " 99"]},
                     table.get)  # fmt: skip
    r1, r2, r3 = self_correct([P1, P2, P3], gen, TASK, mode="laser", max_attempts=2, threshold=0.5)
    assert (r1.attempts, r1.verdicts, r1.scores, r1.final_answer) == (["31"], ["correct"], [0.9], "31")
    assert (r2.attempts, r2.verdicts, r2.final_answer) == (["45", "72"], ["wrong"], "72")
    # exactly at the threshold means "revise"; the model's own verdict text is not part of the attempt
    assert r3.verdicts == ["wrong"] and r3.attempts[0] == "99"
    # attempts run to their EOS (the score is read there); only a revision started by the model itself is stopped
    assert gen.stops[0] == ["Revision:"]
    # the loop writes the "wrong" verdict into the context, so the revision sees what it saw in training
    assert "45\n\nSelf-evaluation: [VERIFY] wrong.\n\nRevision:" in gen.prefixes
    assert r2.trajectory == "45\n\nSelf-evaluation: [VERIFY] wrong.\n\nRevision: 72"
    assert r1.verification_tokens == r2.verification_tokens == 1
    # one decode step per judgement, plus the model's own evaluation text written before the EOS (r3: 2 words)
    assert r1.verification_compute_tokens == r2.verification_compute_tokens == 1
    assert r3.verification_compute_tokens == 1 + 2
    assert r2.revision_prompt_tokens == len("Self-evaluation: [VERIFY] wrong. Revision:".split())


def test_laser_loop_unscorable_attempt_stops():
    # cut by the token limit: no EOS, no score
    gen = ScoredFake({P1: ["17 and ..."]}, lambda text: 0.0)
    (r,) = self_correct([P1], gen, TASK, mode="laser")
    assert r.format_broken and r.final_answer == "17" and r.num_attempts == 1 and r.scores == [None]


def test_laser_loop_reads_the_scores_of_generation_by_default():
    gen = ScoredFake({P1: ["17", " 31"]}, lambda text: 0.0)
    (r,) = self_correct([P1], gen, TASK, mode="laser")
    assert r.scores == [0.0] and r.verdicts == ["wrong"] and r.final_answer == "31"
    seen = []
    (r,) = self_correct([P1], Scripted({P1: ["17"]}), TASK, mode="laser",
                        score_fn=lambda prompts, completions: seen.extend(c.text for c in completions) or [0.9])  # fmt: skip
    assert seen == ["17"] and r.verdicts == ["correct"]


def test_argument_checks():
    with pytest.raises(ValueError, match="mode"):
        self_correct([P1], Scripted({}), TASK, mode="oracle")
    with pytest.raises(ValueError, match="max_attempts"):
        self_correct([P1], Scripted({}), TASK, max_attempts=0)


def test_metrics_as_in_the_method():
    gen = Scripted(
        {
            P1: ["31 Self-evaluation:", " [VERIFY] correct."],  # c→c, verdict right
            P2: ["45 Self-evaluation:", " [VERIFY] wrong.", " 72"],  # i→c, verdict right
            P3: ["99 Self-evaluation:", " [VERIFY] wrong.", " 10"],  # c→i, verdict wrong
        }
    )
    results = self_correct([P1, P2, P3], gen, TASK, mode="verbal")
    m = correction_metrics(results, ["31", "72", "99"], TASK)
    assert m["turn1_accuracy"] == pytest.approx(2 / 3) and m["final_accuracy"] == pytest.approx(2 / 3)
    assert m["delta"] == pytest.approx(0) and m["delta_i_to_c"] == pytest.approx(1 / 3)
    assert m["delta_c_to_i"] == pytest.approx(1 / 3)
    assert m["verdict_acc_correct"] == pytest.approx(1 / 2) and m["verdict_acc_incorrect"] == 1.0
    assert m["avg_attempts"] == pytest.approx(5 / 3)
    assert m["verification_tokens_per_problem"] == pytest.approx(1 + 2)
    no_wrong = correction_metrics(results[:1], ["31"], TASK)
    assert math.isnan(no_wrong["verdict_acc_incorrect"])


def test_evaluate_correction_writes_records(tmp_path):
    gen = ScoredFake({P1: ["17"], P2: ["72"]}, lambda text: 0.9)
    metrics = evaluate_correction(gen, [P1, P2], ["31", "72"], TASK, mode="laser", output_dir=str(tmp_path))
    assert metrics["mode"] == "laser" and metrics["turn1_accuracy"] == 0.5 and metrics["avg_attempts"] == 1
    assert metrics["verdict_acc_correct"] == 1.0 and metrics["verdict_acc_incorrect"] == 0.0
    records = [json.loads(line) for line in open(tmp_path / "records.jsonl")]
    assert [r["final_correct"] for r in records] == [False, True] and records[0]["scores"] == [0.9]
    saved = json.load(open(tmp_path / "metrics.json"))
    assert saved["verification_tokens_per_problem"] == saved["verification_compute_tokens_per_problem"] == 1
