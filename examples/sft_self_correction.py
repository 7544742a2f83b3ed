"""Stage 1 training of self-rewarding correction: supervised fine-tuning on the rejection-sampled trajectories.

    trl-laser correction-data --dataset_name builtin:compare --num_problems 32 --output_dir data/correction
    accelerate launch examples/sft_self_correction.py            # or: python examples/sft_self_correction.py

Plain TRL `SFTTrainer`; every `SFTConfig` option and TRL's `ModelConfig` (`--use_peft`, `--lora_r`, ...) are
available on the command line (or in `--config file.yaml`). Without `--model_name_or_path` the demo's defaults
fine-tune the SmolLM2-135M demo model on a CPU in a few minutes; with a model of your own, TRL's defaults apply.

The loss follows the method's per-type masking (`--loss_mask paper`): each row's `masked_prefix` (written by
`correction-data`) becomes part of the prompt, so D1 trains the verdict and the revision, D2 only the revision (its
"wrong" verdict on a correct answer is forced and must not be learned), D3 the first attempt and its verdict.
`--loss_mask full` trains on the whole trajectory instead. `--loss_mask attempts` makes the LaSeR variant's data from
the same trajectories: each correct attempt is a completion of its own, in the context the LaSeR loop generates it
in, and no verdict is trained (that loop writes the verdict itself, from the score). `--balance_types` subsamples the
rows so that every type has as many as the rarest one (the method's data is roughly balanced).
"""

import json
import os
import sys
from dataclasses import dataclass, field

import torch
from datasets import Dataset, load_from_disk
from transformers import AutoTokenizer
from trl import ModelConfig, SFTConfig, SFTTrainer, TrlParser, get_peft_config

from trl_laser.correction import CorrectionFormat, balance_types, trajectory_attempts
from trl_laser.correction.rejection_sampling import CONFIG_FILE
from trl_laser.tasks.task import get_task


@dataclass
class ScriptArguments:
    dataset_path: str = field(
        default="data/correction/dataset",
        metadata={"help": "The `dataset/` directory written by `trl-laser correction-data`."},
    )
    loss_mask: str = field(
        default="paper",
        metadata={
            "help": "'paper': per-type masking of the method; 'full': train on the whole trajectory; "
            "'attempts': the LaSeR variant's data, every correct attempt as its own completion in the LaSeR "
            "loop's context, no verdict trained."
        },  # fmt: skip
    )
    balance_types: bool = field(
        default=False,
        metadata={"help": "Subsample every trajectory type (D1 / D2 / D3) to the count of the rarest one, as the "
                  "method's roughly balanced data. Useful when stage 1 kept few D1 rows."},
    )  # fmt: skip


def to_prompt_completion(row: dict, tokenizer) -> dict:
    """Text prompt/completion whose boundary is the row's `masked_prefix`: TRL trains on the completion only."""
    prompt = tokenizer.apply_chat_template(row["messages"][:-1], tokenize=False, add_generation_prompt=True)
    trajectory = row["messages"][-1]["content"]
    masked = row["masked_prefix"]
    if not trajectory.startswith(masked):
        raise ValueError(f"masked_prefix is not a prefix of the trajectory of problem {row['problem_id']}.")
    # TRL appends the EOS token to a text completion, which ends the assistant turn as the chat template would.
    return {"prompt": prompt + masked, "completion": trajectory[len(masked) :]}


def correction_format(dataset_path: str) -> CorrectionFormat:
    """The trajectory format of the task `correction-data` ran (its config.json sits next to `dataset/`)."""
    config = os.path.join(os.path.dirname(os.path.abspath(dataset_path)), CONFIG_FILE)
    if os.path.isfile(config):
        with open(config) as f:
            return get_task(json.load(f)["task"]).correction
    return CorrectionFormat()


def prepare_dataset(dataset, tokenizer, loss_mask: str, balance: bool = False, seed: int = 0, fmt=None):
    if balance:
        dataset = dataset.select(balance_types(dataset["type"], seed))
    if loss_mask == "attempts":
        fmt = fmt or CorrectionFormat()
        return Dataset.from_list([example for row in dataset for example in trajectory_attempts(row, tokenizer, fmt)])
    if loss_mask == "paper":
        return dataset.map(
            to_prompt_completion, fn_kwargs={"tokenizer": tokenizer}, remove_columns=dataset.column_names
        )
    if loss_mask == "full":
        return dataset.select_columns(["messages"])
    raise ValueError(f"loss_mask must be 'paper', 'full' or 'attempts', got {loss_mask!r}.")


def main(script_args: ScriptArguments, training_args: SFTConfig, model_args: ModelConfig) -> str:
    if not os.path.isdir(script_args.dataset_path):
        sys.exit(
            f"No dataset at {script_args.dataset_path}. Make it with:\n"
            "    trl-laser correction-data --dataset_name builtin:compare --num_problems 32 --output_dir data/correction\n"
            "or pass --dataset_path <output_dir>/dataset."
        )
    model = model_args.model_name_or_path
    if model is None:
        from trl_laser.demo_model import demo_model_path

        model = demo_model_path()
    tokenizer = AutoTokenizer.from_pretrained(model)
    dataset = load_from_disk(script_args.dataset_path)
    dataset = prepare_dataset(
        dataset, tokenizer, script_args.loss_mask, script_args.balance_types, training_args.seed,
        correction_format(script_args.dataset_path),
    )  # fmt: skip
    if not len(dataset):
        sys.exit(f"No rows to train on in {script_args.dataset_path}.")
    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    trainer.train()
    trainer.save_model(training_args.output_dir)
    return training_args.output_dir


DEMO_DEFAULTS = dict(
    output_dir="outputs/sft-self-correction",
    num_train_epochs=3,
    per_device_train_batch_size=8,
    learning_rate=5e-5,
    lr_scheduler_type="constant",
    max_length=512,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    gradient_checkpointing=False,
    bf16=torch.cuda.is_available(),
)
"""Sized for the demo: a 135M model, a few dozen short trajectories, a CPU."""


def make_parser(argv: list[str]) -> TrlParser:
    parser = TrlParser((ScriptArguments, SFTConfig, ModelConfig))
    # The demo's defaults apply only to the demo model: read the model field before the full parse.
    pre = TrlParser((ModelConfig,), add_help=False, allow_abbrev=False)
    if pre.parse_args_and_config(argv, return_remaining_strings=True)[0].model_name_or_path is None:
        parser.set_defaults(**DEMO_DEFAULTS)
    return parser


if __name__ == "__main__":
    main(*make_parser(sys.argv[1:]).parse_args_and_config())
