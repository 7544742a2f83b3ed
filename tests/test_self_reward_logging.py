"""The logged `self_reward/` metrics equal the statistics of the completions in each logging window, whatever the
window holds: parts of generation batches, several of them, gradient accumulation, the last unfinished window."""

import math
import os
import subprocess
import sys

import pytest
import torch
from self_reward_records import MicroBatchRecorder, check_logged_windows, expected_window_metrics

from trl_laser import LaSeRGRPOTrainer
from trl_laser.core.self_reward import auroc
from trl_laser.testing import free_port


EOS = 2


def parity_reward(completions, **kwargs):
    return [float(len(c[0]["content"]) % 2 == 0) for c in completions]


def logging_args(tmp_path, **overrides):
    from trl_laser import LaSeRConfig

    args = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=6,
        learning_rate=1e-4,
        report_to="none",
        gradient_checkpointing=False,
        use_cpu=True,
        save_strategy="no",
        seed=0,
        self_reward_token="<reserved_0>",
        self_reward_coef=0.05,
        # a large β spreads the scores of the random tiny model on both sides of the 0.5 threshold
        self_reward_beta=25.0,
        generation_kwargs={"sequence_bias": [[[EOS], 3.0]]},
    )
    args.update(overrides)
    return LaSeRConfig(**args)


@pytest.mark.parametrize(
    "logging_steps, steps_per_generation, accumulation, max_steps",
    [(5, 4, 1, 7), (1, 4, 1, 4), (4, 4, 1, 8), (3, 2, 2, 4)],
)
def test_logged_metrics_are_window_statistics(
    tmp_path, tiny_model_dir, prompt_dataset, one_thread, monkeypatch, logging_steps, steps_per_generation,
    accumulation, max_steps,
):  # fmt: skip
    args = logging_args(
        tmp_path,
        logging_steps=logging_steps,
        steps_per_generation=steps_per_generation,
        gradient_accumulation_steps=accumulation,
        max_steps=max_steps,
    )
    trainer = LaSeRGRPOTrainer(
        model=tiny_model_dir, reward_funcs=parity_reward, args=args, train_dataset=prompt_dataset
    )
    recorder = MicroBatchRecorder(trainer, monkeypatch)
    trainer.train()
    windows = check_logged_windows(trainer, recorder, logging_steps)
    assert windows == math.ceil(max_steps / logging_steps)
    fractions = [
        h.get(k) for h in trainer.state.log_history for k in ("self_reward/acc_correct", "self_reward/acc_incorrect")
    ]
    assert any(f is not None and 0 < f < 1 for f in fractions), "the run should judge some completions each way"


def test_eval_metrics_cover_the_whole_evaluation(tmp_path, tiny_model_dir, prompt_dataset, one_thread, monkeypatch):
    args = logging_args(
        tmp_path, max_steps=2, logging_steps=1, eval_strategy="steps", eval_steps=2, per_device_eval_batch_size=8
    )
    trainer = LaSeRGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=parity_reward,
        args=args,
        train_dataset=prompt_dataset,
        eval_dataset=prompt_dataset.select(range(6)),  # 24 completions: three eval micro-batches
    )
    recorder = MicroBatchRecorder(trainer, monkeypatch)
    trainer.train()
    (entry,) = [h for h in trainer.state.log_history if "eval_self_reward/acc_correct" in h]
    eval_records = [r for r in recorder.records if r["mode"] == "eval"]
    assert len(eval_records) == 3
    expected = expected_window_metrics(
        torch.cat([r["rows"] for r in eval_records]), args.self_reward_beta, trainer.ref_constant
    )
    for name, value in expected.items():
        logged = entry[f"eval_{name}"]
        assert (logged is None) if math.isnan(value) else math.isclose(logged, value, rel_tol=1e-5, abs_tol=1e-6)


def test_auroc_against_hand_values():
    # positives 0.9, 0.4; negatives 0.4, 0.1: pairs (0.9>0.4), (0.9>0.1), (0.4=0.4 -> 1/2), (0.4>0.1) -> 3.5 / 4
    assert auroc([0.9, 0.4, 0.4, 0.1], [1, 1, 0, 0]) == pytest.approx(0.875)
    assert auroc([0.1, 0.2], [1, 0]) == 0.0
    assert auroc([0.3, 0.3, 0.3], [1, 0, 1]) == 0.5
    assert math.isnan(auroc([0.3, 0.7], [1, 1]))


def test_logged_metrics_are_window_statistics_on_two_processes(tmp_path, tiny_model_dir):
    """Two CPU processes (gloo, started with torchrun): the window sums and scores are reduced over processes."""
    script = os.path.join(os.path.dirname(__file__), "logging_check.py")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
        script, tiny_model_dir, str(tmp_path / "out"),
    ]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "LOGGING_CHECK_OK processes=2" in result.stdout
