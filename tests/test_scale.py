"""Same numbers at every scale: one process vs two (gloo, same global batch), and an interrupted run resumed from its
checkpoint vs an uninterrupted one. Each run is `tests/scale_check.py` in a fresh interpreter."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from trl_laser.testing import free_port


SCRIPT = os.path.join(os.path.dirname(__file__), "scale_check.py")
LOGGED = (
    "loss", "grad_norm", "reward", "self_reward/loss", "self_reward/score_correct", "self_reward/score_incorrect",
    "self_reward/auroc", "self_reward/f1", "self_reward/acc_correct", "self_reward/acc_incorrect",
    "self_reward/finished_fraction", "self_reward/num_correct", "self_reward/num_incorrect",
    "self_reward/ref_constant",
)  # fmt: skip


def run_check(launcher: list[str], model_dir: str, output_dir, *options: str, env: dict | None = None) -> dict:
    command = [*launcher, SCRIPT, model_dir, str(output_dir), *options]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {"ACCELERATE_USE_CPU": "true"})}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "SCALE_CHECK_OK" in result.stdout
    with open(os.path.join(output_dir, "record.json")) as f:
        record = json.load(f)
    record["weights"] = torch.load(os.path.join(output_dir, "final_weights.pt"))
    record["stdout"] = result.stdout
    return record


def torchrun(processes: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port",
            str(free_port())]  # fmt: skip


def assert_same_logs(expected: list[dict], actual: list[dict], rtol: float, atol: float, steps=None):
    expected = [entry for entry in expected if "step" in entry and "loss" in entry]
    actual = [entry for entry in actual if "step" in entry and "loss" in entry]
    if steps is not None:
        expected = [entry for entry in expected if entry["step"] in steps]
        actual = [entry for entry in actual if entry["step"] in steps]
    assert [e["step"] for e in expected] == [a["step"] for a in actual] and expected
    for e, a in zip(expected, actual, strict=True):
        for key in LOGGED:
            assert key in e, (key, e)
            if math.isnan(e[key]):
                assert math.isnan(a[key]), (e["step"], key)
            else:
                assert a[key] == pytest.approx(e[key], rel=rtol, abs=atol), (e["step"], key, e[key], a[key])


def max_weight_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[name].float() - b[name].float()).abs().max().item() for name in a)


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory, tiny_model_dir):
    """Three steps of LaSeR (balanced alignment from step 1, advantage mixing from step 2, c_ref measured on the first
    batch) in one process, 8 completions per step."""
    output = tmp_path_factory.mktemp("one_process")
    return run_check(torchrun(1), tiny_model_dir, output, "--per-device", "8", "--seeded")


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, tiny_model_dir):
    """The same run on 2 CPU processes (torchrun, gloo, plain data parallel): 4 completions per process."""
    output = tmp_path_factory.mktemp("two_processes")
    return run_check(torchrun(2), tiny_model_dir, output, "--per-device", "4", "--seeded")


# Tolerances, one process vs two. The two runs see the same completions, so every count, reward, target and class
# weight is equal exactly; floats differ only by the order of reductions (the gradient all-reduce, sums over 4 + 4
# rows instead of 8), float32 round-off of ~1e-7 that the three Adam steps (lr 1e-2) carry into the weights.
METRIC_RTOL, METRIC_ATOL = 1e-4, 1e-6  # measured: <= 1e-5 relative (the step-3 loss)
ADVANTAGE_ATOL = 1e-3  # measured: 8e-5; mixed advantages divide by the group std of nearly equal scores
WEIGHT_ATOL = 1e-4  # measured: 6e-6, against weight updates of ~3e-2


def test_two_processes_train_like_one(one_process_run, two_process_run, tiny_model_dir):
    one, two = one_process_run, two_process_run
    assert (one["num_processes"], two["num_processes"]) == (1, 2)
    assert two["distributed_type"] == "MULTI_CPU"

    # c_ref is measured over the global first batch, not per process
    assert two["ref_constant"] == pytest.approx(one["ref_constant"], rel=1e-6)
    assert_same_logs(one["log_history"], two["log_history"], METRIC_RTOL, METRIC_ATOL)

    assert [b["step"] for b in one["batches"]] == [b["step"] for b in two["batches"]] == [0, 1, 2]
    for b1, b2 in zip(one["batches"], two["batches"], strict=True):
        assert b1["completion_lengths"] == b2["completion_lengths"]
        assert b1["targets"] == b2["targets"]
        # class weights are global: N / (2 N_1) and N / (2 N_0) over both processes' completions
        assert b1["weights"] == pytest.approx(b2["weights"], abs=0)
        assert b1["advantages"] == pytest.approx(b2["advantages"], abs=ADVANTAGE_ATOL)
    # the runs exercise both classes and the mixing (step 2: self-reward advantages move the verifier's)
    assert {0.0, 1.0} <= set(one["batches"][2]["targets"])
    group = one["batches"][2]["advantages"][:4]
    targets = one["batches"][2]["targets"][:4]
    assert any(a != group[0] for a, t in zip(group, targets, strict=True) if t == targets[0])

    assert max_weight_difference(one["weights"], two["weights"]) < WEIGHT_ATOL
    from transformers import AutoModelForCausalLM

    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    assert max_weight_difference(initial, one["weights"]) > 100 * WEIGHT_ATOL  # the runs did train


def test_resumed_run_matches_uninterrupted_run(tmp_path, tiny_model_dir):
    """Train 4 steps; vs train 2, stop, resume 2 from checkpoint-2. Sampling is TRL's own (the RNG state is restored
    from the checkpoint). Alignment starts at step 1 and mixing at step 3, after the resume point, so the warm-up
    position must be restored too. Measured: bit-identical; tolerance 0 for metrics and weights."""
    plain = [sys.executable]
    options = ["--max-steps", "4", "--self-reward-warmup", "2"]
    full = run_check(plain, tiny_model_dir, tmp_path / "full", *options)
    resumed_dir = tmp_path / "resumed"
    first = run_check(plain, tiny_model_dir, resumed_dir, *options, "--save-steps", "2", "--stop-at", "2")
    assert first["global_step"] == 2
    assert os.path.isfile(resumed_dir / "checkpoint-2" / "self_reward_config.json")
    resumed = run_check(plain, tiny_model_dir, resumed_dir, *options, "--save-steps", "2", "--resume")

    assert resumed["global_step"] == full["global_step"] == 4
    assert resumed["ref_constant"] == full["ref_constant"]  # restored, not measured again on the trained model
    assert resumed["self_reward_token_id"] == full["self_reward_token_id"] == 3
    # the resumed process generated only steps 2 and 3 (mixing active at step 3)
    assert [b["step"] for b in resumed["batches"]] == [2, 3]
    by_step = {b["step"]: b for b in full["batches"]}
    for batch in resumed["batches"]:
        assert batch == by_step[batch["step"]]
    assert_same_logs(full["log_history"], resumed["log_history"], rtol=0, atol=0, steps={3, 4})
    assert max_weight_difference(full["weights"], resumed["weights"]) == 0.0


# ---------------------------------------------------------------------------------------------------------------------
# DeepSpeed ZeRO-2 / ZeRO-3 on 2 CPU processes, against the plain data-parallel run above
#
# `accelerate launch` with a DeepSpeed config file, DeepSpeed's CPU accelerator (`DS_ACCELERATOR=cpu`, gloo without
# oneCCL) and float32, exactly as on GPUs otherwise: accelerate 1.15 lets DeepSpeed initialise the process group and
# counts its 2 processes (no patch needed). `ACCELERATE_USE_CPU=true` must not be set: it turns DeepSpeed off.

# The ZeRO-3 config partitions every parameter (persistence threshold 0; by default DeepSpeed keeps parameters under
# 1e5 elements whole, which would leave this tiny model's LM head unsharded and the check below vacuous).
ZERO3_CONFIG = {
    "zero_optimization": {
        "stage": 3,
        "stage3_param_persistence_threshold": 0,
        "stage3_gather_16bit_weights_on_model_save": True,
    },
    "train_micro_batch_size_per_gpu": "auto",
    "train_batch_size": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "bf16": {"enabled": False},
    "fp16": {"enabled": False},
}
ZERO2_CONFIG = {**ZERO3_CONFIG, "zero_optimization": {"stage": 2}}
# measured against the DDP run: ZeRO-2 weights within 1e-8, ZeRO-3 within 2e-6 (its reductions run per partition)
ENGINE_WEIGHT_ATOL = 1e-4


def deepspeed_launcher(tmp_path, ds_config: dict) -> list[str]:
    config_file = tmp_path / "ds_config.json"
    config_file.write_text(json.dumps(ds_config))
    accelerate_config = tmp_path / "accelerate.yaml"
    accelerate_config.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: DEEPSPEED\ndeepspeed_config:\n"
        f"  deepspeed_config_file: {config_file}\n  deepspeed_multinode_launcher: standard\n  zero3_init_flag: false\n"
        "num_machines: 1\nnum_processes: 2\nmachine_rank: 0\nuse_cpu: false\n"
    )
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config),
            "--main_process_port", str(free_port())]  # fmt: skip


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_on_cpu_trains_like_data_parallel(stage, tmp_path, tiny_model_dir, two_process_run):
    pytest.importorskip("deepspeed", reason="DeepSpeed runs need the extra: pip install -e '.[deepspeed]'")
    launcher = deepspeed_launcher(tmp_path, ZERO3_CONFIG if stage == 3 else ZERO2_CONFIG)
    options = ["--per-device", "4", "--seeded"]
    if stage == 3:
        options.append("--check-zero3-head")  # value and gradient of the readout through the sharded LM head
    zero = run_check(launcher, tiny_model_dir, tmp_path / "out", *options, env={"DS_ACCELERATOR": "cpu"})
    ddp = two_process_run
    if stage == 3:
        assert "ZERO3_HEAD_OK" in zero["stdout"]

    assert (zero["num_processes"], zero["distributed_type"]) == (2, "DEEPSPEED")
    assert zero["ref_constant"] == pytest.approx(ddp["ref_constant"], rel=1e-6)
    assert_same_logs(ddp["log_history"], zero["log_history"], METRIC_RTOL, METRIC_ATOL)
    for b1, b2 in zip(ddp["batches"], zero["batches"], strict=True):
        assert (b1["targets"], b1["weights"]) == (b2["targets"], b2["weights"])
        assert b1["advantages"] == pytest.approx(b2["advantages"], abs=ADVANTAGE_ATOL)
    assert max_weight_difference(ddp["weights"], zero["weights"]) < ENGINE_WEIGHT_ATOL
