"""The whole recipe on a tiny offline model: stage-1 data (CLI), SFT (TRL SFTTrainer), RL (TRL GRPOTrainer) and both
inference loops, a couple of steps each."""

import importlib.util
import json
import os
from pathlib import Path

import pytest
from datasets import load_from_disk
from transformers import AutoTokenizer
from trl import GRPOConfig, ModelConfig, SFTConfig

from trl_laser import SelfRewardScorer
from trl_laser.cli import main as cli_main
from trl_laser.correction import RejectionSamplingConfig, evaluate_correction, run_rejection_sampling
from trl_laser.tasks import COMPARE_TASK, DatasetArguments, load_problems
from trl_laser.testing import FakeGenerator


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
COMMON = {"bf16": False, "use_cpu": True, "report_to": "none", "gradient_checkpointing": False, "save_strategy": "no"}


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _numbers(text):
    return [int(x) for x in text.strip("?").replace(",", "").split() if x.isdigit()]


def right_after_wrong(conversation, prefix, num_samples):
    """Scripted stage-1 "model" for the built-in task: first attempts alternate wrong/right, evaluations agree with
    the truth, revisions are right; so every problem yields D1, D2 and D3 rows."""
    if _numbers(conversation[-1]["content"]):
        numbers = _numbers(conversation[-1]["content"])
        return [str(min(numbers)) if i % 2 == 0 else str(max(numbers)) for i in range(num_samples)]
    if conversation[-1]["content"] == COMPARE_TASK.correction.verify_prompt:
        right = int(conversation[-2]["content"]) == max(_numbers(conversation[-3]["content"]))
        return [" correct." if right else " wrong."] * num_samples
    return [str(max(_numbers(conversation[-5]["content"])))] * num_samples


def test_cli_correction_data_runs_the_real_generator(tiny_model_dir, tmp_path):
    out = tmp_path / "cli"
    argv = ["correction-data", "--model_name_or_path", tiny_model_dir, "--dataset-name", "builtin:compare",
            "--num_problems", "2", "--num-attempts", "2", "--num_evaluations", "1", "--num-revisions-wrong", "1",
            "--num_revisions_correct", "1", "--max_new_tokens", "4", "--evaluation-max-new-tokens", "3",
            "--output-dir", str(out)]  # fmt: skip
    assert cli_main(argv) == 0
    stats = json.load(open(out / "stats.json"))
    assert stats["problems"] == 2
    # a random model: every first attempt is labelled or cut, and every one is accounted for
    counted = ("attempt_correct", "attempt_incorrect", "attempt_truncated", "attempt_no_answer")
    assert sum(stats.get(key, 0) for key in counted) == 4
    assert len(open(out / "problems.jsonl").readlines()) == 2
    # rerunning is a no-op (resume)
    assert cli_main(argv) == 0
    assert len(open(out / "problems.jsonl").readlines()) == 2


def test_scorer_generates_for_the_loops_in_batches(tiny_model_dir):
    generator = SelfRewardScorer.from_pretrained(tiny_model_dir)  # no recipe: plain generation
    prompts = load_problems("builtin:compare", "train", 3)[0]["prompt"]
    outputs = generator.generate(
        prompts, num_samples=2, max_new_tokens=5, batch_size=4, seed=0, assistant_prefixes=["1", "", "2"], stop=["a"]
    )
    assert [len(o.completions) for o in outputs] == [2, 2, 2]
    for completion in (c for o in outputs for c in o.completions):
        assert 1 <= completion.num_tokens <= 5 and completion.score is None
        if completion.stop is not None:
            assert completion.text.endswith("a") and completion.text.count("a") == 1 and not completion.finished
        elif not completion.finished:
            assert completion.num_tokens == 5


def test_three_stages_and_both_loops(tiny_model_dir, tmp_path):
    # Stage 1: rejection sampling (scripted generations, real selection, assembly and dataset writing)
    problems, task = load_problems("builtin:compare", "train", 4)
    data = tmp_path / "data"
    config = RejectionSamplingConfig(num_attempts=4, num_evaluations=1, num_revisions_wrong=1, num_revisions_correct=1)
    stats = run_rejection_sampling(problems, FakeGenerator(right_after_wrong), str(data), task, config)
    assert stats["kept_D1"] == stats["kept_D2"] == stats["kept_D3"] == 4

    # Stage 1 training: TRL SFTTrainer through the example script, with the method's per-type loss masking
    sft = load_example("sft_self_correction")
    dataset = load_from_disk(str(data / "dataset"))
    split = sft.prepare_dataset(dataset, AutoTokenizer.from_pretrained(tiny_model_dir), "paper")
    d2 = split[[r["type"] for r in dataset].index("D2")]
    assert d2["prompt"].endswith("[VERIFY] wrong.") and d2["completion"].startswith("\n\nRevision:")
    # The LaSeR variant's data from the same rows: D1 → its revision, D2 → attempt and revision, D3 → its attempt.
    fmt = sft.correction_format(str(data / "dataset"))  # the task that correction-data ran, from its config.json
    assert fmt == task.correction
    attempts = sft.prepare_dataset(dataset, AutoTokenizer.from_pretrained(tiny_model_dir), "attempts", fmt=fmt)
    assert len(attempts) == 4 + 2 * 4 + 4 and not any("[VERIFY]" in c for c in attempts["completion"])
    sft_dir = str(tmp_path / "sft")
    sft_args = SFTConfig(output_dir=sft_dir, max_steps=2, per_device_train_batch_size=4, max_length=256,
                         logging_steps=1, **COMMON)  # fmt: skip
    sft.main(sft.ScriptArguments(dataset_path=str(data / "dataset")), sft_args, ModelConfig(tiny_model_dir))
    assert os.path.isfile(os.path.join(sft_dir, "config.json"))
    with pytest.raises(SystemExit, match="trl-laser correction-data"):
        sft.main(sft.ScriptArguments(dataset_path=str(tmp_path / "missing")), sft_args, ModelConfig(tiny_model_dir))

    # Stage 2: TRL GRPOTrainer with the last-answer reward
    rl = load_example("rl_self_correction")
    assert rl._pre_parse(["--use_laser"]) == (True, True) and rl._pre_parse(["--use-laser", "true"]) == (True, True)
    assert rl._pre_parse([]) == (False, True) and rl._pre_parse(["--use_laser", "false"]) == (False, True)
    assert rl._pre_parse(["--model-name-or-path", "m", "--max_steps", "3"]) == (False, False)
    rl_dir = str(tmp_path / "rl")
    rl_args = GRPOConfig(output_dir=rl_dir, max_steps=1, per_device_train_batch_size=4, num_generations=2,
                         max_completion_length=8, logging_steps=1, **COMMON)  # fmt: skip
    rl.main(DatasetArguments(num_problems=4, dataset_seed=1), rl_args, ModelConfig(sft_dir), use_laser=False)
    assert os.path.isfile(os.path.join(rl_dir, "config.json"))

    # Inference: both loops on the RL model, same problems, one loaded model
    scorer = SelfRewardScorer.from_pretrained(rl_dir)
    questions, answers = problems["problem"], problems["answer"]
    verbal = evaluate_correction(scorer, questions, answers, task, "verbal", max_new_tokens=6,
                                 output_dir=str(tmp_path / "verbal"))  # fmt: skip
    laser = evaluate_correction(scorer, questions, answers, task, "laser", max_new_tokens=6,
                                score_fn=lambda prompts, completions: [0.0] * len(completions))  # fmt: skip
    for metrics in (verbal, laser):
        assert metrics["num_problems"] == 4 and 1 <= metrics["avg_attempts"] <= 2
        assert 0 <= metrics["turn1_accuracy"] <= 1 and 0 <= metrics["final_accuracy"] <= 1
    assert laser["avg_attempts"] == 2 and laser["verification_tokens_per_problem"] == 1  # score 0 always revises
    # the random model never starts a self-evaluation: the verbal loop does not force one, the format is broken
    assert verbal["format_broken_rate"] == 1 and verbal["verification_compute_tokens_per_problem"] == 0
    assert len(open(tmp_path / "verbal" / "records.jsonl").readlines()) == 4
