"""Stage 2 of self-rewarding correction: reinforcement learning with the rule-based reward on the LAST answer.

    accelerate launch examples/rl_self_correction.py                  # TRL GRPOTrainer on the SFT model
    accelerate launch examples/rl_self_correction.py --use_laser      # LaSeRGRPOTrainer: also trains the LaSeR score

The model (by default the output of `examples/sft_self_correction.py`) writes whole trajectories: attempt,
self-evaluation, revisions. The reward is 1 when the last final answer of the trajectory is right and 0 otherwise,
also for malformed trajectories (no answer, a verdict without answer, a loop cut by `max_completion_length`). There is
no format reward and no bonus for corrections (the method reports that such a bonus is hacked).

Every `GRPOConfig` option (with `--use_laser`, every `LaSeRConfig` option) is available on the command line. The
defaults run a few steps on a CPU in minutes.
"""

import argparse
import os
import sys
from dataclasses import dataclass, field

import torch
from datasets import Dataset
from transformers import AutoTokenizer
from trl import GRPOConfig, GRPOTrainer, TrlParser

from trl_laser.commands.correction_data import load_problems
from trl_laser.correction.format import default_format
from trl_laser.correction.rewards import make_trajectory_reward


@dataclass
class ScriptArguments:
    model_name_or_path: str = field(
        default="outputs/sft-self-correction", metadata={"help": "The stage-1 (SFT) model."}
    )
    dataset: str = field(
        default="builtin:compare",
        metadata={"help": "builtin:compare, a .jsonl file, a saved dataset directory, or a Hub dataset name."},
    )
    num_problems: int = field(default=256, metadata={"help": "Training problems to use."})
    dataset_seed: int = field(
        default=1, metadata={"help": "Seed of the built-in task (stage 1 uses 0 by default: other problems here)."}
    )
    use_laser: bool = field(
        default=False, metadata={"help": "Train with LaSeRGRPOTrainer/LaSeRConfig instead of GRPOTrainer/GRPOConfig."}
    )


def build_dataset(script_args: ScriptArguments) -> tuple[Dataset, bool]:
    """Conversational prompts in the trajectory format's wording, with the `answer` column the reward reads."""
    problems, is_math = load_problems(script_args.dataset, script_args.num_problems, seed=script_args.dataset_seed)
    fmt = default_format(is_math)
    dataset = Dataset.from_dict(
        {"prompt": [fmt.build_prompt(p["problem"]) for p in problems], "answer": [p["answer"] for p in problems]}
    )
    return dataset, is_math


def main(script_args: ScriptArguments, training_args: GRPOConfig) -> str:
    if not os.path.exists(script_args.model_name_or_path):
        sys.exit(
            f"No model at {script_args.model_name_or_path}. Run stage 1 first:\n"
            "    trl-laser correction-data --dataset builtin:compare --num_problems 32 --output data/correction\n"
            "    accelerate launch examples/sft_self_correction.py\n"
            "or pass --model_name_or_path."
        )
    tokenizer = AutoTokenizer.from_pretrained(script_args.model_name_or_path)
    dataset, is_math = build_dataset(script_args)
    reward = make_trajectory_reward(default_format(is_math), is_math, eos_token_ids=[tokenizer.eos_token_id])
    if script_args.use_laser:
        from trl_laser import LaSeRGRPOTrainer as Trainer
    else:
        Trainer = GRPOTrainer
    trainer = Trainer(
        model=script_args.model_name_or_path,
        reward_funcs=reward,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.save_model(training_args.output_dir)
    return training_args.output_dir


def make_parser(use_laser: bool) -> TrlParser:
    if use_laser:
        from trl_laser import LaSeRConfig as Config
    else:
        Config = GRPOConfig
    parser = TrlParser((ScriptArguments, Config))
    # Defaults sized for the demo: a 135M model, short trajectories, a CPU.
    parser.set_defaults(
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
    )
    return parser


def _wants_laser(argv: list[str]) -> bool:
    # The config class depends on this flag, so it is read before the full parse (same spellings as TrlParser).
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--use_laser", nargs="?", const="true", default="false")
    value = pre.parse_known_args(argv)[0].use_laser
    return str(value).lower() in ("true", "1", "yes")


if __name__ == "__main__":
    main(*make_parser(_wants_laser(sys.argv[1:])).parse_args_and_config())
