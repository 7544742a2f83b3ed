"""`trl-laser evaluate` end to end on a tiny model, data loading, and clear errors before any generation."""

import json
import math
import sys
import types

import pytest
from datasets import Dataset

from trl_laser.cli import main
from trl_laser.commands.evaluate import evaluate_samples
from trl_laser.inference.data import DatasetError, load_problems
from trl_laser.scoring.recipe import SelfRewardConfig
from trl_laser.scoring.scorer import GeneratedSamples, SelfRewardScorer
from trl_laser.tasks import COMPARE_FEW_SHOT
from trl_laser.testing import save_tiny_model


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def laser_model(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("laser_model"))
    save_tiny_model(directory)
    SelfRewardConfig(token="<reserved_0>", token_id=3, beta=0.1, ref_constant=-5.0).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory):
    return save_tiny_model(str(tmp_path_factory.mktemp("plain_model")))


@pytest.fixture
def gsm8k_file(tmp_path):
    path = tmp_path / "gsm8k.jsonl"
    rows = [
        {"question": "Ann has 2 apples and buys 3. How many?", "answer": "2 + 3 = 5\n#### 5"},
        {"question": "A box holds 1,000 nails; 1 is lost. How many are left?", "answer": "#### 999"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


@pytest.fixture
def no_generation(monkeypatch):
    """Fail the test if the command gets as far as loading the model."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded although the input is invalid")

    monkeypatch.setattr(SelfRewardScorer, "from_pretrained", refuse)


def evaluate(model, output, flags: str = "") -> int:
    """Run `trl-laser evaluate --model MODEL --output OUTPUT FLAGS` (flags space-separated; test paths have no spaces)."""
    return main(["evaluate", "--model", str(model), "--output", str(output), *flags.split()])


def test_evaluate_builtin_task_end_to_end(laser_model, tmp_path, capsys):
    report = tmp_path / "report"
    code = evaluate(laser_model, report, "--limit 3 --num-samples 4 --max-new-tokens 6")
    assert code == 0
    results = json.loads((report / "results.json").read_text())
    assert results["self_reward"] == {"token": "<reserved_0>", "token_id": 3, "beta": 0.1, "ref_constant": -5.0}
    assert results["num_problems"] == 3
    assert set(results["curves"]) == {"majority", "weighted", "best_of", "pass"}
    assert set(results["curves"]["majority"]) == {"1", "2", "4"}
    for key in ("accuracy", "finished_rate", "maj@4", "weighted_maj@4", "best_of_4", "verification"):
        assert key in results
    lines = [json.loads(line) for line in (report / "samples.jsonl").read_text().splitlines()]
    assert len(lines) == 12
    assert {line["problem_index"] for line in lines} == {0, 1, 2}
    for line in lines:
        assert (line["score"] is None) == (not line["finished"])  # truncated samples have no score
        assert isinstance(line["correct"], bool)
    for name in results["plots"]:
        assert (report / name).read_bytes()[:4] == b"\x89PNG"
    assert sorted(results["plots"]) == ["aggregation_curves.png", "reliability.png", "score_histogram.png"]
    assert "accuracy" in capsys.readouterr().out


def test_explicit_recipe_for_a_model_without_metadata(plain_model, gsm8k_file, tmp_path):
    report = tmp_path / "report"
    flags = (
        f"--dataset {gsm8k_file} --num-samples 2 --max-new-tokens 4 --token <reserved_1> --beta 0.5 --ref-constant -4"
    )
    code = evaluate(plain_model, report, flags)
    assert code == 0
    results = json.loads((report / "results.json").read_text())
    assert results["self_reward"]["token_id"] == 4
    assert results["self_reward"]["beta"] == 0.5


def test_correction_option_calls_the_correction_pipeline(laser_model, tmp_path, monkeypatch):
    calls = []

    def evaluate_correction(**kwargs):
        calls.append(kwargs)
        return {"accuracy_first": 0.25, "accuracy_final": 0.5}

    fake = types.ModuleType("trl_laser.correction.evaluation")
    fake.evaluate_correction = evaluate_correction
    monkeypatch.setitem(sys.modules, "trl_laser.correction.evaluation", fake)
    report = tmp_path / "report"
    flags = (
        "--limit 2 --num-samples 1 --max-new-tokens 3 --correction laser --max-attempts 3 --threshold 0.7 --beta 0.3"
    )
    code = evaluate(laser_model, report, flags)
    assert code == 0
    (call,) = calls
    assert call["mode"] == "laser" and call["max_attempts"] == 3 and call["threshold"] == 0.7
    assert call["model_path"] == laser_model and call["is_math"] is False and call["max_new_tokens"] == 3
    assert call["beta"] == 0.3 and "token" not in call  # explicit scoring values are passed on, others are not
    expected = load_problems("builtin:compare", limit=2)
    assert call["problems"] == [p.problem for p in expected] and call["answers"] == [p.answer for p in expected]
    assert json.loads((report / "results.json").read_text())["correction"] == {
        "accuracy_first": 0.25,
        "accuracy_final": 0.5,
    }


def test_missing_metadata_is_reported_before_generation(plain_model, tmp_path, capsys, no_generation):
    code = evaluate(plain_model, tmp_path / "r")
    assert code == 2
    error = capsys.readouterr().err
    assert "self_reward_config.json" in error and "--ref-constant" in error


def test_missing_column_is_reported_before_generation(laser_model, tmp_path, capsys, no_generation):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"text": "1+1?", "answer": "2"}) + "\n")
    code = evaluate(laser_model, tmp_path / "r", f"--dataset {path}")
    assert code == 2
    error = capsys.readouterr().err
    assert "problem" in error and "--problem-column" in error and "['text', 'answer']" in error
    code = evaluate(laser_model, tmp_path / "r", f"--dataset {path} --problem-column text --answer-column solution")
    assert code == 2
    assert "--answer-column" in capsys.readouterr().err


@pytest.mark.parametrize("content", [None, "{not json\n"], ids=["missing_file", "bad_json"])
def test_unreadable_data_is_reported_before_generation(laser_model, tmp_path, capsys, no_generation, content):
    path = tmp_path / "data.jsonl"
    if content is not None:
        path.write_text(content)
    code = evaluate(laser_model, tmp_path / "r", f"--dataset {path}")
    assert code == 2
    error = capsys.readouterr().err
    assert ("No such file" in error) if content is None else ("line 1" in error)


def test_load_problems_detects_gsm8k_and_math_columns(gsm8k_file, tmp_path):
    problems = load_problems(gsm8k_file, require_answer=True)
    assert [p.answer for p in problems] == ["5", "999"]
    assert problems[0].check == "math"
    assert "\\boxed{}" in problems[0].prompt[-1]["content"]
    assert problems[0].prompt[-1]["content"].startswith("Ann has 2 apples")

    saved = tmp_path / "math_dataset"
    Dataset.from_dict({"problem": ["What is $1/2 + 0$?"], "answer": ["\\frac{1}{2}"]}).save_to_disk(str(saved))
    (problem,) = load_problems(str(saved), prompt_template="Solve: {problem}")
    assert problem.answer == "\\frac{1}{2}"
    assert problem.prompt == [{"role": "user", "content": "Solve: What is $1/2 + 0$?"}]


def test_builtin_task_keeps_its_few_shot_prompt():
    problems = load_problems("builtin:compare", limit=2)
    assert len(problems) == 2 and problems[0].check == "exact"
    assert problems[0].prompt[:-1] == COMPARE_FEW_SHOT and problems[0].prompt[-1]["content"] == problems[0].problem
    with pytest.raises(DatasetError, match="available: compare"):
        load_problems("builtin:nope")


def test_evaluate_samples_grades_and_votes_with_math_verify(tmp_path):
    (problem,) = load_problems("builtin:compare", limit=1)
    problem.answer, problem.check = "1/2", "math"
    sample = GeneratedSamples(
        prompt=problem.prompt,
        texts=["\\boxed{0.5}", "\\boxed{\\frac{1}{2}}", "\\boxed{3}", "\\boxed{3}", "no idea"],
        token_ids=[[1, 2]] * 5,
        scores=[0.2, None, 0.9, 0.3, 1.5],
        finished=[True, False, True, True, True],
    )
    results = evaluate_samples([problem], [sample], output_dir=str(tmp_path))
    assert results["accuracy"] == pytest.approx(0.4)
    # 0.5 and 1/2 share a group (2 votes) but so does 3 (2 votes), and 3 appears later: majority picks 1/2.
    assert results["maj@5"] == 1.0
    # Weighted: {1/2}: 0.2 (the unscored sample weighs 0), {3}: 0.9 + 0.3 = 1.2; best-of: the 0.9 sample
    # (the 1.5 sample has no answer).
    assert results["weighted_maj@5"] == 0.0
    assert results["best_of_5"] == 0.0
    assert results["verification"]["num_unscored"] == 1
    assert results["verification"]["acc_correct"] == 0.0 and results["verification"]["acc_incorrect"] == pytest.approx(
        1 / 3
    )
    lines = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [line["correct"] for line in lines] == [True, True, False, False, False]
    assert lines[4]["answer"] is None
    assert not math.isnan(results["verification"]["ece"])
