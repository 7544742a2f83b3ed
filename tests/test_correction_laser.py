"""The LaSeR variant of self-correction: the loop reads the score where LaSeR training puts it (the end of each
attempt, in the attempt's own context), and training regresses it onto that attempt's own correctness."""

import math

import pytest
import torch
from datasets import Dataset

from trl_laser import SelfRewardScorer
from trl_laser.core.readout import eos_positions
from trl_laser.core.self_reward import self_reward_score
from trl_laser.correction import (
    attempt_prefix,
    attempt_prompt_text,
    attempt_rows,
    make_attempt_reward,
    self_correct,
    trajectory_attempts,
)
from trl_laser.correction.rejection_sampling import trajectory_row
from trl_laser.tasks import COMPARE_TASK
from trl_laser.testing import EOS_ID, FakeGenerator


TASK = COMPARE_TASK
FMT = TASK.correction


def test_attempt_prefix_is_the_loops_revision_context():
    assert attempt_prefix(FMT, []) == ""
    assert attempt_prefix(FMT, ["45"]) == "45\n\nSelf-evaluation: [VERIFY] wrong.\n\nRevision:"
    assert attempt_prefix(FMT, ["45", "50"]) == (
        "45\n\nSelf-evaluation: [VERIFY] wrong.\n\nRevision: 50\n\nSelf-evaluation: [VERIFY] wrong.\n\nRevision:"
    )


def test_attempt_reward_is_the_attempts_own_correctness():
    reward = make_attempt_reward(TASK, eos_token_ids=[EOS_ID, 0])
    completions = [
        "72",  # right
        "45",  # wrong
        "72\n\nSelf-evaluation: [VERIFY] correct.",  # right; its own verdict is not part of the attempt
        "45\n\nSelf-evaluation: [VERIFY] wrong.\n\nRevision: 72",  # went on into a revision: not one attempt
        "72",  # right, but cut by the length limit (no EOS)
        "72",  # right, ended by the generation config's other EOS id
        "no idea",  # no answer
    ]
    ids = [[7, EOS_ID], [7, EOS_ID], [7, EOS_ID], [7, EOS_ID], [7, 8], [7, 0], [7, EOS_ID]]
    assert reward(completions, answer=["72"] * 7, completion_ids=ids) == [1, 0, 1, 0, 0, 1, 0]
    assert reward.__name__ == "attempt_reward"


def test_attempt_rows_first_attempts_and_revisions_of_own_attempts(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    problems = [{"problem": "Which is larger, 45 or 72?", "answer": "72"}, {"problem": "Which is larger, 9 or 3?",
                                                                          "answer": "9"}]  # fmt: skip
    script = {p["problem"]: texts for p, texts in zip(problems, [["45", "I do not know"], ["9 ..."]], strict=True)}
    gen = FakeGenerator(lambda conversation, prefix, n: script[conversation[-1]["content"]][:n])
    rows = attempt_rows(problems, TASK, tokenizer, gen, revisions_per_problem=2)
    assert [r["kind"] for r in rows] == ["first", "first", "revision"]  # no answer / cut: no revision row
    conversation = TASK.build_prompt(problems[0]["problem"])
    assert rows[0]["prompt"] == attempt_prompt_text(tokenizer, conversation)
    assert rows[2]["prompt"] == attempt_prompt_text(tokenizer, conversation, attempt_prefix(FMT, ["45"]))
    assert rows[2]["prompt"].endswith("<|im_start|>assistant\n45\n\nSelf-evaluation: [VERIFY] wrong.\n\nRevision:")
    assert rows[2]["answer"] == "72"


def test_trajectory_attempts_are_the_correct_attempts_in_the_loops_context(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    conversation = TASK.build_prompt("Which is larger, 45 or 72?")

    def row(kind, attempt, evaluation, revision):
        trajectory = trajectory_row(FMT, kind, attempt, evaluation, revision)["trajectory"]
        return {"type": kind, "messages": [*conversation, {"role": "assistant", "content": trajectory}]}

    first = attempt_prompt_text(tokenizer, conversation)
    d1 = trajectory_attempts(row("D1", "45", "[VERIFY] wrong.", "72"), tokenizer, FMT)
    assert d1 == [{"prompt": attempt_prompt_text(tokenizer, conversation, attempt_prefix(FMT, ["45"])),
                   "completion": " 72"}]  # fmt: skip
    assert d1[0]["prompt"].endswith("assistant\n45\n\nSelf-evaluation: [VERIFY] wrong.\n\nRevision:")
    d2 = trajectory_attempts(row("D2", "72", FMT.wrong_verdict, "72 is larger"), tokenizer, FMT)
    assert d2 == [{"prompt": first, "completion": "72"},
                  {"prompt": attempt_prompt_text(tokenizer, conversation, attempt_prefix(FMT, ["72"])),
                   "completion": " 72 is larger"}]  # fmt: skip
    d3 = trajectory_attempts(row("D3", "72", "[VERIFY] correct.", None), tokenizer, FMT)
    assert d3 == [{"prompt": first, "completion": "72"}]  # the verdict is not a target
    # What the loop generates after the prompt is what the example trains: the same text.
    assert d1[0]["prompt"] + d1[0]["completion"] == first + FMT.assemble(["45", "72"], [FMT.wrong_verdict])


@pytest.mark.usefixtures("one_thread")
def test_loop_reads_the_score_where_laser_training_puts_it(laser_model_dir, make_trainer):
    scorer = SelfRewardScorer.from_pretrained(laser_model_dir)
    # the random tiny model ends most completions quickly with this bias
    scorer.model.generation_config.sequence_bias = [[[EOS_ID], 6.0]]
    reads = []
    generate = scorer.generate

    def recording_generate(prompts, *args, assistant_prefixes=None, **kwargs):
        outputs = generate(prompts, *args, assistant_prefixes=assistant_prefixes, **kwargs)
        for prompt, prefix, samples in zip(prompts, assistant_prefixes, outputs, strict=True):
            reads.append((scorer.encode_prompt(prompt, prefix), samples.completions[0]))
        return outputs

    scorer.generate = recording_generate
    problem = "Which is larger, 45 or 72?"
    # threshold +inf: every judged attempt is "wrong", so a revision turn is generated too
    (result,) = self_correct([problem], scorer, TASK, mode="laser", max_attempts=2, threshold=math.inf,
                             max_new_tokens=12)  # fmt: skip
    assert result.num_attempts == 2 and len(reads) == 2, "the tiny model should end its attempts with EOS here"
    first, revision = reads
    assert first[1].finished and revision[1].finished and first[1].score == result.scores[0]

    # The rows LaSeR training samples from, for this problem: its first attempt, and the revision of that attempt.
    conversation = TASK.build_prompt(problem)
    row_prompts = [
        attempt_prompt_text(scorer.tokenizer, conversation),
        attempt_prompt_text(scorer.tokenizer, conversation, attempt_prefix(FMT, result.attempts[:1])),
    ]
    trainer = make_trainer(model=laser_model_dir, train_dataset=Dataset.from_dict({"prompt": row_prompts}))
    trained_prompt_ids = trainer._tokenize_prompts(row_prompts)[0]
    for (loop_prompt_ids, completion), trained_ids in zip(reads, trained_prompt_ids, strict=True):
        # same context tokens before the attempt ...
        assert list(trained_ids) == loop_prompt_ids
        # ... and the trainer's score position (the completion's EOS) is the loop's read position: the score the
        # loop took from the generation cache is log π(z_c) at the EOS of trained prompt + completion
        ids = torch.tensor([completion.token_ids])
        position, finished = eos_positions(ids, torch.ones_like(ids), trainer.eos_token_ids)
        assert bool(finished) and int(position) == len(completion.token_ids) - 1
        (log_prob,) = scorer.self_reward_log_probs([list(trained_ids) + completion.token_ids])
        expected = float(self_reward_score(torch.tensor(log_prob), scorer.config.beta, scorer.config.ref_constant))
        assert completion.score == pytest.approx(expected, abs=1e-4)
