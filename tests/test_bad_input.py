"""Bad input is refused before expensive work, with a message that names the fix; degenerate but legal batches train
with finite losses and metrics that say what happened."""

import json
import logging
import math
import os
import time

import pytest

from trl_laser import LaSeRConfig, LaSeRGRPOTrainer
from trl_laser.cli import main as cli
from trl_laser.core.model_path import check_model_path
from trl_laser.core.recipe import SELF_REWARD_CONFIG_NAME, load_self_reward_config
from trl_laser.core.token import resolve_self_reward_token
from trl_laser.scoring.scorer import SelfRewardScorer
from trl_laser.testing import parity_reward, tiny_model, tiny_tokenizer


# ---------------------------------------------------------------------------------------------------------------------
# Configuration


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"self_reward_ref_constant": float("nan")}, "must be a finite number"),
        ({"self_reward_ref_constant": float("inf")}, "must be a finite number"),
        ({"self_reward_ref_constant": 0.5}, "cannot be positive"),
        ({"self_reward_beta": -0.1}, "self_reward_beta must be > 0"),
        ({"self_reward_advantage_coef": -0.1}, r"must be in \[0, 1\]"),
        ({"self_reward_advantage_std_threshold": -1.0}, "self_reward_advantage_std_threshold must be >= 0"),
        ({"self_reward_warmup_steps": -2}, "self_reward_warmup_steps must be >= 0"),
    ],
)
def test_out_of_range_config_fields_are_refused(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        LaSeRConfig(output_dir=str(tmp_path), **kwargs)


def test_a_grpo_config_is_refused_with_the_fix(tmp_path, tiny_model_dir):
    from trl import GRPOConfig

    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none")
    with pytest.raises(TypeError, match=r"needs a LaSeRConfig.*LaSeRConfig\(\.\.\.\)"):
        LaSeRGRPOTrainer(model=tiny_model_dir, reward_funcs=parity_reward, args=args)


def test_group_size_one_is_refused_by_trl_before_the_model_loads(tmp_path):
    # TRL itself needs 2 completions per prompt for its advantages; LaSeR keeps TRL's error and message.
    with pytest.raises(ValueError, match="at least 2 generations per prompt"):
        LaSeRConfig(output_dir=str(tmp_path), num_generations=1, per_device_train_batch_size=4)


def test_trl_validation_runs_before_laser_checks(tmp_path, tiny_model_dir):
    def other_reward(completions, **kwargs):
        return [0.0] * len(completions)

    args = LaSeRConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        report_to="none",
        reward_weights=[1.0],
        self_reward_token="<reserved_0>",
    )
    with pytest.raises(ValueError, match=r"Number of reward weights \(1\) must match"):
        LaSeRGRPOTrainer(model=tiny_model_dir, reward_funcs=[parity_reward, other_reward], args=args)


# ---------------------------------------------------------------------------------------------------------------------
# The self-reward token


def test_an_ordinary_text_token_gets_a_warning(caplog):
    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer)
    with caplog.at_level(logging.WARNING, logger="trl_laser"):
        string, token_id = resolve_self_reward_token(tokenizer, model, "#", eos_token_ids=[2])
    assert (string, token_id) == ("#", tokenizer.convert_tokens_to_ids("#"))
    assert "ordinary token that the model writes in text" in caplog.text
    assert "never emits" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trl_laser"):
        resolve_self_reward_token(tokenizer, model, "<reserved_0>", eos_token_ids=[2])
    assert "ordinary token" not in caplog.text


# ---------------------------------------------------------------------------------------------------------------------
# Saved metadata (the message names the file)


def write_metadata(directory, content: str) -> str:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, SELF_REWARD_CONFIG_NAME)
    with open(path, "w") as f:
        f.write(content)
    return path


GOOD = {"token": "<reserved_0>", "token_id": 3, "beta": 0.1, "ref_constant": -5.0}


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"token": "<reserved_0>", "token_id": 3, "beta"', "is not valid JSON"),  # cut short
        ("", "is not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
        (json.dumps({"token": "<reserved_0>", "beta": 0.1}), r"missing the field\(s\) \['ref_constant', 'token_id'\]"),
        (json.dumps({**GOOD, "beta": -0.1}), "beta must be a positive number"),
        (json.dumps({**GOOD, "beta": "0.1"}), "beta must be a positive number"),
        (json.dumps({**GOOD, "ref_constant": 3.0}), r"ref_constant must be a finite log-probability \(<= 0\)"),
        (
            '{"token": "<reserved_0>", "token_id": 3, "beta": 0.1, "ref_constant": NaN}',
            "ref_constant must be a finite",
        ),
        (json.dumps({**GOOD, "token_id": -1}), "token_id must be a non-negative integer"),
        (json.dumps({**GOOD, "format_version": 99}), "upgrade trl-laser"),
    ],
)
def test_corrupt_or_partial_metadata_names_the_file(tmp_path, content, message):
    path = write_metadata(tmp_path / "model", content)
    with pytest.raises(ValueError, match=message) as error:
        load_self_reward_config(str(tmp_path / "model"))
    assert path in str(error.value)


def test_the_scorer_refuses_corrupt_metadata_before_loading_the_model(tmp_path, tiny_model_dir, monkeypatch):
    import shutil

    directory = tmp_path / "model"
    shutil.copytree(tiny_model_dir, directory)
    write_metadata(directory, json.dumps({**GOOD, "ref_constant": 3.0}))
    monkeypatch.setattr("trl_laser.scoring.scorer.load_pretrained", lambda *a, **k: pytest.fail("model loaded"))
    with pytest.raises(ValueError, match=f"{SELF_REWARD_CONFIG_NAME} is corrupt"):
        SelfRewardScorer.from_pretrained(str(directory))


# ---------------------------------------------------------------------------------------------------------------------
# Missing local paths are never taken for Hub ids


@pytest.mark.parametrize("name", ["/no/such/model", "./no_such_dir", "../no_such_dir", "~/no_such_dir", "a/b/c", "x/"])
def test_missing_local_paths_are_refused(name):
    with pytest.raises(FileNotFoundError, match="does not exist. Check the path"):
        check_model_path(name)


@pytest.mark.parametrize("name", ["HuggingFaceTB/SmolLM2-135M-Instruct", "gpt2"])
def test_hub_ids_pass_the_path_check(name):
    assert check_model_path(name) == name


def test_a_file_is_not_a_model_directory(tmp_path):
    (tmp_path / "weights.bin").write_text("")
    with pytest.raises(NotADirectoryError, match="pass the model directory"):
        check_model_path(str(tmp_path / "weights.bin"))


def test_scorer_refuses_a_missing_directory():
    with pytest.raises(FileNotFoundError, match="'/no/such/model' does not exist"):
        SelfRewardScorer.from_pretrained("/no/such/model")


# ---------------------------------------------------------------------------------------------------------------------
# Command line: exit status 2 and one line naming the fix, before any model or dataset work


def run_cli(argv, capsys) -> tuple[int, str]:
    start = time.perf_counter()
    status = cli(argv)
    assert time.perf_counter() - start < 5.0  # refused before loading anything
    return status, capsys.readouterr().err


@pytest.mark.parametrize("model", ["/no/such/model", "./no_such_dir"])
def test_estimate_constant_refuses_a_missing_model_directory(model, capsys):
    status, err = run_cli(["estimate-constant", "--model_name_or_path", model, "--num_problems", "2"], capsys)
    assert status == 2
    assert f"trl-laser estimate-constant: error: Model directory {model!r} does not exist" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "option, message",
    [
        (["--num_problems", "0"], "--num_problems must be >= 1"),
        (["--num_samples", "0"], "--num_samples must be >= 1"),
        (["--max_new_tokens", "0"], "--max_new_tokens must be >= 1"),
        (["--temperature", "0"], "--temperature must be > 0"),
        (["--batch_size", "0"], "--batch_size must be >= 1"),
    ],
)
def test_estimate_constant_refuses_out_of_range_options(option, message, tiny_model_dir, capsys):
    status, err = run_cli(["estimate-constant", "--model_name_or_path", tiny_model_dir, *option], capsys)
    assert status == 2
    assert message in err


def test_evaluate_refuses_a_missing_model_before_creating_the_report_folder(tmp_path, capsys):
    report = tmp_path / "report"
    argv = ["evaluate", "--model_name_or_path", str(tmp_path / "no_such_checkpoint"), "--output_dir", str(report)]
    status, err = run_cli(argv, capsys)
    assert status == 2
    assert "no_such_checkpoint' does not exist" in err
    assert not report.exists()


def test_evaluate_names_a_corrupt_metadata_file(tmp_path, tiny_model_dir, capsys):
    import shutil

    directory = tmp_path / "model"
    shutil.copytree(tiny_model_dir, directory)
    path = write_metadata(directory, "{not json")
    status, err = run_cli(
        ["evaluate", "--model_name_or_path", str(directory), "--output_dir", str(tmp_path / "r")], capsys
    )
    assert status == 2
    assert f"{path} is not valid JSON" in err


def test_correction_data_refuses_a_missing_model_directory(tmp_path, capsys):
    argv = ["correction-data", "--model_name_or_path", "/no/such/model", "--output_dir", str(tmp_path / "out")]
    status, err = run_cli(argv, capsys)
    assert status == 2
    assert "'/no/such/model' does not exist" in err


# ---------------------------------------------------------------------------------------------------------------------
# Degenerate but legal batches


def always_correct(completions, **kwargs):
    return [1.0] * len(completions)


def no_verdict(completions, **kwargs):
    return [None] * len(completions)


def nan_verdict(completions, **kwargs):
    return [math.nan] * len(completions)


@pytest.mark.parametrize(
    "case, overrides",
    [
        ("no finished completion", {"generation_kwargs": {"sequence_bias": [[[2], -100.0]]}}),
        ("one class only", {"reward_funcs": always_correct, "self_reward_ref_constant": -4.0}),
        ("every verifier reward None", {"reward_funcs": no_verdict, "self_reward_ref_constant": -4.0}),
        ("every verifier reward NaN", {"reward_funcs": nan_verdict, "self_reward_ref_constant": -4.0}),
    ],
)
def test_degenerate_batches_train_with_finite_losses(case, overrides, make_trainer, one_thread):
    trainer = make_trainer(self_reward_coef=1.0, self_reward_advantage_coef=0.5, **overrides)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2
    for entry in logs:
        assert math.isfinite(entry["loss"]), (case, entry)
        for key, value in entry.items():
            if key.startswith("self_reward/"):
                assert value is None or math.isfinite(value), (case, key, value)  # None: undefined for this batch
        if case == "no finished completion":
            assert entry["self_reward/finished_fraction"] == 0.0
            assert entry["self_reward/num_correct"] == entry["self_reward/num_incorrect"] == 0.0
            assert entry.get("self_reward/loss") is None  # nothing to align: no value rather than 0
        elif case == "one class only":
            assert entry["self_reward/num_correct"] > 0 and entry["self_reward/num_incorrect"] == 0.0
            assert entry.get("self_reward/auroc") is None  # undefined with one class
            assert entry["self_reward/one_class_batches"] == 1.0
        else:
            assert entry["self_reward/finished_fraction"] > 0
            assert entry["self_reward/num_correct"] == entry["self_reward/num_incorrect"] == 0.0
    if case == "no finished completion":
        assert trainer.ref_constant is None  # c_ref waits for a batch with a finished completion


def test_trainer_refuses_a_missing_model_directory(tmp_path, prompt_dataset):
    args = LaSeRConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", self_reward_token="<reserved_0>")
    with pytest.raises(FileNotFoundError, match="'./no_such_model_dir' does not exist"):
        LaSeRGRPOTrainer(
            model="./no_such_model_dir", reward_funcs=parity_reward, args=args, train_dataset=prompt_dataset
        )
