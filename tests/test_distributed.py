import os
import subprocess
import sys

from trl_laser.testing import free_port


def test_alignment_term_is_global_across_two_processes(tmp_path, tiny_model_dir):
    """Two CPU processes (gloo): class weights and the normaliser must be computed over the global batch.

    `accelerate launch` starts several CPU processes only through mpirun, so the processes are started with torchrun;
    accelerate picks up the process group from the environment as it does under `accelerate launch`.
    """
    script = os.path.join(os.path.dirname(__file__), "distributed_check.py")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
        script, tiny_model_dir, str(tmp_path / "out"),
    ]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "true"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "DISTRIBUTED_CHECK_OK" in result.stdout
    assert "processes=2" in result.stdout
