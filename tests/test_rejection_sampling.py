"""Selection rules of sequential rejection sampling, trajectory assembly, and resuming, with a scripted generator."""

import json
import os
from collections import Counter

import pytest
from datasets import load_from_disk

from trl_laser.correction import (
    RejectionSamplingConfig,
    assemble_trajectories,
    balance_types,
    run_rejection_sampling,
    select_evaluations,
    select_revisions,
)
from trl_laser.correction.rejection_sampling import AttemptPieces, label_attempts
from trl_laser.scoring.scorer import Completion
from trl_laser.tasks import COMPARE_TASK, MATH_TASK
from trl_laser.testing import FakeGenerator as ScriptedGenerator


MATH_FORMAT = MATH_TASK.correction
COMPARE_FORMAT = COMPARE_TASK.correction


def done(text):
    return Completion(text, [0] * len(text.split()), finished=True)


def cut(text):
    return Completion(text, [0] * len(text.split()), finished=False)


def test_label_attempts_leaves_truncated_out():
    attempts = [done("\\boxed{5}"), done("\\boxed{4}"), cut("\\boxed{5} and then")]
    assert label_attempts(attempts, "5", MATH_TASK) == [True, False, None]


def test_attempts_without_an_answer_are_not_wrong_attempts():
    # no extractable answer: not a wrong first attempt to be revised (a D1 row) but no attempt at all
    attempts = [done("I think it is five."), done("\\boxed{4}"), done("The answer is \\boxed{")]
    assert label_attempts(attempts, "5", MATH_TASK) == [None, False, None]


def test_boxed_verdicts_are_kept_unwrapped():
    stats = Counter()
    kept = select_evaluations(
        [done("Wrong sign. \\boxed{[VERIFY] wrong.}"), done("$\\boxed{\\text{[VERIFY] wrong.}}$")],
        label=False, fmt=MATH_FORMAT, stats=stats,
    )  # fmt: skip
    assert kept == ["Wrong sign. [VERIFY] wrong.", "[VERIFY] wrong."] and stats["evaluation_kept_wrong"] == 2
    assert not any("boxed" in text for text in kept)


def test_select_evaluations_rules():
    evaluations = [
        done("Looks right. [VERIFY] correct. Done."),  # kept, normalised
        done("[VERIFY] wrong."),  # disagrees with the label
        done("[VERIFY] correct. or [VERIFY] wrong."),  # two verdicts
        done("I cannot tell."),  # no verdict
        cut("[VERIFY] correct and"),  # cut by the token limit
        done("[VERIFY] correct"),  # kept, period completed
    ]
    stats = Counter()
    kept = select_evaluations(evaluations, label=True, fmt=MATH_FORMAT, stats=stats)
    assert kept == ["Looks right. [VERIFY] correct.", "[VERIFY] correct."]
    assert stats == Counter(
        evaluation_kept_correct=2,
        evaluation_disagrees=1,
        evaluation_several_verdicts=1,
        evaluation_no_verdict=1,
        evaluation_truncated=1,
    )
    assert select_evaluations(evaluations, label=False, fmt=MATH_FORMAT) == ["[VERIFY] wrong."]


def test_select_revisions_keeps_finished_correct_ones_without_verdict():
    revisions = [done("\\boxed{5}"), done("\\boxed{6}"), cut("\\boxed{5} but"), done("\\boxed{5} [VERIFY] correct.")]
    stats = Counter()
    assert select_revisions(revisions, "5", MATH_TASK, stats) == ["\\boxed{5}"]
    assert stats == Counter(revision_kept=1, revision_incorrect=1, revision_truncated=1, revision_has_verdict=1)


def pieces(text, correct, evaluations=(), revisions=()):
    return AttemptPieces(text, correct, list(evaluations), list(revisions))


def test_assemble_types_masks_and_cap():
    fmt = COMPARE_FORMAT
    attempts = [
        pieces("45", False, ["[VERIFY] wrong."], ["72"]),  # D1
        pieces("45!", False, ["[VERIFY] wrong."], []),  # no correct revision: nothing
        pieces("45?", False, [], ["72"]),  # no agreeing evaluation: nothing
        pieces("72", True, ["[VERIFY] correct."], ["72"]),  # D3 (tie → D3)
        pieces("72.", True, ["[VERIFY] correct."], ["72"]),  # D2 now has fewer rows
        pieces("It is 72", True, [], ["72"]),  # only D2 possible, but D2 is full
        pieces("72", None, ["[VERIFY] correct."], []),  # truncated attempt: never used
        pieces("Maybe 45", False, ["[VERIFY] wrong."], ["72"]),  # D1 is full
    ]
    stats = Counter()
    rows = assemble_trajectories(fmt, attempts, max_per_type=1, stats=stats)
    assert [r["type"] for r in rows] == ["D1", "D3", "D2"]
    d1, d3, d2 = rows
    assert d1["trajectory"] == (
        "45\n\nSelf-evaluation: [VERIFY] wrong.\n\nRevision: 72\n\nSelf-evaluation: [VERIFY] correct."
    )
    assert d1["masked_prefix"] == "45"  # D1 trains the verdict and the revision
    assert d3["trajectory"] == "72\n\nSelf-evaluation: [VERIFY] correct." and d3["masked_prefix"] == ""
    assert d2["trajectory"] == (
        "72.\n\nSelf-evaluation: [VERIFY] wrong.\n\nRevision: 72\n\nSelf-evaluation: [VERIFY] correct."
    )
    assert d2["masked_prefix"] == "72.\n\nSelf-evaluation: [VERIFY] wrong."  # D2 trains only the revision
    assert stats["capped"] == 2 and stats["duplicate"] == 0
    assert (stats["kept_D1"], stats["kept_D2"], stats["kept_D3"]) == (1, 1, 1)
    # without the cap: one trajectory per usable first attempt
    assert [r["type"] for r in assemble_trajectories(fmt, attempts, max_per_type=5)] == ["D1", "D3", "D2", "D2", "D1"]


def test_assemble_keeps_identical_trajectories_once():
    fmt = COMPARE_FORMAT
    same = [pieces("72", True, ["[VERIFY] correct."], []) for _ in range(3)]
    stats = Counter()
    rows = assemble_trajectories(fmt, [*same, pieces("45", False, ["[VERIFY] wrong."], ["72"])], 5, stats)
    assert [r["type"] for r in rows] == ["D3", "D1"] and stats["duplicate"] == 2


def compare_respond(conversation, prefix, n):
    """A scripted "model" for the built-in task: alternates right and wrong first attempts, judges them right
    (agreeing with the label) on even samples and with a broken verdict on odd ones, and revises to the right answer."""
    question = conversation[-1]["content"]
    if question == COMPARE_FORMAT.verify_prompt:
        attempt, problem = conversation[-2]["content"], conversation[-3]["content"]
        right = attempt == _larger(problem)
        verdict = " correct." if right else " wrong."
        return [verdict if i % 2 == 0 else " maybe" for i in range(n)]
    if question == COMPARE_FORMAT.revise_prompt:
        return [_larger(conversation[-5]["content"])] * n
    a, b = _numbers(question)
    return [str(a) if i % 2 == 0 else str(b) for i in range(n)]


def _numbers(problem):
    return [int(x) for x in problem.replace("?", "").replace(",", "").split() if x.isdigit()]


def _larger(problem):
    return str(max(_numbers(problem)))


PROBLEMS = [
    {"problem_id": f"p{i}", "problem": f"Which number is larger, {a} or {b}?", "answer": str(max(a, b))}
    for i, (a, b) in enumerate([(31, 17), (45, 72), (10, 99), (55, 54), (20, 30)])
]
CONFIG = RejectionSamplingConfig(
    num_attempts=4,
    num_evaluations=2,
    num_revisions_wrong=2,
    num_revisions_correct=1,
    max_per_type=1,
    problems_per_batch=2,
)


def test_run_writes_dataset_and_statistics(tmp_path):
    generator = ScriptedGenerator(compare_respond)
    stats = run_rejection_sampling(PROBLEMS, generator, str(tmp_path), COMPARE_TASK, CONFIG)
    rows = [json.loads(line) for line in open(tmp_path / "trajectories.jsonl")]
    # every problem has right and wrong first attempts, agreeing verdicts and right revisions: one row per type
    assert Counter(r["type"] for r in rows) == {"D1": 5, "D2": 5, "D3": 5}
    assert stats["kept_D1"] == stats["kept_D2"] == stats["kept_D3"] == 5 and stats["kept_total"] == 15
    assert stats["attempt_correct"] == stats["attempt_incorrect"] == 10
    assert stats["evaluation_no_verdict"] == 20 and stats["rejected_D1"] == 5
    assert json.load(open(tmp_path / "stats.json")) == stats
    dataset = load_from_disk(str(tmp_path / "dataset"))
    assert len(dataset) == 15
    row = dataset[0]
    assert row["messages"][-1]["role"] == "assistant" and row["messages"][-2]["role"] == "user"
    assert row["messages"][:-1] == COMPARE_TASK.build_prompt(row["problem"])
    assert row["messages"][-1]["content"].startswith(row["masked_prefix"])


class Interrupted(RuntimeError):
    pass


def test_resume_skips_finished_problems_and_drops_partial_rows(tmp_path):
    calls = {"n": 0}

    def crashing(conversation, prefix, n):
        # the third batch crashes at its revision step, after two batches (4 problems) were committed
        if conversation[-1]["content"] == COMPARE_FORMAT.revise_prompt:
            calls["n"] += 1
            if calls["n"] > 2 * 2 * 4:  # revision requests of two batches: 2 problems x 4 attempts
                raise Interrupted
        return compare_respond(conversation, prefix, n)

    with pytest.raises(Interrupted):
        run_rejection_sampling(PROBLEMS, ScriptedGenerator(crashing), str(tmp_path), COMPARE_TASK, CONFIG)
    progress = [json.loads(line)["problem_id"] for line in open(tmp_path / "problems.jsonl")]
    assert progress == ["p0", "p1", "p2", "p3"]
    # simulate a crash between writing rows and the progress line: a stray row of an unfinished problem
    with open(tmp_path / "trajectories.jsonl", "a") as f:
        f.write(json.dumps({"problem_id": "p4", "type": "D3"}) + "\n")

    generator = ScriptedGenerator(compare_respond)
    stats = run_rejection_sampling(PROBLEMS, generator, str(tmp_path), COMPARE_TASK, CONFIG)
    # only p4 was sampled again: 1 prompt, 4 evaluation requests, 4 revision requests
    assert generator.requests == 1 + 4 + 4
    rows = [json.loads(line) for line in open(tmp_path / "trajectories.jsonl")]
    assert Counter(r["problem_id"] for r in rows) == {f"p{i}": 3 for i in range(5)}
    assert stats["problems"] == 5 and stats["kept_total"] == 15
    assert len(load_from_disk(str(tmp_path / "dataset"))) == 15

    # a third run has nothing left to do
    again = ScriptedGenerator(compare_respond)
    assert run_rejection_sampling(PROBLEMS, again, str(tmp_path), COMPARE_TASK, CONFIG) == stats
    assert again.requests == 0
    assert os.path.isfile(tmp_path / "config.json")


def test_duplicate_problem_ids_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unique"):
        run_rejection_sampling(PROBLEMS[:1] * 2, ScriptedGenerator(compare_respond), str(tmp_path), COMPARE_TASK)


def test_balance_types_subsamples_every_type_to_the_rarest():
    types = ["D3", "D1", "D3", "D2", "D3", "D2", "D1", "D3", "D3"]
    kept = balance_types(types, seed=0)
    assert kept == sorted(kept)
    assert Counter(types[i] for i in kept) == {"D1": 2, "D2": 2, "D3": 2}
    assert [i for i in kept if types[i] != "D3"] == [1, 3, 5, 6]  # the rarest types are kept whole
    assert kept == balance_types(types, seed=0)
    assert len({tuple(balance_types(types, seed=s)) for s in range(10)}) > 1  # which D3 rows: a seeded choice
    assert balance_types(["D3", "D3"]) == [0, 1] and balance_types([]) == []
