"""`examples/reproduce.py` end to end on the tiny model: three evaluated models, the report, and reuse on rerun."""

import json
import os
import subprocess
import sys


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_reproduce(tiny_model_dir, output_dir, report_dir, *extra, expect_failure=False):
    command = [
        sys.executable, os.path.join(ROOT, "examples", "reproduce.py"), "--model_name_or_path", tiny_model_dir,
        "--output_dir", str(output_dir), "--report_dir", str(report_dir), "--max_steps", "2", "--save_steps", "1",
        "--num_eval_problems", "3", "--num_eval_samples", "2", "--num_train_examples", "32",
        "--steps_per_generation", "2", "--logging_steps", "1", "--self_reward_token", "<reserved_0>",
        "--max_completion_length", "4", "--use_cpu", "true", *extra,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert (result.returncode != 0) == expect_failure, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def test_reproduce_writes_the_comparison_and_reuses_finished_stages(tmp_path, tiny_model_dir):
    output, root = tmp_path / "run", tmp_path / "report"
    report = root / "sums" / "seed0"
    warm_start = ("--dataset_name", "builtin:sums", "--sft_examples", "8", "--sft_batch_size", "4")
    first = run_reproduce(tiny_model_dir, output, report, *warm_start, "--summary_dir", str(root))
    assert "[grpo] training" in first and "[laser] training" in first
    # GRPO and LaSeR both start from the warm-started model, which is also the model evaluated before RL.
    assert json.load(open(output / "sft" / "warm_start.json"))["settings"]["num_examples"] == 8

    results = json.load(open(report / "results.json"))
    assert set(results) == {"base", "grpo", "laser", "config", "training", "wall_time_s"}
    for stage in ("grpo", "laser"):
        assert set(results["training"][stage]) == {"first_reward", "last_reward", "max_one_class_batches"}
    assert results["config"]["start_model"] == results["base"]["model"] == str(output / "sft")
    for stage in ("base", "grpo", "laser"):
        r = results[stage]
        assert r["num_problems"] == 3 and {"maj@2", "weighted_maj@2", "best_of_2", "pass@2"} <= r.keys()
        assert {"acc_correct", "acc_incorrect", "f1", "auroc", "ece"} <= r["verification"].keys()
        # the free verifiers, measured on the same samples as r_s
        assert {"mean_log_prob", "lowest_group_confidence", "self_certainty", "self_consistency", "length"} <= set(
            r["free_verifiers"]
        )
    # one scoring recipe for all three models
    recipes = {json.dumps(results[s]["self_reward"], sort_keys=True) for s in ("base", "grpo", "laser")}
    assert len(recipes) == 1
    assert results["config"]["self_reward_coef"] > 0 and results["config"]["eval_split"] == "test"
    # the GRPO run trains without the term but logs the untrained score
    grpo_log = json.load(open(output / "grpo" / "log_history.json"))
    assert any("self_reward/auroc" in h for h in grpo_log)
    for name in ("results.md", "training_curves.png", "voting_curves.png", "roc_curves.png"):
        assert os.path.getsize(report / name) > 0
    for stage in ("grpo", "laser"):  # the logged metrics the report is read from travel with it
        assert json.load(open(report / f"{stage}_log_history.json")) == json.load(
            open(output / stage / "log_history.json")
        )
    # The summary over seeds holds this seed's comparison, in the documented schema.
    summary = json.load(open(root / "summary.json"))["builtin:sums"]
    assert summary["seeds"] == [0]
    assert summary["grpo_accuracy"] == results["grpo"]["accuracy"]
    assert summary["laser_weighted_maj"] == results["laser"]["weighted_maj@2"]
    assert summary["laser_auroc"] == results["laser"]["verification"]["auroc"]
    best_free = [e["auroc"] for e in results["grpo"]["free_verifiers"].values() if e["auroc"] is not None]
    assert summary["best_free_auroc_grpo"] == (max(best_free) if best_free else None)
    assert summary["mean_log_prob_auroc_grpo"] == results["grpo"]["free_verifiers"]["mean_log_prob"]["auroc"]
    assert summary["grpo_maj"] == results["grpo"]["maj@2"]
    votes = [results["grpo"]["maj@2"]] + [
        e[key]
        for e in results["grpo"]["free_verifiers"].values()
        for key in ("weighted_maj@2", "top10_weighted_maj@2")
    ]
    assert summary["grpo_best_vote"] == max(votes)
    assert "builtin:sums (0)" in (root / "summary.md").read_text()
    assert not any(p.startswith("checkpoint") or p.endswith(".safetensors") for p in os.listdir(report))

    second = run_reproduce(tiny_model_dir, output, report, *warm_start)  # a rerun resumes: nothing is redone
    assert "] training" not in second and second.count("reusing") == 5

    # Other settings in the same directory would reuse stages made with the old ones: refused before any work.
    changed = run_reproduce(
        tiny_model_dir, output, report, *warm_start, "--learning_rate", "3e-5", expect_failure=True
    )
    assert "holds a reproduction made with other settings (learning_rate: 1e-05 -> 3e-05)" in changed
    assert "Pass a new --output_dir" in changed and "reusing" not in changed


def test_a_remeasured_reference_constant_scores_every_model(tmp_path, tiny_model_dir):
    output = tmp_path / "run"
    remeasure = ("--reasoning_warmup_steps", "2", "--self_reward_remeasure_ref_constant", "true")
    finish = ("--generation_kwargs", json.dumps({"sequence_bias": [[[2], 3.0]]}))  # most tiny-model answers end
    run_reproduce(tiny_model_dir, output, tmp_path / "report", "--max_steps", "4", *remeasure, *finish)
    results = json.load(open(output / "results.json"))
    trained = json.load(open(output / "laser" / "self_reward_config.json"))["ref_constant"]
    before = json.load(open(output / "reference_constant.json"))["mean"]
    assert results["config"]["ref_constant"] == trained != before
    assert results["config"]["ref_constant_before_rl"] == before
    # the three models are scored with the recipe LaSeR trained with
    assert {results[s]["self_reward"]["ref_constant"] for s in ("base", "grpo", "laser")} == {trained}
    assert json.load(open(output / "settings.json"))["self_reward_remeasure_ref_constant"] is True


def test_stop_after_grpo_sizes_the_shared_recipe_and_a_full_run_reuses_it(tmp_path, tiny_model_dir):
    output = tmp_path / "run"
    early = run_reproduce(
        tiny_model_dir, output, tmp_path / "report", "--eval_split", "validation", "--stop_after", "grpo"
    )
    assert "before RL: accuracy" in early and "GRPO: accuracy" in early and "training reward" in early
    assert "stopped after grpo" in early
    results = json.load(open(output / "eval" / "grpo" / "results.json"))
    assert results["num_problems"] == 3 and "free_verifiers" in results
    assert not (output / "laser").exists() and not (output / "results.json").exists()
    # the rest of the comparison, later, in the same directory: the two finished stages are reused
    full = run_reproduce(tiny_model_dir, output, tmp_path / "report", "--eval_split", "validation")
    assert "[base] reusing" in full and "[grpo] reusing" in full and "[laser] training" in full
    assert json.load(open(output / "results.json"))["grpo"]["accuracy"] == results["accuracy"]


def load_reproduce():
    import importlib.util

    spec = importlib.util.spec_from_file_location("reproduce", os.path.join(ROOT, "examples", "reproduce.py"))
    reproduce = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reproduce)
    return reproduce


def fake_results(seed: int, accuracy: float, **recipe) -> dict:
    """A reproduction's results.json with what the summary reads: GRPO and LaSeR, one free verifier, K = 2."""

    def model(acc):
        return {
            "accuracy": acc, "maj@2": acc, "weighted_maj@2": acc,
            "verification": {"auroc": 0.5, "f1": 0.5, "ece_prior_adjusted": 0.1},
            "free_verifiers": {"mean_log_prob": {"auroc": 0.7, "weighted_maj@2": acc, "top10_weighted_maj@2": acc}},
        }  # fmt: skip

    config = {"task": "builtin:sums", "num_eval_samples": 2, "learning_rate": 1e-5, "seed": seed, **recipe}
    # measured per seed, not part of the recipe
    config.update(start_model=f"outputs/seed{seed}/sft", ref_constant=-19.0 - seed, ref_constant_std=0.1 * seed)
    return {"grpo": model(accuracy), "laser": model(accuracy), "config": config}


def write_seed(root, seed, results):
    os.makedirs(root / "sums" / f"seed{seed}")
    with open(root / "sums" / f"seed{seed}" / "results.json", "w") as f:
        json.dump(results, f)


def test_the_summary_averages_seeds_of_one_recipe_and_refuses_a_mix(tmp_path):
    reproduce = load_reproduce()
    write_seed(tmp_path, 0, fake_results(0, 0.4))
    write_seed(tmp_path, 2, fake_results(2, 0.6))  # another seed, c_ref and warm-started model: the same recipe
    summary = reproduce.summarize(str(tmp_path))["builtin:sums"]
    assert summary["seeds"] == [0, 2] and abs(summary["grpo_accuracy"] - 0.5) < 1e-12

    write_seed(tmp_path, 1, fake_results(1, 0.9, learning_rate=3e-5))
    try:
        reproduce.summarize(str(tmp_path))
    except ValueError as error:
        message = str(error)
    else:
        raise AssertionError("seeds of two recipes were averaged")
    assert "learning_rate: 1e-05 (seed 0) vs 3e-05 (seed 1)" in message and "Move the reports" in message
    assert json.load(open(tmp_path / "summary.json"))["builtin:sums"]["seeds"] == [0, 2]  # the old summary stays


def test_reproduction_configs_parse_and_name_themselves():
    import yaml

    reproduce = load_reproduce()
    configs = sorted(os.listdir(os.path.join(ROOT, "recipes", "reproduction")))
    assert configs  # the task with written work has one
    for name in configs:
        path = os.path.join("recipes", "reproduction", name)
        with open(os.path.join(ROOT, path)) as f:
            text = f.read()
        assert f"python examples/reproduce.py --config {path}" in text  # the command that runs it is at its top
        script_args, warm_start, args = reproduce.parse_args(["--config", os.path.join(ROOT, path)])
        parsed = {**vars(script_args), **vars(warm_start), **vars(args)}
        assert {key: parsed[key] for key in yaml.safe_load(text)} == yaml.safe_load(text)
