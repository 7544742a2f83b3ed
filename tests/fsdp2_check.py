"""Run by tests/test_engines.py under torchrun with 2 CPU processes (gloo): the self-reward readout through an LM head
sharded with torch's FSDP2 (`fully_shard`), whose weight is a DTensor between forwards, against an unsharded copy. Argument: `head-unit` (the head is its own FSDP unit) or `root` (the head is in the root's group).

Each process projects its own hidden states (data parallel). Checked: the log-probabilities equal those of the
unsharded head, and after backward the sharded weight's gradient, gathered, equals what FSDP's data-parallel
gradient must be: the mean over processes of the per-process gradients of the unsharded head.
"""

import copy
import sys

import torch
import torch.distributed as dist
from process_exit import leave_together
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from trl_laser.core.readout import token_log_probs
from trl_laser.testing import tiny_model, tiny_tokenizer


TOKEN_ID = 3


def main(head_unit: bool):
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    model = tiny_model(tiny_tokenizer(), seed=0)
    reference = copy.deepcopy(model)

    mesh = init_device_mesh("cpu", (world,))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    if head_unit:
        fully_shard(model.lm_head, mesh=mesh)
    fully_shard(model, mesh=mesh)  # without its own unit, the head is in the root's group (transformer-based wrap)
    assert isinstance(model.lm_head.weight, DTensor), type(model.lm_head.weight)
    assert model.lm_head.weight.to_local().size(0) < model.lm_head.weight.size(0), "the head should be sharded"

    hidden_size = model.config.hidden_size
    all_hidden = torch.randn(2 * world, hidden_size, generator=torch.Generator().manual_seed(0))
    hidden = all_hidden[2 * rank : 2 * rank + 2]

    values = token_log_probs(model, hidden, TOKEN_ID)
    expected = token_log_probs(reference, hidden, TOKEN_ID)
    value_error = (values - expected).abs().max().item()
    values.sum().backward()

    # FSDP averages gradients over processes: the target is the mean of the per-process gradients
    for r in range(world):
        token_log_probs(reference, all_hidden[2 * r : 2 * r + 2], TOKEN_ID).sum().div(world).backward()
    gradient = model.lm_head.weight.grad
    assert isinstance(gradient, DTensor), type(gradient)
    grad_error = (gradient.full_tensor() - reference.lm_head.weight.grad).abs().max().item()
    assert reference.lm_head.weight.grad.abs().max() > 1e-3
    if rank == 0:
        print(f"value_error={value_error:.2e} grad_error={grad_error:.2e}")
    assert value_error < 1e-6, value_error
    assert grad_error < 1e-6, grad_error
    if rank == 0:
        print(f"FSDP2_READOUT_OK processes={world} head_unit={head_unit}", flush=True)
    leave_together()


if __name__ == "__main__":
    sys.exit(main(head_unit=sys.argv[1] == "head-unit"))
