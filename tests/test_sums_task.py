"""The `sums` task (written work before the answer) and the SFT warm-start on its worked solutions."""

import json
import os
import random

import pytest
import torch
from transformers import AutoModelForCausalLM

from trl_laser.tasks import SUMS_FEW_SHOT, SUMS_TASK, get_task, load_problems
from trl_laser.tasks.builtin import SPLITS, generate_problems, split_of
from trl_laser.tasks.sums import sample_sums_problem, worked_solution
from trl_laser.training.warm_start import (
    WARM_START_FILE,
    WarmStartArguments,
    sft_warm_start,
    tasks_with_solutions,
    warm_start_dataset,
)


def terms(problem: str) -> tuple[int, ...]:
    """The numbers of "What is a + b + c?", sorted: the same numbers in another order are one problem."""
    return tuple(sorted(int(n) for n in problem[len("What is ") : -1].split(" + ")))


def test_worked_solution_adds_one_term_at_a_time():
    assert worked_solution([23, 45, 17]) == SUMS_FEW_SHOT[-1]["content"]
    assert worked_solution([5, 7]) == "5 + 7 = 12. The answer is 12."
    assert SUMS_TASK.check("23 + 45 = 68. 68 + 17 = 84. The answer is 84.", "85") is False


def test_sums_is_a_builtin_task_with_integer_answers():
    assert get_task("sums") is SUMS_TASK
    assert SUMS_TASK.build_prompt("What is 1 + 2 + 3?")[:-1] == SUMS_FEW_SHOT
    assert SUMS_TASK.extract_answer("10 + 20 = 30. 30 + 5 = 35. The answer is 35.") == "35"


def test_splits_are_disjoint_including_permutations():
    splits = {name: load_problems("builtin:sums", name, 300)[0] for name in SPLITS}
    numbers = {name: {terms(p) for p in data["problem"]} for name, data in splits.items()}
    assert numbers["train"].isdisjoint(numbers["validation"]) and numbers["train"].isdisjoint(numbers["test"])
    assert numbers["validation"].isdisjoint(numbers["test"])
    # a permutation of a problem is the same problem: same canonical form, same split
    rng = random.Random(3)
    for _ in range(200):
        problem = sample_sums_problem(rng)
        shuffled = list(terms(problem.problem))
        rng.shuffle(shuffled)
        assert problem.canonical == "+".join(map(str, sorted(shuffled)))
    assert all(split_of("sums", "+".join(map(str, key))) == name for name in SPLITS for key in numbers[name])


def test_every_solution_is_right_and_the_worked_example_is_never_asked():
    for split in SPLITS:
        rows = generate_problems(SUMS_TASK, split, 500, seed=1)
        for row in rows:
            assert SUMS_TASK.check(row["solution"], row["answer"]) is True
            assert int(row["answer"]) == sum(terms(row["problem"]))
            assert row["solution"].startswith(row["problem"][len("What is ") : -1].split(" + ")[0] + " + ")
        assert (17, 23, 45) not in {terms(row["problem"]) for row in rows}
    # even when the generator draws the example's numbers, in any order
    drawn = iter([3, 45, 17, 23, 3, 17, 23, 45, 3, 10, 11, 12])
    rng = random.Random()
    rng.randint = lambda low, high: next(drawn)
    assert terms(sample_sums_problem(rng).problem) == (10, 11, 12)


def test_rows_carry_solutions_only_for_tasks_that_write_them():
    sums, _ = load_problems("builtin:sums", "validation", 5)
    assert sums.column_names == ["problem_id", "problem", "answer", "solution", "prompt"]
    assert sums[0]["prompt"] == SUMS_TASK.build_prompt(sums[0]["problem"])
    compare, _ = load_problems("builtin:compare", "validation", 5)
    assert compare.column_names == ["problem_id", "problem", "answer", "prompt"]
    assert tasks_with_solutions() == ["builtin:sums"]


def test_warm_start_dataset_is_conversational_prompt_completion_from_the_train_split():
    data = warm_start_dataset("builtin:sums", 8, seed=2)
    train, _ = load_problems("builtin:sums", "train", 8, seed=2)
    assert data.column_names == ["prompt", "completion"]
    assert data["prompt"] == train["prompt"]
    assert data["completion"] == [[{"role": "assistant", "content": s}] for s in train["solution"]]


@pytest.mark.parametrize("dataset_name", ["builtin:compare", "data.jsonl", "builtin:nope"])
def test_warm_start_refuses_a_dataset_without_worked_solutions(tmp_path, dataset_name):
    with pytest.raises(ValueError, match="builtin:sums, or turn the warm-start off"):
        sft_warm_start("unused", dataset_name, str(tmp_path / "out"), 4)
    assert not os.path.exists(tmp_path / "out")


def test_warm_start_trains_saves_and_is_reused(tmp_path, tiny_model_dir, one_thread):
    output_dir = str(tmp_path / "warm")
    settings = dict(learning_rate=1e-2, per_device_train_batch_size=8, logging_steps=1)
    assert sft_warm_start(tiny_model_dir, "builtin:sums", output_dir, 16, **settings) == output_dir
    with open(os.path.join(output_dir, WARM_START_FILE)) as f:
        record = json.load(f)
    assert record["settings"]["num_examples"] == 16 and record["settings"]["sft"]["learning_rate"] == 1e-2

    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    after = AutoModelForCausalLM.from_pretrained(output_dir)
    changed = [
        name
        for (name, old), (_, new) in zip(before.named_parameters(), after.named_parameters(), strict=True)
        if not torch.equal(old, new)
    ]
    assert len(changed) == len(list(before.parameters()))
    assert os.path.isfile(os.path.join(output_dir, "tokenizer.json"))

    # A second call with the same settings returns at once: nothing is written again.
    stamps = {name: os.path.getmtime(os.path.join(output_dir, name)) for name in os.listdir(output_dir)}
    assert sft_warm_start(tiny_model_dir, "builtin:sums", output_dir, 16, **settings) == output_dir
    assert {name: os.path.getmtime(os.path.join(output_dir, name)) for name in os.listdir(output_dir)} == stamps
    # ... and other settings are not passed off as this warm-start
    with pytest.raises(ValueError, match="other settings"):
        sft_warm_start(tiny_model_dir, "builtin:sums", output_dir, 32, **settings)


def test_warm_start_arguments(tmp_path, tiny_model_dir):
    assert WarmStartArguments().run(tiny_model_dir, "builtin:sums", str(tmp_path / "w")) == tiny_model_dir
    assert not os.path.exists(tmp_path / "w")  # 0 examples: no warm start
    args = WarmStartArguments(sft_examples=64, sft_epochs=2, sft_learning_rate=1e-4, sft_batch_size=8)
    assert args.sft_overrides() == dict(num_train_epochs=2, learning_rate=1e-4, per_device_train_batch_size=8)
    with pytest.raises(ValueError, match="sft_examples"):
        WarmStartArguments(sft_examples=-1)
