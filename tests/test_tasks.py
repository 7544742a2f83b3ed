"""Tasks: reading and checking answers, the TRL rewards, the one dataset loader, and the built-in splits."""

import dataclasses
import json

import pytest
from datasets import Dataset

from trl_laser.tasks import (
    COMPARE_FEW_SHOT,
    COMPARE_TASK,
    MATH_TASK,
    DatasetError,
    Task,
    completion_text,
    exact_answer_reward,
    get_task,
    load_problems,
    math_answer_reward,
    register_task,
)
from trl_laser.tasks.answers import INTEGER_ANSWERS, gsm8k_final_answer
from trl_laser.tasks.builtin import SPLITS, generate_problems, split_of
from trl_laser.tasks.task import GeneratedProblem


def test_completion_text_reads_the_last_assistant_message():
    assert completion_text("42") == "42"
    assert completion_text([{"role": "assistant", "content": "42"}]) == "42"
    tool_turns = [
        {"role": "assistant", "content": "calling"},
        {"role": "tool", "content": "7"},
        {"role": "assistant", "content": "\\boxed{7}"},
        {"role": "tool", "content": "ok"},
    ]
    assert completion_text(tool_turns) == "\\boxed{7}"


def test_rewards_read_conversational_and_plain_completions_alike():
    conversational = [[{"role": "assistant", "content": "It is 1,000."}], [{"role": "assistant", "content": "99"}]]
    assert exact_answer_reward(conversational, answer=["1000", "98"]) == [1.0, 0.0]
    assert exact_answer_reward(["It is 1,000."], answer=["1,000"]) == [1.0]
    assert exact_answer_reward(["7"], answer=["seven"]) == [None]  # an unreadable reference is no reward
    texts = ["so \\boxed{\\frac{1}{2}}", "the answer is 0.5", "\\boxed{0.5"]
    assert math_answer_reward(texts, answer=["0.5"] * 3) == [1.0, 0.0, 0.0]  # only a closed \boxed{} answers
    assert math_answer_reward(["\\boxed{1}"], answer=[""]) == [None]
    assert COMPARE_TASK.reward_function is exact_answer_reward and MATH_TASK.reward_function is math_answer_reward


def test_answer_readers():
    assert MATH_TASK.extract_answer("first \\boxed{1} then \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert MATH_TASK.extract_answer("\\boxed{ }") is None and MATH_TASK.extract_answer("no box") is None
    assert MATH_TASK.same_answer("1/2", "0.5") and not MATH_TASK.same_answer("1/2", "2")
    assert COMPARE_TASK.extract_answer("45 or 72? 72.") == "72" and COMPARE_TASK.extract_answer("none") is None
    assert INTEGER_ANSWERS.match("-3", "-3") and INTEGER_ANSWERS.match(None, "3") is False
    assert gsm8k_final_answer("3 + 4 = 7\n#### 1,234") == "1234"


def test_prompt_is_the_task_template():
    assert MATH_TASK.build_prompt("What is {x}?") == [
        {
            "role": "user",
            "content": "What is {x}?\nPlease reason step by step, and put your final answer within \\boxed{}.",
        }
    ]
    assert COMPARE_TASK.build_prompt("Which is larger, 1 or 2?") == [
        *COMPARE_FEW_SHOT,
        {"role": "user", "content": "Which is larger, 1 or 2?"},
    ]


def pair(problem: str) -> tuple[int, int]:
    """The two numbers of "Which is larger, a or b?", in order: a pair asked either way is one problem."""
    a, b = problem[len("Which is larger, ") : -1].split(" or ")
    return tuple(sorted((int(a), int(b))))


def test_builtin_splits_are_disjoint_by_construction():
    splits = {name: load_problems("builtin:compare", name)[0] for name in SPLITS}
    assert [len(splits[name]) for name in SPLITS] == [2000, 500, 500]
    pairs = {name: {pair(p) for p in data["problem"]} for name, data in splits.items()}
    assert pairs["train"].isdisjoint(pairs["test"]) and pairs["train"].isdisjoint(pairs["validation"])
    assert pairs["validation"].isdisjoint(pairs["test"])
    # whatever the seed and size: the split of a problem depends on the problem alone
    other_seed = {pair(p) for p in load_problems("builtin:compare", "test", 300, seed=7)[0]["problem"]}
    assert pairs["train"].isdisjoint(other_seed) and pairs["validation"].isdisjoint(other_seed)
    assert all(split_of("compare", f"{a}|{b}") == "test" for a, b in other_seed)
    for data in splits.values():
        assert len(set(data["problem"])) == len(data) == len(set(data["problem_id"]))  # no repeats
        assert (45, 72) not in {pair(p) for p in data["problem"]}  # the worked example's pair is never asked
    row = splits["test"][0]
    assert row["prompt"] == COMPARE_TASK.build_prompt(row["problem"]) and int(row["answer"]) == max(
        pair(row["problem"])
    )
    # the same request gives the same problems; another seed gives others
    assert load_problems("builtin:compare", "test")[0]["problem"] == splits["test"]["problem"]
    assert load_problems("builtin:compare", "test", 20, seed=1)[0]["problem"] != splits["test"]["problem"][:20]


def test_a_small_problem_space_is_an_error_not_a_hang():
    tiny = Task("pairs", INTEGER_ANSWERS, sample_problem=lambda rng: GeneratedProblem("1 or 2?", "2", "1|2"))
    with pytest.raises(ValueError, match="distinct problems"):
        generate_problems(tiny, split_of("pairs", "1|2"), 2)


def test_registering_a_task_makes_it_a_builtin_dataset():
    def sample(rng):
        a, b = rng.randint(0, 50), rng.randint(0, 50)
        return GeneratedProblem(f"What is {a} + {b}?", str(a + b), f"{min(a, b)}+{max(a, b)}")

    task = register_task(
        Task("addition_test", INTEGER_ANSWERS, template="{problem} Answer with a number.", sample_problem=sample)
    )
    try:
        data, loaded = load_problems("builtin:addition_test", "validation", 10)
        assert loaded is task and get_task("addition_test") is task
        assert data[0]["prompt"] == [{"role": "user", "content": data[0]["problem"] + " Answer with a number."}]
        # another task for the same problems: its prompt and its checker
        data, loaded = load_problems("builtin:addition_test", "validation", 10, task="math")
        assert loaded is MATH_TASK and data[0]["prompt"] == MATH_TASK.build_prompt(data[0]["problem"])
    finally:
        from trl_laser.tasks.task import TASKS

        del TASKS["addition_test"]
    with pytest.raises(DatasetError, match="available"):
        load_problems("builtin:addition_test")


@pytest.mark.parametrize("extension", ["jsonl", "json", "csv", "parquet", "saved"])
def test_every_file_source_gives_the_same_problems(tmp_path, extension):
    rows = [
        {"question": "Ann has 2 apples and buys 3. How many?", "answer": "2 + 3 = 5\n#### 5", "idx": 10},
        {
            "question": "A box holds 999 nails and gets 1 more. How many?",
            "answer": "999 + 1 = 1,000\n#### 1,000",
            "idx": 11,
        },
    ]
    dataset = Dataset.from_list(rows)
    path = tmp_path / f"data.{extension}"
    if extension == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif extension == "json":
        dataset.to_json(str(path), lines=False)
    elif extension == "csv":
        dataset.to_csv(str(path))
    elif extension == "parquet":
        dataset.to_parquet(str(path))
    else:
        dataset.save_to_disk(str(path))
    problems, task = load_problems(str(path), "test")
    assert task is MATH_TASK
    assert list(problems["answer"]) == ["5", "1000"]  # after the last ####, thousands separators dropped
    assert list(problems["problem_id"]) == ["10", "11"]
    assert problems[0]["prompt"] == MATH_TASK.build_prompt(rows[0]["question"])
    assert list(load_problems(str(path), num_problems=1)[0]["problem"]) == [rows[0]["question"]]


def test_splits_of_a_saved_dataset_dict(tmp_path):
    data = {"problem": ["1+1?"], "answer": ["2"]}
    from datasets import DatasetDict

    DatasetDict(
        {"train": Dataset.from_dict(data), "test": Dataset.from_dict({**data, "problem": ["2+2?"]})}
    ).save_to_disk(str(tmp_path / "d"))
    assert list(load_problems(str(tmp_path / "d"), "test")[0]["problem"]) == ["2+2?"]
    with pytest.raises(DatasetError, match=r"splits \['train', 'test'\], not 'validation'"):
        load_problems(str(tmp_path / "d"), "validation")


def test_loader_errors_name_the_fix(tmp_path):
    with pytest.raises(DatasetError, match="available: .*compare"):
        load_problems("builtin:nope")
    with pytest.raises(ValueError, match="Unknown task 'nope'"):
        load_problems("builtin:compare", task="nope")
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"problem": "2+2?"}) + "\n")
    with pytest.raises(DatasetError, match="--answer-column"):
        load_problems(str(path))
    problems, _ = load_problems(str(path), require_answers=False)  # measuring c_ref needs prompts only
    assert list(problems["answer"]) == [None]
    path.write_text(json.dumps({"problem": " ", "answer": "4"}) + "\n")
    with pytest.raises(DatasetError, match="Row 0 .* no text"):
        load_problems(str(path))


def test_a_replaced_task_keeps_its_correction_wording():
    task = dataclasses.replace(COMPARE_TASK, name="compare_copy")
    assert task.correction == COMPARE_TASK.correction and task.correction.evaluation_start == "[VERIFY]"
