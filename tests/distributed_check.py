"""Run by tests/test_distributed.py under `accelerate launch --num_processes 2 --cpu`.

Checks that the alignment term, averaged over processes as data parallelism averages gradients, equals the term
computed by hand on the whole generation batch (class weights and the normaliser are global, not per process).
"""

import sys

import torch
from accelerate.utils import gather
from datasets import Dataset
from process_exit import leave_together
from trl import GRPOTrainer

from trl_laser import LaSeRConfig, LaSeRGRPOTrainer
from trl_laser.testing import log_probs_by_hand


def parity_reward(completions, **kwargs):
    return [float(len(c[0]["content"]) % 2 == 0) for c in completions]


def main(model_dir: str, output_dir: str):
    prompts = [[{"role": "user", "content": f"What is {i} + {i % 3}?"}] for i in range(32)]
    dataset = Dataset.from_dict({"prompt": prompts})
    args = LaSeRConfig(
        output_dir=output_dir,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=6,
        report_to="none",
        gradient_checkpointing=False,
        use_cpu=True,
        seed=0,
        self_reward_token="<reserved_0>",
        self_reward_beta=0.5,
        self_reward_ref_constant=-4.0,
        self_reward_coef=1.0,
        generation_kwargs={"sequence_bias": [[[2], 3.0]]},
    )
    trainer = LaSeRGRPOTrainer(model=model_dir, reward_funcs=parity_reward, args=args, train_dataset=dataset)
    trainer.model.train()
    output = trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))
    trainer.current_gradient_accumulation_steps = 1
    model = trainer.model
    local_term = trainer._compute_loss(model, output) - GRPOTrainer._compute_loss(trainer, model, output)
    data_parallel_term = gather(local_term.detach().reshape(1)).mean()

    # by hand, on the gathered batch
    with torch.no_grad():
        log_probs, finished = log_probs_by_hand(model, output)
    scores = gather(0.5 * (log_probs + 4.0))
    finished = gather(finished)
    targets = gather(output["self_reward_targets"])
    n = int(finished.sum())
    n1 = int((finished & (targets > 0.5)).sum())
    n0 = n - n1
    weights = torch.tensor(
        [
            (n / (2 * n1) if t > 0.5 else n / (2 * n0)) if f else 0.0
            for f, t in zip(finished.tolist(), targets.tolist(), strict=True)
        ]
    )
    expected = (weights * (scores - targets).square()).sum() / n
    local_rows = output["completion_ids"].size(0)
    if trainer.accelerator.is_main_process:
        print(f"processes={trainer.accelerator.num_processes} rows/process={local_rows} finished={n} correct={n1}")
        print(f"data-parallel term={data_parallel_term.item():.6f} expected={expected.item():.6f}")
        assert trainer.accelerator.num_processes == 2
        assert 0 < n1 < n, "need both classes in the batch"
        assert torch.isclose(data_parallel_term, expected, rtol=1e-4), (data_parallel_term, expected)
        print("DISTRIBUTED_CHECK_OK")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
    leave_together()
