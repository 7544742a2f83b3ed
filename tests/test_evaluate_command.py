"""`trl-laser evaluate` end to end on a tiny model, grading and voting, and clear errors before any generation."""

import json
import math

import pytest

from trl_laser.cli import main
from trl_laser.evaluation.evaluate import evaluate_samples
from trl_laser.evaluation.free_verifiers import FREE_VERIFIERS
from trl_laser.evaluation.metrics import auroc
from trl_laser.scoring.scorer import Completion, GeneratedSamples
from trl_laser.tasks import MATH_TASK, load_problems


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def gsm8k_file(tmp_path):
    path = tmp_path / "gsm8k.jsonl"
    rows = [
        {"question": "Ann has 2 apples and buys 3. How many?", "answer": "2 + 3 = 5\n#### 5"},
        {"question": "A box holds 1,000 nails; 1 is lost. How many are left?", "answer": "#### 999"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


def evaluate(model, output, flags: str = "") -> int:
    """Run `trl-laser evaluate` on MODEL into OUTPUT with FLAGS (space-separated; test paths have no spaces)."""
    return main(["evaluate", "--model_name_or_path", str(model), "--output-dir", str(output), *flags.split()])


def test_evaluate_builtin_task_end_to_end(laser_model_dir, tmp_path, capsys):
    report = tmp_path / "report"
    code = evaluate(laser_model_dir, report, "--num-problems 3 --num_samples 4 --max-new-tokens 6")
    assert code == 0
    results = json.loads((report / "results.json").read_text())
    assert results["self_reward"] == {"token": "<reserved_0>", "token_id": 3, "beta": 0.1, "ref_constant": -5.0}
    assert results["num_problems"] == 3 and results["task"] == "compare"
    assert set(results["curves"]) == {"majority", "weighted", "best_of", "pass"}
    assert set(results["curves"]["majority"]) == {"1", "2", "4"}
    for key in ("accuracy", "finished_rate", "maj@4", "weighted_maj@4", "best_of_4", "verification"):
        assert key in results
    lines = [json.loads(line) for line in (report / "samples.jsonl").read_text().splitlines()]
    assert len(lines) == 12
    assert {line["problem_index"] for line in lines} == {0, 1, 2}
    # the default split of `evaluate` is the built-in task's test split
    test_problems = load_problems("builtin:compare", "test", 3)[0]["problem"]
    assert [lines[4 * i]["problem"] for i in range(3)] == test_problems
    for line in lines:
        assert (line["score"] is None) == (not line["finished"])  # truncated samples have no score
        assert isinstance(line["correct"], bool)
    for name in results["plots"]:
        assert (report / name).read_bytes()[:4] == b"\x89PNG"
    assert sorted(results["plots"]) == [
        "aggregation_curves.png", "reliability.png", "roc_curves.png", "score_histogram.png",
    ]  # fmt: skip
    # Every free verifier is on every sample line, and the report's AUROC is measured on the finished samples.
    assert list(results["free_verifiers"]) == list(FREE_VERIFIERS)
    for line in lines:
        assert set(line["verifiers"]) == set(FREE_VERIFIERS)
        assert line["verifiers"]["length"] == -line["num_tokens"]
    finished = [line for line in lines if line["finished"]]
    for name, entry in results["free_verifiers"].items():
        expected = auroc([line["verifiers"][name] for line in finished], [line["correct"] for line in finished])
        assert entry["auroc"] == (None if math.isnan(expected) else pytest.approx(expected))
        assert entry["num_samples"] == len(finished)
        assert {"weighted_maj@4", "top10_weighted_maj@4"} <= entry.keys()
    out = capsys.readouterr().out
    assert "accuracy" in out and "free verifiers" in out and "self_certainty" in out


def test_explicit_recipe_for_a_model_without_metadata(tiny_model_dir, gsm8k_file, tmp_path):
    report = tmp_path / "report"
    flags = (
        f"--dataset_name {gsm8k_file} --num-samples 2 --max-new-tokens 4 --self-reward-token <reserved_1> "
        "--self_reward_beta 0.5 --self-reward-ref-constant -4"
    )
    code = evaluate(tiny_model_dir, report, flags)
    assert code == 0
    results = json.loads((report / "results.json").read_text())
    assert results["self_reward"] == {"token": "<reserved_1>", "token_id": 4, "beta": 0.5, "ref_constant": -4.0}
    assert results["task"] == "math"


def test_options_from_a_yaml_file(laser_model_dir, tmp_path):
    config = tmp_path / "evaluate.yaml"
    config.write_text(f"model_name_or_path: {laser_model_dir}\nnum_problems: 2\nnum_samples: 2\nmax_new_tokens: 3\n")
    report = tmp_path / "report"
    assert main(["evaluate", "--config", str(config), "--output_dir", str(report), "--num_samples", "3"]) == 0
    results = json.loads((report / "results.json").read_text())
    assert results["num_problems"] == 2 and results["generation"]["num_samples"] == 3  # the command line wins


def test_correction_reuses_the_loaded_model(laser_model_dir, tmp_path, loads):
    report = tmp_path / "report"
    flags = "--num_problems 2 --num-samples 1 --max-new-tokens 3 --correction laser --max-attempts 3"
    assert evaluate(laser_model_dir, report, flags + " --correction-threshold 0.7") == 0
    assert loads["count"] == 1
    correction = json.loads((report / "results.json").read_text())["correction"]
    assert correction["mode"] == "laser" and correction["max_attempts"] == 3 and correction["threshold"] == 0.7
    assert correction["num_problems"] == 2 and 1 <= correction["avg_attempts"] <= 3
    records = [json.loads(line) for line in (report / "records.jsonl").read_text().splitlines()]
    # every judged attempt carries the model's own score, and the loop revised exactly when it was at most 0.7
    for record in records:
        assert len(record["scores"]) == len(record["verdicts"])
        for score, verdict in zip(record["scores"], record["verdicts"], strict=True):
            assert verdict == (None if score is None else "correct" if score > 0.7 else "wrong")


def test_missing_metadata_is_reported_before_generation(tiny_model_dir, tmp_path, capsys, loads):
    loads["refuse"] = True
    assert evaluate(tiny_model_dir, tmp_path / "r") == 2
    error = capsys.readouterr().err
    assert "self_reward_config.json" in error and "--self-reward-ref-constant" in error


def test_missing_column_is_reported_before_generation(laser_model_dir, tmp_path, capsys, loads):
    loads["refuse"] = True
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"text": "1+1?", "answer": "2"}) + "\n")
    assert evaluate(laser_model_dir, tmp_path / "r", f"--dataset_name {path}") == 2
    error = capsys.readouterr().err
    assert "problem" in error and "--problem-column" in error and "['text', 'answer']" in error
    flags = f"--dataset_name {path} --problem-column text --answer_column solution"
    assert evaluate(laser_model_dir, tmp_path / "r", flags) == 2
    assert "--answer-column" in capsys.readouterr().err


@pytest.mark.parametrize("content", [None, "{not json\n"], ids=["missing_file", "bad_json"])
def test_unreadable_data_is_reported_before_generation(laser_model_dir, tmp_path, capsys, loads, content):
    loads["refuse"] = True
    path = tmp_path / "data.jsonl"
    if content is not None:
        path.write_text(content)
    assert evaluate(laser_model_dir, tmp_path / "r", f"--dataset_name {path}") == 2
    error = capsys.readouterr().err
    assert ("No such file" in error) if content is None else ("Cannot read" in error and "JSON" in error)


def test_invalid_options_are_reported_before_generation(laser_model_dir, tmp_path, capsys, loads):
    loads["refuse"] = True
    assert evaluate(laser_model_dir, tmp_path / "r", "--num_samples 0") == 2
    assert "num_samples must be at least 1" in capsys.readouterr().err
    assert evaluate(laser_model_dir, tmp_path / "r", "--dataset_test_split nope") == 2
    assert "'nope'" in capsys.readouterr().err


def test_evaluate_samples_grades_and_votes_with_math_verify(tmp_path):
    problem = {"problem": "What is 1/2?", "answer": "1/2"}
    texts = ["\\boxed{0.5}", "\\boxed{\\frac{1}{2}}", "\\boxed{3}", "\\boxed{3}", "no idea"]
    scores = [0.2, None, 0.9, 0.3, 1.5]
    completions = [
        Completion(text, [1, 2], finished=score is not None, score=score)
        for text, score in zip(texts, scores, strict=True)
    ]
    results = evaluate_samples([problem], [GeneratedSamples([], completions)], MATH_TASK, output_dir=str(tmp_path))
    assert results["accuracy"] == pytest.approx(0.4)
    # 0.5 and 1/2 share a group (2 votes) but so does 3 (2 votes), and 3 appears later: majority picks 1/2.
    assert results["maj@5"] == 1.0
    # Weighted: {1/2}: 0.2 (the unscored sample weighs 0), {3}: 0.9 + 0.3 = 1.2; best-of: the 0.9 sample
    # (the 1.5 sample has no answer).
    assert results["weighted_maj@5"] == 0.0
    assert results["best_of_5"] == 0.0
    assert results["pass@5"] == 1.0
    assert results["verification"]["num_unscored"] == 1
    assert results["verification"]["acc_correct"] == 0.0 and results["verification"]["acc_incorrect"] == pytest.approx(
        1 / 3
    )
    lines = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [line["correct"] for line in lines] == [True, True, False, False, False]
    assert lines[4]["answer"] is None and lines[0]["answer"] == "0.5"
    assert not math.isnan(results["verification"]["ece"])


def test_unreadable_reference_leaves_the_problem_out():
    completions = [Completion("\\boxed{1}", [1], finished=True, score=0.5)]
    problems = [{"problem": "?", "answer": ""}, {"problem": "1?", "answer": "1"}]  # an empty reference
    samples = [GeneratedSamples([], completions), GeneratedSamples([], completions)]
    results = evaluate_samples(problems, samples, MATH_TASK)
    assert results["num_ungradable"] == 1 and results["num_problems"] == 2 and results["accuracy"] == 1.0


def test_a_report_directory_that_is_a_file_is_reported_before_generation(laser_model_dir, tmp_path, capsys, loads):
    loads["refuse"] = True
    report = tmp_path / "report"
    report.write_text("")
    assert evaluate(laser_model_dir, report) == 2
    assert "is a file; pass a directory" in capsys.readouterr().err
