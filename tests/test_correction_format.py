"""Trajectory format, verdict parsing, answer checking and the stage-2 reward on malformed trajectories."""

import dataclasses

import pytest

from trl_laser.correction import Attempt, final_answer, make_trajectory_reward
from trl_laser.tasks import COMPARE_FEW_SHOT, COMPARE_TASK, MATH_TASK
from trl_laser.tasks.answers import last_boxed


MATH_FORMAT = MATH_TASK.correction
COMPARE_FORMAT = COMPARE_TASK.correction


def test_task_prompt_uses_few_shot_and_template():
    task = dataclasses.replace(MATH_TASK, few_shot=({"role": "system", "content": "Be brief."},))
    messages = task.build_prompt("What is {2+3}?")
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert messages[-1]["role"] == "user" and messages[-1]["content"].startswith("What is {2+3}?\n")
    assert "\\boxed{}" in messages[-1]["content"]
    compare = COMPARE_TASK.build_prompt("Which number is larger, 3 or 4?")
    assert compare[:-1] == list(COMPARE_FEW_SHOT)
    assert compare[-1] == {"role": "user", "content": "Which number is larger, 3 or 4?"}


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("It checks out. [VERIFY] correct.", "correct"),
        ("[VERIFY] wrong", "wrong"),  # the final period is optional
        ("Either [VERIFY] correct. or [VERIFY] wrong.", None),  # two verdicts
        ("[VERIFY] correct. [VERIFY] correct.", None),
        ("I am not sure.", None),
        ("[verify] correct.", None),  # matching is exact
    ],
)
def test_parse_verdict_needs_exactly_one(text, verdict):
    assert MATH_FORMAT.parse_verdict(text) == verdict


def test_normalize_evaluation_cuts_after_first_verdict_and_completes_it():
    assert MATH_FORMAT.normalize_evaluation("Looks fine [VERIFY] correct and more") == "Looks fine [VERIFY] correct."
    assert MATH_FORMAT.normalize_evaluation(" no verdict ") == "no verdict"


@pytest.mark.parametrize(
    "text, kept",
    [
        ("So the answer is \\boxed{[VERIFY] wrong.}", "So the answer is [VERIFY] wrong."),
        ("\\boxed{\\text{[VERIFY] correct.}}", "[VERIFY] correct."),
        ("Checked. $\\boxed{ \\text{ [VERIFY] correct}}$", "Checked. [VERIFY] correct."),
        ("\\boxed{5} is right. [VERIFY] correct.", "\\boxed{5} is right. [VERIFY] correct."),
    ],
)
def test_boxed_verdicts_are_unwrapped(text, kept):
    # a verdict in a box, cut after the verdict, would leave an unclosed \boxed{ in the training target
    assert MATH_FORMAT.normalize_evaluation(text) == kept
    assert MATH_FORMAT.parse_verdict(text) is not None


def test_assemble_then_split_round_trips():
    fmt = MATH_FORMAT
    text = fmt.assemble(
        ["So \\boxed{4}.", "Fixed: \\boxed{5}."],
        ["Check: 2+2 is not the question. [VERIFY] wrong.", "[VERIFY] correct."],
    )
    assert text == (
        "So \\boxed{4}.\n\nSelf-evaluation: Check: 2+2 is not the question. [VERIFY] wrong.\n\nRevision: Fixed: "
        "\\boxed{5}.\n\nSelf-evaluation: [VERIFY] correct."
    )
    assert fmt.split(text) == [Attempt("So \\boxed{4}.", "wrong"), Attempt("Fixed: \\boxed{5}.", "correct")]
    assert fmt.split("\\boxed{4}") == [Attempt("\\boxed{4}", None)]
    with pytest.raises(ValueError):
        fmt.assemble(["a"], ["x", "y"])


def test_split_stops_at_correct_verdict_and_flags_missing_revision():
    fmt = COMPARE_FORMAT
    assert fmt.split("72\n\nSelf-evaluation: [VERIFY] correct. 45 45 45") == [Attempt("72", "correct")]
    assert fmt.split("72\n\nSelf-evaluation: [VERIFY] wrong.") == [Attempt("72", "wrong"), Attempt("", None)]
    # a verdict written without the evaluation prefix still ends the attempt
    assert fmt.split("17 [VERIFY] wrong. 31") == [Attempt("17", "wrong"), Attempt("31", None)]


def test_last_boxed_handles_nesting_and_unclosed():
    assert last_boxed("\\boxed{1} then \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{\\frac{1}{2") is None
    assert last_boxed("no answer") is None


def test_answer_checking():
    assert MATH_TASK.is_correct("so \\boxed{\\frac{1}{2}}", "0.5")
    assert not MATH_TASK.is_correct("so \\boxed{3}", "0.5")
    assert COMPARE_TASK.is_correct("The answer is 72", "72")
    assert not COMPARE_TASK.is_correct("72 or 45", "72")


def test_final_answer_reads_last_attempt_not_the_evaluation():
    fmt = COMPARE_FORMAT
    text = fmt.assemble(["45", "72"], ["45 is less than 72. [VERIFY] wrong.", fmt.correct_verdict])
    assert final_answer(text, COMPARE_TASK) == "72"
    # the evaluation mentions 45 last, but the answer of the only attempt is 72
    assert final_answer("72\n\nSelf-evaluation: 72 beats 45. [VERIFY] correct.", COMPARE_TASK) == "72"


REWARD = make_trajectory_reward(MATH_TASK, eos_token_ids=[2])


@pytest.mark.parametrize(
    ("trajectory", "expected"),
    [
        ("\\boxed{5}", 1.0),  # no verdict at all: the last answer still counts
        (
            "\\boxed{4}\n\nSelf-evaluation: [VERIFY] wrong.\n\nRevision: \\boxed{5}\n\nSelf-evaluation: [VERIFY] correct.",
            1.0,
        ),
        ("\\boxed{5}\n\nSelf-evaluation: [VERIFY] wrong.\n\nRevision: \\boxed{4}", 0.0),  # last answer wrong
        ("", 0.0),
        ("I think it is five.", 0.0),  # no answer
        ("[VERIFY] correct.", 0.0),  # verdict without answer
        ("\\boxed{5}\n\nSelf-evaluation: [VERIFY] wrong.", 0.0),  # announced a revision, never wrote it
        ("\\boxed{5}\n\nSelf-evaluation: [VERIFY] wrong.\n\nRevision: let me", 0.0),  # revision without answer
        ("\\boxed{5", 0.0),  # unclosed box
        ("\\boxed{}", 0.0),
        ("\\boxed{\\frac{", 0.0),
    ],
)
def test_reward_on_last_answer_and_malformed(trajectory, expected):
    assert REWARD([trajectory], answer=["5"]) == [expected]


def test_reward_zero_for_truncated_completion_and_conversational_input():
    looping = "\\boxed{5}" + "\n\nSelf-evaluation: [VERIFY] wrong.\n\nRevision: \\boxed{5}" * 20
    # cut by the length limit (no EOS) → 0; the same text ended by EOS is paid for its (right) last answer
    assert REWARD([looping, looping], answer=["5", "5"], completion_ids=[[7, 8, 9], [7, 8, 2]]) == [0.0, 1.0]
    fine = "\\boxed{5}\n\nSelf-evaluation: [VERIFY] correct."
    assert REWARD([fine], answer=["5"], completion_ids=[[7, 2]]) == [1.0]
    assert REWARD([[{"role": "assistant", "content": fine}]], answer=["5"]) == [1.0]
    assert REWARD([fine], answer=["not a number {"], completion_ids=[[]]) == [0.0]
    assert REWARD.__name__ == "last_answer_reward"
