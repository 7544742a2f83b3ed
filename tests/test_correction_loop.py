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


def test_verbal_loop_stops_on_correct_revises_on_wrong_and_caps_attempts():
    gen = Scripted(
        {
            # right away right, judged correct: one attempt
            P1: ["31\n\nSelf-evaluation: [VERIFY] correct.", " [VERIFY] correct."],
            # wrong, judged wrong, revised right
            P2: [
                "45",
                " 45 is smaller. [VERIFY] wrong.",
                " 72\n\nSelf-evaluation: [VERIFY] correct.",
                " [VERIFY] correct.",
            ],
            # judged wrong twice, max_attempts=3 ends it after the third attempt (which is not judged)
            P3: ["10", " [VERIFY] wrong.", " 10", " [VERIFY] wrong.", " 99"],
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
    assert r2.revision_prompt_tokens == 1 and r3.revision_prompt_tokens == 2
    assert not any(r.format_broken for r in (r1, r2, r3))
    # the evaluation is generated in the trajectory's context: after the attempt and the evaluation prefix
    assert "45" + EVAL_PREFIX in gen.prefixes


def test_verbal_loop_broken_format_keeps_first_answer():
    gen = Scripted(
        {
            P1: ["17", " I am not sure."],  # no verdict: stop, first answer final
            P2: ["45", " [VERIFY] wrong.", " I give up"],  # revision without answer: first answer final
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
    gen = Scripted({P1: ["31"], P2: ["45", " 72"], P3: ["99\n\nSelf-evaluation: [VERIFY] wrong.", " 99"]})
    calls = []

    def score_fn(prompts, completions):
        calls.append(list(completions))
        table = {"31": 0.9, "45": 0.2, "99": 0.5}
        return [table.get(c) for c in completions]

    r1, r2, r3 = self_correct([P1, P2, P3], gen, TASK, mode="laser", max_attempts=2, threshold=0.5, score_fn=score_fn)
    assert calls == [["31", "45", "99"]]  # one scoring call, on the first attempts; the last attempt is not scored
    assert (r1.attempts, r1.verdicts, r1.scores, r1.final_answer) == (["31"], ["correct"], [0.9], "31")
    assert (r2.attempts, r2.verdicts, r2.final_answer) == (["45", "72"], ["wrong"], "72")
    # exactly at the threshold means "revise"; the model's own verdict text was cut off and never generated
    assert r3.verdicts == ["wrong"] and r3.attempts[0] == "99"
    # the loop writes the "wrong" verdict into the context, so the revision sees what it saw in training
    assert "45\n\nSelf-evaluation: [VERIFY] wrong.\n\nRevision:" in gen.prefixes
    assert r1.verification_tokens == r2.verification_tokens == 1
    assert r2.revision_prompt_tokens == len("Self-evaluation: [VERIFY] wrong. Revision:".split())


def test_laser_loop_unscorable_attempt_stops():
    gen = Scripted({P1: ["17"]})
    (r,) = self_correct([P1], gen, TASK, mode="laser", score_fn=lambda p, c: [None])
    assert r.format_broken and r.final_answer == "17" and r.num_attempts == 1


def test_laser_loop_scores_with_the_generating_model_by_default():
    scored = []
    gen = Scripted({P1: ["17", " 31"]}, score=lambda prompts, completions: scored.extend(completions) or [0.0])
    (r,) = self_correct([P1], gen, TASK, mode="laser")
    assert scored == ["17"] and r.verdicts == ["wrong"] and r.final_answer == "31"


def test_argument_checks():
    with pytest.raises(ValueError, match="mode"):
        self_correct([P1], Scripted({}), TASK, mode="oracle")
    with pytest.raises(ValueError, match="max_attempts"):
        self_correct([P1], Scripted({}), TASK, max_attempts=0)


def test_metrics_as_in_the_method():
    gen = Scripted(
        {
            P1: ["31", " [VERIFY] correct."],  # c→c, verdict right
            P2: ["45", " [VERIFY] wrong.", " 72"],  # i→c, verdict right
            P3: ["99", " [VERIFY] wrong.", " 10"],  # c→i, verdict wrong
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
    gen = Scripted({P1: ["17"], P2: ["72"]}, score=lambda p, c: [0.9] * len(c))
    metrics = evaluate_correction(gen, [P1, P2], ["31", "72"], TASK, mode="laser", output_dir=str(tmp_path))
    assert metrics["mode"] == "laser" and metrics["turn1_accuracy"] == 0.5 and metrics["avg_attempts"] == 1
    assert metrics["verdict_acc_correct"] == 1.0 and metrics["verdict_acc_incorrect"] == 0.0
    records = [json.loads(line) for line in open(tmp_path / "records.jsonl")]
    assert [r["final_correct"] for r in records] == [False, True] and records[0]["scores"] == [0.9]
    assert json.load(open(tmp_path / "metrics.json"))["verification_tokens_per_problem"] == 1
