"""The whole recipe on a tiny offline model: stage-1 data (CLI), SFT (TRL SFTTrainer), RL (TRL GRPOTrainer) and both
inference loops, a couple of steps each."""

import importlib.util
import json
import os
from pathlib import Path

import pytest
from datasets import load_from_disk
from trl import GRPOConfig, SFTConfig

from trl_laser.cli import main as cli_main
from trl_laser.correction import (
    COMPARE_FORMAT,
    Completion,
    RejectionSamplingConfig,
    TransformersGenerator,
    evaluate_correction,
    run_rejection_sampling,
)
from trl_laser.tasks import make_compare_dataset
from trl_laser.testing import save_tiny_model


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
COMMON = {"bf16": False, "use_cpu": True, "report_to": "none", "gradient_checkpointing": False, "save_strategy": "no"}


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class RightAfterWrong:
    """Scripted stage-1 "model" for the built-in task: first attempts alternate wrong/right, evaluations agree with
    the truth, revisions are right; so every problem yields D1, D2 and D3 rows."""

    def generate(self, conversations, *, assistant_prefixes=None, num_samples=1, max_new_tokens=256, stop=None):
        outputs = []
        for conversation in conversations:
            numbers = [int(x) for x in conversation[-1]["content"].strip("?").replace(",", "").split() if x.isdigit()]
            if numbers:
                texts = [str(min(numbers)) if i % 2 == 0 else str(max(numbers)) for i in range(num_samples)]
            elif conversation[-1]["content"] == COMPARE_FORMAT.verify_prompt:
                problem = [
                    int(x) for x in conversation[-3]["content"].strip("?").replace(",", "").split() if x.isdigit()
                ]
                texts = [" correct." if int(conversation[-2]["content"]) == max(problem) else " wrong."] * num_samples
            else:
                problem = [
                    int(x) for x in conversation[-5]["content"].strip("?").replace(",", "").split() if x.isdigit()
                ]
                texts = [str(max(problem))] * num_samples
            outputs.append([Completion(t, 1, True) for t in texts])
        return outputs

    def count_tokens(self, text):
        return len(text)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_model(str(tmp_path_factory.mktemp("tiny")))


def test_cli_correction_data_runs_the_real_generator(tiny, tmp_path):
    out = tmp_path / "cli"
    argv = ["correction-data", "--model", tiny, "--dataset", "builtin:compare", "--num_problems", "2",
            "--num_attempts", "2", "--num_evaluations", "1", "--num_revisions_wrong", "1",
            "--num_revisions_correct", "1", "--max_new_tokens", "4", "--evaluation_max_new_tokens", "3",
            "--backend", "transformers", "--output", str(out)]  # fmt: skip
    assert cli_main(argv) == 0
    stats = json.load(open(out / "stats.json"))
    assert stats["problems"] == 2
    # a random model: every first attempt is labelled or cut, and every one is accounted for
    assert stats["attempt_correct"] + stats["attempt_incorrect"] + stats["attempt_truncated"] == 4
    assert len(open(out / "problems.jsonl").readlines()) == 2
    # rerunning is a no-op (resume)
    assert cli_main(argv) == 0
    assert len(open(out / "problems.jsonl").readlines()) == 2


def test_transformers_generator_batches_stops_and_counts(tiny):
    generator = TransformersGenerator.from_pretrained(tiny, batch_size=2, temperature=1.0)
    prompts = [COMPARE_FORMAT.build_prompt(p) for p in make_compare_dataset(3, seed=0)["problem"]]
    outputs = generator.generate(
        prompts, assistant_prefixes=["1", "", "2"], num_samples=2, max_new_tokens=5, stop=["a"]
    )
    assert [len(o) for o in outputs] == [2, 2, 2]
    for completion in (c for o in outputs for c in o):
        assert 1 <= completion.num_tokens <= 5
        if completion.stop is not None:
            assert completion.text.endswith("a") and completion.text.count("a") == 1 and completion.finished
        elif not completion.finished:
            assert completion.num_tokens == 5
    assert generator.count_tokens("abc") == 3  # the tiny tokenizer is character-level


def test_three_stages_and_both_loops(tiny, tmp_path):
    # Stage 1: rejection sampling (scripted generations, real selection, assembly and dataset writing)
    rows = make_compare_dataset(4, seed=0)
    problems = [{"problem_id": str(i), "problem": r["problem"], "answer": r["answer"]} for i, r in enumerate(rows)]
    data = tmp_path / "data"
    config = RejectionSamplingConfig(num_attempts=4, num_evaluations=1, num_revisions_wrong=1, num_revisions_correct=1)
    stats = run_rejection_sampling(problems, RightAfterWrong(), str(data), COMPARE_FORMAT, config, is_math=False)
    assert stats["kept_D1"] == stats["kept_D2"] == stats["kept_D3"] == 4

    # Stage 1 training: TRL SFTTrainer through the example script, with the method's per-type loss masking
    sft = load_example("sft_self_correction")
    dataset = load_from_disk(str(data / "dataset"))
    split = sft.prepare_dataset(dataset, TransformersGenerator.from_pretrained(tiny).tokenizer, "paper")
    d2 = split[[r["type"] for r in dataset].index("D2")]
    assert d2["prompt"].endswith("[VERIFY] wrong.") and d2["completion"].startswith("\n\nRevision:")
    sft_dir = str(tmp_path / "sft")
    sft_args = SFTConfig(output_dir=sft_dir, max_steps=2, per_device_train_batch_size=4, max_length=256,
                         logging_steps=1, **COMMON)  # fmt: skip
    sft.main(sft.ScriptArguments(dataset_path=str(data / "dataset"), model_name_or_path=tiny), sft_args)
    assert os.path.isfile(os.path.join(sft_dir, "config.json"))
    with pytest.raises(SystemExit, match="trl-laser correction-data"):
        sft.main(sft.ScriptArguments(dataset_path=str(tmp_path / "missing"), model_name_or_path=tiny), sft_args)

    # Stage 2: TRL GRPOTrainer with the last-answer reward
    rl = load_example("rl_self_correction")
    assert rl._wants_laser(["--use_laser"]) and rl._wants_laser(["--use_laser", "true"])
    assert not rl._wants_laser([]) and not rl._wants_laser(["--use_laser", "false"])
    rl_dir = str(tmp_path / "rl")
    rl_args = GRPOConfig(output_dir=rl_dir, max_steps=1, per_device_train_batch_size=4, num_generations=2,
                         max_completion_length=8, logging_steps=1, **COMMON)  # fmt: skip
    rl.main(rl.ScriptArguments(model_name_or_path=sft_dir, num_problems=4), rl_args)
    assert os.path.isfile(os.path.join(rl_dir, "config.json"))

    # Inference: both loops on the RL model, same problems
    questions = [p["problem"] for p in problems]
    answers = [p["answer"] for p in problems]
    verbal = evaluate_correction(rl_dir, questions, answers, "verbal", max_new_tokens=6, is_math=False,
                                 output_dir=str(tmp_path / "verbal"))  # fmt: skip
    laser = evaluate_correction(rl_dir, questions, answers, "laser", max_new_tokens=6, is_math=False,
                                score_fn=lambda prompts, completions: [0.0] * len(completions))  # fmt: skip
    for metrics in (verbal, laser):
        assert metrics["num_problems"] == 4 and 1 <= metrics["avg_attempts"] <= 2
        assert 0 <= metrics["turn1_accuracy"] <= 1 and 0 <= metrics["final_accuracy"] <= 1
    assert laser["avg_attempts"] == 2 and laser["verification_tokens_per_problem"] == 1  # score 0 always revises
    assert verbal["verification_tokens_per_problem"] > 1
    assert len(open(tmp_path / "verbal" / "records.jsonl").readlines()) == 4
