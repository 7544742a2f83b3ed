"""A short run of the real demo: SmolLM2-135M-Instruct on the built-in task, two optimizer steps."""

import json
import os
import subprocess
import sys

from trl_laser import load_self_reward_config


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_trains_logs_and_saves_metadata(tmp_path):
    output_dir = tmp_path / "demo"
    command = [
        sys.executable, os.path.join(ROOT, "examples", "train.py"),
        "--output_dir", str(output_dir), "--max_steps", "2", "--per_device_train_batch_size", "8",
        "--logging_steps", "1", "--save_steps", "2", "--use_cpu", "true", "--steps_per_generation", "2",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    config = load_self_reward_config(str(output_dir))
    assert config.token == "<repo_name>" and config.beta == 0.5
    # the run ends by saying where the model is and how to score it
    assert f"trl-laser evaluate --model_name_or_path {output_dir}" in result.stdout
    assert -40 < config.ref_constant < -5, "c_ref is measured on the first batch: an unused token is very unlikely"
    state = json.load(open(output_dir / "checkpoint-2" / "trainer_state.json"))
    logged = [h for h in state["log_history"] if "self_reward/loss" in h]
    assert len(logged) == 2
    # generation metrics come with each generation batch (every `steps_per_generation` steps)
    assert 0 <= logged[0]["self_reward/finished_fraction"] <= 1
    assert all(h["self_reward/acc_correct"] is None or 0 <= h["self_reward/acc_correct"] <= 1 for h in logged)
    assert os.path.isfile(output_dir / "checkpoint-2" / "self_reward_config.json")
    card = open(output_dir / "README.md").read()
    assert "- laser" in card and "LaSeR" in card and "`builtin:compare`" in card
