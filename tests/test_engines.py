"""FSDP2 (torch's `fully_shard`, `accelerate_configs/fsdp2.yaml`).

accelerate switches FSDP on only for accelerator device types: on CPU processes an FSDP config stays plain data
parallel. So on CPU the part of LaSeR that FSDP2 changes is tested directly: the readout of log π(z_c) through an LM
head whose weight is a sharded DTensor between forwards (2 gloo processes, `tests/fsdp2_check.py`). The end-to-end
FSDP2 training run needs a GPU and is skipped elsewhere.
"""

import os
import subprocess
import sys

import pytest
import torch
from test_scale import SCRIPT, run_check

from trl_laser.testing import free_port


@pytest.mark.parametrize("layout", ["head-unit", "root"])
def test_readout_through_fsdp2_sharded_head_matches_unsharded(layout):
    """Values equal the unsharded head's; the sharded weight's gradient, gathered, is the mean over processes of the
    per-process gradients (what FSDP's reduce-scatter gives every other parameter). Measured: both exact (0.0)."""
    script = os.path.join(os.path.dirname(__file__), "fsdp2_check.py")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), script, layout]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "FSDP2_READOUT_OK processes=2" in result.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="accelerate enables FSDP only on accelerator devices")
def test_fsdp2_training_end_to_end(tmp_path, tiny_model_dir):
    """Three LaSeR steps under `accelerate launch` with FSDP2 (float32): the self_reward/ metrics are finite, c_ref is
    measured, the class weights and mixed advantages are produced, and the weights are saved."""
    processes = min(2, torch.cuda.device_count())
    config = tmp_path / "fsdp2.yaml"
    config.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: FSDP\nfsdp_config:\n  fsdp_version: 2\n"
        "  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP\n  fsdp_reshard_after_forward: true\n"
        "  fsdp_state_dict_type: FULL_STATE_DICT\n"
        f"num_machines: 1\nnum_processes: {processes}\nmachine_rank: 0\nmixed_precision: 'no'\nuse_cpu: false\n"
    )
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
                "--main_process_port", str(free_port())]  # fmt: skip
    assert os.path.isfile(SCRIPT)
    record = run_check(launcher, tiny_model_dir, tmp_path / "out", "--per-device", str(8 // processes), "--seeded",
                       "--gpu", env={})  # fmt: skip
    assert (record["num_processes"], record["distributed_type"]) == (processes, "FSDP")
    logs = [entry for entry in record["log_history"] if "self_reward/loss" in entry]
    assert len(logs) == 3 and all(torch.isfinite(torch.tensor(entry["self_reward/loss"])) for entry in logs)
    assert record["ref_constant"] < 0
