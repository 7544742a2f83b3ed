"""Run by tests/test_self_reward_logging.py under torchrun with 2 CPU processes: the logged `self_reward/` metrics of
each window equal the hand computation over the completions of both processes."""

import sys

from datasets import Dataset
from process_exit import leave_together
from self_reward_records import MicroBatchRecorder, check_logged_windows
from test_self_reward_logging import logging_args, parity_reward

from trl_laser import LaSeRGRPOTrainer


def main(model_dir: str, output_dir: str):
    import pathlib

    prompts = [[{"role": "user", "content": f"What is {i} + {i % 3}?"}] for i in range(32)]
    dataset = Dataset.from_dict({"prompt": prompts})
    args = logging_args(
        pathlib.Path(output_dir), logging_steps=3, steps_per_generation=2, gradient_accumulation_steps=2, max_steps=4,
        per_device_train_batch_size=4,
    )  # fmt: skip
    trainer = LaSeRGRPOTrainer(model=model_dir, reward_funcs=parity_reward, args=args, train_dataset=dataset)
    recorder = MicroBatchRecorder(trainer)
    trainer.train()
    assert trainer.accelerator.num_processes == 2
    windows = check_logged_windows(trainer, recorder, logging_steps=3)
    if trainer.accelerator.is_main_process:
        print(f"LOGGING_CHECK_OK processes={trainer.accelerator.num_processes} windows={windows}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
    leave_together()
