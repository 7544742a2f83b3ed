"""An SFT warm-start on worked solutions written in code, before GRPO / LaSeR.

GRPO learns only from groups whose answers differ in reward. A small model asked for written work out of the box
often rambles past the completion limit and is rarely right (SmolLM2-135M-Instruct on `builtin:sums`: about half of
its completions never finish), so most groups hold no signal. A short supervised pass on correctly worked solutions
of the task's TRAIN split teaches the format and to stop after the answer, and leaves the arithmetic imperfect, so RL
starts from a mix of right and wrong answers. The solutions come from the task's generator (`GeneratedProblem.solution`)
and the training is TRL's `SFTTrainer` on a conversational prompt-completion dataset, whose loss covers the completion
only, so the model is taught to answer, not to repeat the prompt.
"""

import json
import os
import random
import time
from dataclasses import dataclass, field

from datasets import Dataset

from ..tasks.data import BUILTIN_PREFIX, load_problems
from ..tasks.task import TASKS


WARM_START_FILE = "warm_start.json"
"""Written last, once model and tokenizer are saved: its presence marks a finished warm-start and holds its settings."""

WARM_START_DEFAULTS = dict(
    num_train_epochs=1.0,
    learning_rate=3e-5,
    per_device_train_batch_size=16,
    # The models this is for are small: recomputing activations would only slow a CPU step down.
    gradient_checkpointing=False,
    # SFTConfig turns bf16 on by default; the runs that follow train in float32, so the warm-start does too.
    bf16=False,
    save_strategy="no",
    logging_steps=10,
    report_to="none",
)
"""SFTConfig settings sized for a 135M model on two CPU cores; `sft_overrides` replace any of them."""


@dataclass
class WarmStartArguments:
    """The SFT warm-start as command-line / YAML options (`TrlParser`); see `sft_warm_start`."""

    sft_examples: int = field(
        default=0,
        metadata={
            "help": "Worked solutions of the built-in task's train split to fine-tune on before RL (0: no warm "
            "start). 128 take SmolLM2-135M-Instruct on builtin:sums to about 40 percent right on validation, 256 "
            "to about 53 percent, nearly every answer finished within 40 tokens."
        },
    )
    sft_epochs: float = field(default=1.0, metadata={"help": "Epochs of the warm-start over its examples."})
    sft_learning_rate: float = field(default=3e-5, metadata={"help": "Learning rate of the warm-start."})
    sft_batch_size: int = field(default=16, metadata={"help": "Examples per warm-start step."})

    def __post_init__(self):
        if self.sft_examples < 0:
            raise ValueError(f"sft_examples must be 0 (no warm start) or more, got {self.sft_examples}.")

    def sft_overrides(self) -> dict:
        """These options as `SFTConfig` fields."""
        return dict(
            num_train_epochs=self.sft_epochs,
            learning_rate=self.sft_learning_rate,
            per_device_train_batch_size=self.sft_batch_size,
        )

    def run(self, model_name_or_path: str, dataset_name: str, output_dir: str, seed: int = 0) -> str:
        """The model to start RL from: `model_name_or_path` itself when `sft_examples` is 0, else the warm-started
        model in `output_dir`."""
        if self.sft_examples == 0:
            return model_name_or_path
        return sft_warm_start(
            model_name_or_path, dataset_name, output_dir, self.sft_examples, seed=seed, **self.sft_overrides()
        )


def tasks_with_solutions() -> list[str]:
    """The built-in datasets whose generator writes worked solutions."""
    return sorted(
        BUILTIN_PREFIX + task.name
        for task in TASKS.values()
        if task.sample_problem is not None and task.sample_problem(random.Random(0)).solution is not None
    )


def warm_start_dataset(dataset_name: str, num_examples: int, seed: int = 0) -> Dataset:
    """`num_examples` problems of the TRAIN split of `dataset_name`, as a conversational prompt-completion dataset:
    the task's prompt, and its worked solution as the assistant's reply."""
    name = dataset_name[len(BUILTIN_PREFIX) :] if dataset_name.startswith(BUILTIN_PREFIX) else None
    task = TASKS.get(name) if name is not None else None
    if task is None or task.sample_problem is None or task.sample_problem(random.Random(0)).solution is None:
        raise ValueError(
            f"The SFT warm-start trains on worked solutions written by a built-in task's generator, and "
            f"{dataset_name!r} has none. Use one of {', '.join(tasks_with_solutions())}, or turn the warm-start off "
            "(sft_examples 0)."
        )
    problems, _ = load_problems(dataset_name, "train", num_examples, seed=seed)
    return Dataset.from_dict(
        {
            "prompt": problems["prompt"],
            "completion": [[{"role": "assistant", "content": solution}] for solution in problems["solution"]],
        }
    )


def sft_warm_start(
    model_name_or_path: str, dataset_name: str, output_dir: str, num_examples: int, seed: int = 0, **sft_overrides
) -> str:
    """Fine-tune `model_name_or_path` on `num_examples` worked solutions of a built-in task's train split and save
    model and tokenizer to `output_dir`; return `output_dir`.

    A finished warm-start in `output_dir` made with the same settings is reused without training, so a pipeline can
    call this at every run; one made with other settings is refused rather than silently taken for this one.

    Args:
        model_name_or_path: the model to start from (a path or Hub id).
        dataset_name: `builtin:<task>` for a task whose generator writes solutions (e.g. `builtin:sums`).
        output_dir: where the warm-started model goes.
        num_examples: training problems (the train split only, so validation and test problems are never seen).
        seed: seed of the problem generator and of the training.
        sft_overrides: `SFTConfig` fields on top of `WARM_START_DEFAULTS` (`learning_rate`, `num_train_epochs`, ...).

    Raises:
        ValueError: `dataset_name` has no worked solutions, or `output_dir` holds a warm-start with other settings.
    """
    if num_examples < 1:
        raise ValueError(f"A warm-start needs at least one example, got num_examples={num_examples}.")
    sft_settings = {**WARM_START_DEFAULTS, **sft_overrides}
    settings = json.loads(
        json.dumps(
            dict(
                model_name_or_path=model_name_or_path,
                dataset_name=dataset_name,
                num_examples=num_examples,
                seed=seed,
                sft=sft_settings,
            ),
            default=str,
        )
    )
    marker = os.path.join(output_dir, WARM_START_FILE)
    if os.path.isfile(marker):
        with open(marker) as f:
            previous = json.load(f)
        if previous.get("settings") == settings:
            return output_dir
        raise ValueError(
            f"{output_dir} holds a warm-start made with other settings ({previous.get('settings')}); choose another "
            "output directory or delete it."
        )
    # Refuse an unsuitable dataset before the model is loaded.
    train_dataset = warm_start_dataset(dataset_name, num_examples, seed)

    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(**{"seed": seed, **sft_settings, "output_dir": output_dir})
    trainer = SFTTrainer(model=model_name_or_path, args=args, train_dataset=train_dataset)
    start = time.perf_counter()
    trainer.train()
    wall_time = time.perf_counter() - start
    trainer.save_model(output_dir)
    if trainer.is_world_process_zero():
        record = {"settings": settings, "train_loss": trainer.state.log_history[-1].get("train_loss")}
        record["wall_time_s"] = round(wall_time, 1)
        tmp = marker + ".tmp"
        with open(tmp, "w") as f:
            json.dump(record, f, indent=2)
        os.replace(tmp, marker)  # atomic: a warm-start cut short leaves no marker and is redone
    return output_dir
