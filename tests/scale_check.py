"""A short LaSeR training run that writes what the scale tests compare: the logged history, c_ref, the class weights
and mixed advantages of every generation batch (gathered over processes), and the final weights.

    python scale_check.py MODEL_DIR OUTPUT_DIR [--per-device N] [--max-steps N] [--stop-at N] [--save-steps N]
        [--resume] [--seeded] [--self-reward-warmup N] [--check-zero3-head] [--gpu]

Run by tests/test_scale.py in one process, under torchrun with 2 CPU processes, under `accelerate launch` with
DeepSpeed ZeRO-2/3 configs, and (on a GPU) by tests/test_engines.py with FSDP2, always with the same global batch.

`--seeded` makes each completion a function of (generation batch, global row) only: TRL seeds sampling per process
(`set_seed(seed, device_specific=True)`), so one process and two processes would otherwise sample different
completions from the same policy. The completion is still sampled from the policy, one row at a time, with the torch
RNG seeded from (batch, row); rewards, c_ref, class weights, advantage mixing, the loss, the gradient all-reduce and
the optimizer are the real code paths.
"""

import argparse
import json
import os
import sys

import torch
from accelerate.utils import gather
from datasets import Dataset
from process_exit import leave_together
from transformers import TrainerCallback
from trl.models.utils import unwrap_model_for_generation

from trl_laser import LaSeRConfig, LaSeRGRPOTrainer
from trl_laser.testing import EOS_ID, parity_reward


def seeded_generation(trainer):
    """Replace the trainer's generation by per-row sampling from the policy with the RNG seeded by (batch, row)."""
    calls = [0]

    def generate(prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        calls[0] += 1
        rows = len(prompt_ids)
        completions = []
        with (
            unwrap_model_for_generation(
                trainer.model_wrapped, trainer.accelerator, gather_deepspeed3_params=True
            ) as model,
            torch.no_grad(),
        ):
            for i, ids in enumerate(prompt_ids):
                row = trainer.accelerator.process_index * rows + i
                with torch.random.fork_rng():
                    torch.manual_seed(1000 * calls[0] + row)
                    input_ids = torch.tensor([ids], device=trainer.accelerator.device)
                    sequence = model.generate(
                        input_ids=input_ids,
                        attention_mask=torch.ones_like(input_ids),
                        generation_config=trainer.generation_config,
                    )
                completion = sequence[0, len(ids) :].tolist()
                if EOS_ID in completion:
                    completion = completion[: completion.index(EOS_ID) + 1]
                completions.append(completion)
        return completions, None

    trainer._generate_single_turn = generate


class StopAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


def record_generation_batches(trainer, batches: list):
    original = trainer._generate_and_score_completions

    def wrapped(inputs):
        output = original(inputs)
        batches.append(
            {
                "step": trainer.state.global_step,
                "advantages": gather(output["advantages"]).tolist(),
                "weights": gather(output["self_reward_weights"]).tolist(),
                "targets": gather(output["self_reward_targets"]).tolist(),
                "completion_lengths": gather(output["completion_mask"].sum(1)).tolist(),
            }
        )
        return output

    trainer._generate_and_score_completions = wrapped


def check_zero3_head(trainer) -> str:
    """Under ZeRO-3 the LM head's weight is a shard outside its module's forward. The readout projects the captured
    hidden state through the head module, so its forward hook gathers the full weight, and the gradient goes back to
    the sharded parameter through DeepSpeed's hooks. Compare value and gradient with an unsharded copy."""
    import deepspeed
    from deepspeed.utils import safe_get_full_grad

    from trl_laser.core.readout import causal_lm, token_log_probs

    engine = trainer.model_wrapped
    head = causal_lm(engine).get_output_embeddings()
    assert head.weight.numel() == 0, "the head weight should be partitioned (stage3_param_persistence_threshold 0)"
    with deepspeed.zero.GatheredParameters(head.weight):
        full_weight = head.weight.detach().clone()
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, full_weight.size(1), generator=generator)
    weight = full_weight.clone().requires_grad_(True)
    expected = (hidden @ weight.T).log_softmax(-1)[:, 3]
    expected.sum().backward()

    engine.zero_grad()
    values = token_log_probs(engine, hidden, 3)
    engine.backward(values.sum())
    gradient = safe_get_full_grad(head.weight)
    value_error = (values.detach() - expected.detach()).abs().max().item()
    grad_error = (gradient - weight.grad).abs().max().item()
    assert value_error < 1e-5 and grad_error < 1e-5, (value_error, grad_error)
    assert weight.grad.abs().max() > 1e-3
    return f"value_error={value_error:.2e} grad_error={grad_error:.2e}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("output_dir")
    parser.add_argument("--per-device", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=3)
    parser.add_argument("--stop-at", type=int, default=None)
    parser.add_argument("--save-steps", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--seeded", action="store_true")
    parser.add_argument("--self-reward-warmup", type=int, default=1)
    parser.add_argument("--check-zero3-head", action="store_true")
    parser.add_argument("--gpu", action="store_true", help="train on the accelerator (default: CPU)")
    options = parser.parse_args()
    torch.set_num_threads(1)

    prompts = [[{"role": "user", "content": f"What is {i} + {i % 3}?"}] for i in range(32)]
    dataset = Dataset.from_dict({"prompt": prompts})
    saving = (
        dict(save_strategy="steps", save_steps=options.save_steps) if options.save_steps else {"save_strategy": "no"}
    )
    args = LaSeRConfig(
        output_dir=options.output_dir,
        per_device_train_batch_size=options.per_device,
        num_generations=4,
        max_completion_length=6,
        max_steps=options.max_steps,
        learning_rate=1e-2,
        logging_steps=1,
        report_to="none",
        gradient_checkpointing=False,
        use_cpu=not options.gpu,
        seed=0,
        bf16=False,
        self_reward_token="<reserved_0>",
        self_reward_beta=0.5,
        self_reward_coef=1.0,
        self_reward_balance=True,
        self_reward_advantage_coef=0.5,
        self_reward_advantage_std_threshold=0.0,
        reasoning_warmup_steps=1,
        self_reward_warmup_steps=options.self_reward_warmup,
        generation_kwargs={"sequence_bias": [[[EOS_ID], 3.0]]},
        **saving,
    )
    callbacks = [StopAt(options.stop_at)] if options.stop_at else None
    trainer = LaSeRGRPOTrainer(
        model=options.model_dir, reward_funcs=parity_reward, args=args, train_dataset=dataset, callbacks=callbacks
    )
    if options.seeded:
        seeded_generation(trainer)
    batches = []
    record_generation_batches(trainer, batches)
    trainer.train(resume_from_checkpoint=True if options.resume else None)

    head_check = check_zero3_head(trainer) if options.check_zero3_head else None
    state_dict = trainer.accelerator.get_state_dict(trainer.model_wrapped)  # gathered; None off the main process
    if trainer.accelerator.is_main_process:
        weights = {name: tensor.detach().cpu().clone() for name, tensor in state_dict.items()}
        os.makedirs(options.output_dir, exist_ok=True)
        torch.save(weights, os.path.join(options.output_dir, "final_weights.pt"))
        record = {
            "num_processes": trainer.accelerator.num_processes,
            "distributed_type": trainer.accelerator.distributed_type.value,
            "log_history": trainer.state.log_history,
            "ref_constant": trainer.ref_constant,
            "self_reward_token_id": trainer.self_reward_token_id,
            "global_step": trainer.state.global_step,
            "batches": batches,
        }
        with open(os.path.join(options.output_dir, "record.json"), "w") as f:
            json.dump(record, f)
        if head_check:
            print(f"ZERO3_HEAD_OK {head_check}")
        print(f"SCALE_CHECK_OK processes={trainer.accelerator.num_processes}", flush=True)
    leave_together()


if __name__ == "__main__":
    sys.exit(main())
