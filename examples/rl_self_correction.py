"""Stage 2 of self-rewarding correction: reinforcement learning with the rule-based reward on the LAST answer.

    accelerate launch examples/rl_self_correction.py                  # TRL GRPOTrainer on the SFT model
    accelerate launch examples/rl_self_correction.py --use_laser      # LaSeRGRPOTrainer: also trains the LaSeR score

The model (by default the output of `examples/sft_self_correction.py`) writes whole trajectories: attempt,
self-evaluation, revisions. The reward is 1 when the last final answer of the trajectory is right and 0 otherwise,
also for malformed trajectories (no answer, a verdict without answer, a loop cut by `max_completion_length`). There is
no format reward and no bonus for corrections (the method reports that such a bonus is hacked).

Every `GRPOConfig` option (with `--use_laser`, every `LaSeRConfig` option), TRL's `ModelConfig` (`--use_peft`,
`--lora_r`, ...) and `DatasetArguments` are available on the command line or in `--config file.yaml`. Without a model
and on a built-in task, the demo's defaults run a few steps on a CPU in minutes (the model is then the output of
`examples/sft_self_correction.py`); any other run starts from TRL's defaults.
"""

import argparse
import os
import sys
from dataclasses import dataclass, field

import torch
from transformers import AutoTokenizer, GenerationConfig
from trl import GRPOConfig, GRPOTrainer, ModelConfig, TrlParser, get_peft_config

from trl_laser.correction import make_trajectory_reward
from trl_laser.scoring.scorer import eos_token_ids
from trl_laser.tasks import DatasetArguments


DEMO_MODEL = "outputs/sft-self-correction"
DEMO_DEFAULTS = dict(
    output_dir="outputs/rl-self-correction",
    max_steps=10,
    per_device_train_batch_size=8,
    num_generations=4,
    max_completion_length=64,
    temperature=1.0,
    learning_rate=5e-6,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    gradient_checkpointing=False,
    bf16=torch.cuda.is_available(),
    num_problems=256,
    # stage 1 samples its problems with seed 0: other problems here
    dataset_seed=1,
)


@dataclass
class ScriptArguments:
    use_laser: bool = field(
        default=False, metadata={"help": "Train with LaSeRGRPOTrainer/LaSeRConfig instead of GRPOTrainer/GRPOConfig."}
    )


def main(dataset_args: DatasetArguments, training_args: GRPOConfig, model_args: ModelConfig, use_laser: bool) -> str:
    model = model_args.model_name_or_path or DEMO_MODEL
    if not os.path.exists(model) and model == DEMO_MODEL:
        sys.exit(
            f"No model at {model}. Run stage 1 first:\n"
            "    trl-laser correction-data --dataset_name builtin:compare --num_problems 32 --output_dir data/correction\n"
            "    accelerate launch examples/sft_self_correction.py\n"
            "or pass --model_name_or_path."
        )
    tokenizer = AutoTokenizer.from_pretrained(model)
    # The prompts are the task's own (the wording the trajectories were sampled and fine-tuned with).
    dataset, task = dataset_args.load(dataset_args.dataset_train_split)
    try:
        generation_config = GenerationConfig.from_pretrained(model)
    except OSError:  # no generation_config.json: the tokenizer's EOS alone
        generation_config = None
    # A trajectory that did not end with EOS was cut by max_completion_length: its last answer does not count.
    reward = make_trajectory_reward(task, eos_token_ids=eos_token_ids(tokenizer, generation_config))
    if use_laser:
        from trl_laser import LaSeRGRPOTrainer as Trainer
    else:
        Trainer = GRPOTrainer
    trainer = Trainer(
        model=model,
        reward_funcs=reward,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    trainer.train()
    trainer.save_model(training_args.output_dir)
    return training_args.output_dir


def make_parser(use_laser: bool, demo: bool) -> TrlParser:
    if use_laser:
        from trl_laser import LaSeRConfig as Config
    else:
        Config = GRPOConfig
    parser = TrlParser((DatasetArguments, Config, ModelConfig, ScriptArguments))
    if demo:
        parser.set_defaults(**DEMO_DEFAULTS)
    return parser


def _pre_parse(argv: list[str]) -> tuple[bool, bool]:
    """Whether `--use_laser` is on (it decides the config class) and whether this is the demo (no model, a built-in
    task), read before the full parse (same spellings as TrlParser)."""
    flag = argparse.ArgumentParser(add_help=False)
    flag.add_argument("--use_laser", "--use-laser", nargs="?", const="true", default="false")
    use_laser = str(flag.parse_known_args(argv)[0].use_laser).lower() in ("true", "1", "yes")
    pre = TrlParser((DatasetArguments, ModelConfig), add_help=False, allow_abbrev=False)
    dataset_args, model_args, _ = pre.parse_args_and_config(argv, return_remaining_strings=True)
    return use_laser, model_args.model_name_or_path is None and dataset_args.dataset_name.startswith("builtin:")


if __name__ == "__main__":
    use_laser, demo = _pre_parse(sys.argv[1:])
    dataset_args, training_args, model_args, script_args = make_parser(use_laser, demo).parse_args_and_config()
    main(dataset_args, training_args, model_args, script_args.use_laser)
