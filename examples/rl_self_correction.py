"""Stage 2 of self-rewarding correction: reinforcement learning with a rule-based reward.

    accelerate launch examples/rl_self_correction.py                  # TRL GRPOTrainer on the SFT model
    accelerate launch examples/rl_self_correction.py --use_laser      # LaSeRGRPOTrainer on attempts (LaSeR variant)
    accelerate launch examples/rl_self_correction.py --beta 0.001     # with the method's KL coefficient

Algorithm. The method trains stage 2 with PPO (verl); this script uses TRL's GRPO instead, a documented choice: the
reward is a 0/1 outcome on the whole completion, for which a group baseline of several samples per prompt replaces
PPO's learned value model (no critic to train or hold in memory), and TRL has no PPO for this setting. The KL penalty
to the starting model is `--beta` (TRL's default 0, no reference model); `PAPER_KL_COEF` is the method's value.

Verbal variant (default). The model (by default the output of `examples/sft_self_correction.py`) writes whole
trajectories: attempt, self-evaluation, revisions. The reward is 1 when the LAST final answer of the trajectory is
right and 0 otherwise, also for malformed trajectories (no answer, a verdict without answer, a loop cut by
`max_completion_length`). There is no format reward and no bonus for corrections (the method reports that such a
bonus is hacked).

LaSeR variant (`--use_laser`). The LaSeR loop reads the score at the end of each attempt, so that is where it is
trained (`trl_laser.correction.laser`): the rows are first attempts and revision turns built from the model's own
first attempts (sampled once from the starting model, `--revisions_per_problem`), each completion is one attempt,
and its reward, onto which LaSeR regresses the score after its EOS, is that attempt's own correctness. Start it from
a model whose attempts end with EOS right after the answer: the starting model (the demo's default) or one fine-tuned
on the stage-1 trajectories in the attempts format (`sft_self_correction.py --loss_mask attempts`). A model fine-tuned
on verbal trajectories writes a self-evaluation after its answer, which the loop would then generate before every
score.

Every `GRPOConfig` option (with `--use_laser`, every `LaSeRConfig` option), TRL's `ModelConfig` (`--use_peft`,
`--lora_r`, ...) and `DatasetArguments` are available on the command line or in `--config file.yaml` (`use_laser:
true` there too). Without a model and on a built-in task, the demo's defaults run a few steps on a CPU in minutes
(the model is then the output of `examples/sft_self_correction.py`); any other run starts from TRL's defaults.
"""

import argparse
import os
import sys
from dataclasses import dataclass, field

import torch
import yaml
from datasets import Dataset
from transformers import AutoTokenizer, GenerationConfig
from trl import GRPOConfig, GRPOTrainer, ModelConfig, TrlParser, get_peft_config

from trl_laser.correction import attempt_rows, make_attempt_reward, make_trajectory_reward
from trl_laser.scoring.scorer import eos_token_ids
from trl_laser.tasks import BUILTIN_PREFIX, DatasetArguments


PAPER_KL_COEF = 0.001
"""KL coefficient of the method's PPO stage (pass `--beta 0.001`); it needs a reference model in memory."""

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
        default=False,
        metadata={"help": "LaSeR variant: LaSeRGRPOTrainer/LaSeRConfig on attempts, reward = each attempt's own "
                  "correctness (else GRPOTrainer/GRPOConfig on whole trajectories, reward = last answer)."},
    )  # fmt: skip
    revisions_per_problem: int = field(
        default=1,
        metadata={"help": "With --use_laser: revision rows per problem, built from first attempts sampled from the "
                  "starting model (0: first attempts only)."},
    )  # fmt: skip


def default_model(use_laser: bool) -> str:
    """The demo's model: stage 1's SFT model for the verbal variant; the starting model for the LaSeR variant, which
    needs no verbal data, and whose attempts must end with EOS right after the answer (a model fine-tuned on verbal
    trajectories writes a self-evaluation there, which the LaSeR loop would then have to generate)."""
    if use_laser:
        from trl_laser.demo_model import demo_model_path

        return demo_model_path()
    return DEMO_MODEL


def check_model(model: str) -> None:
    """Only the demo's default path must exist locally; anything else may be a Hub id."""
    if model == DEMO_MODEL and not os.path.exists(model):
        sys.exit(
            f"No model at {model}. Run stage 1 first:\n"
            "    trl-laser correction-data --dataset_name builtin:compare --num_problems 32 --output_dir data/correction\n"
            "    accelerate launch examples/sft_self_correction.py\n"
            "or pass --model_name_or_path."
        )


def completion_eos_ids(model: str, tokenizer) -> list[int]:
    """Every id that ends a completion in TRL's generation: the tokenizer's EOS and the generation config's."""
    try:
        generation_config = GenerationConfig.from_pretrained(model)
    except OSError:  # no generation_config.json: the tokenizer's EOS alone
        generation_config = None
    return eos_token_ids(tokenizer, generation_config)


def laser_dataset(model: str, tokenizer, problems, task, training_args, revisions_per_problem: int) -> Dataset:
    """First-attempt rows and revision rows built from the starting model's own attempts (see `attempt_rows`)."""
    generator = None
    if revisions_per_problem > 0:
        from trl_laser import SelfRewardScorer

        generator = SelfRewardScorer.from_pretrained(model)
    rows = attempt_rows(
        problems, task, tokenizer, generator, revisions_per_problem,
        max_new_tokens=training_args.max_completion_length, temperature=training_args.temperature,
        seed=training_args.seed,
    )  # fmt: skip
    del generator
    return Dataset.from_list(rows)


def main(
    dataset_args: DatasetArguments,
    training_args: GRPOConfig,
    model_args: ModelConfig,
    use_laser: bool,
    revisions_per_problem: int = 1,
) -> str:
    model = model_args.model_name_or_path or default_model(use_laser)
    check_model(model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    # The prompts are the task's own (the wording the trajectories were sampled and fine-tuned with).
    problems, task = dataset_args.load(dataset_args.dataset_train_split)
    # A completion that did not end with EOS was cut by max_completion_length: its answer does not count.
    eos_ids = completion_eos_ids(model, tokenizer)
    if use_laser:
        from trl_laser import LaSeRConfig
        from trl_laser import LaSeRGRPOTrainer as Trainer

        if not isinstance(training_args, LaSeRConfig):
            raise TypeError("--use_laser needs a LaSeRConfig: build the parser with make_parser(use_laser=True).")
        dataset = laser_dataset(model, tokenizer, problems, task, training_args, revisions_per_problem)
        reward = make_attempt_reward(task, eos_token_ids=eos_ids)
    else:
        Trainer = GRPOTrainer
        dataset = problems
        reward = make_trajectory_reward(task, eos_token_ids=eos_ids)
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
    task), read before the full parse (same spellings as TrlParser; a `--config` YAML counts, the command line
    overrides it)."""
    flag = argparse.ArgumentParser(add_help=False)
    flag.add_argument("--use_laser", "--use-laser", nargs="?", const="true", default=None)
    flag.add_argument("--config", default=None)
    known = flag.parse_known_args(argv)[0]
    use_laser = known.use_laser
    if use_laser is None and known.config is not None:
        with open(known.config) as f:
            use_laser = (yaml.safe_load(f) or {}).get("use_laser", False)
    use_laser = str(use_laser).lower() in ("true", "1", "yes")
    pre = TrlParser((DatasetArguments, ModelConfig), add_help=False, allow_abbrev=False)
    dataset_args, model_args, _ = pre.parse_args_and_config(argv, return_remaining_strings=True)
    return use_laser, model_args.model_name_or_path is None and dataset_args.dataset_name.startswith(BUILTIN_PREFIX)


if __name__ == "__main__":
    use_laser, demo = _pre_parse(sys.argv[1:])
    dataset_args, training_args, model_args, script_args = make_parser(use_laser, demo).parse_args_and_config()
    main(dataset_args, training_args, model_args, script_args.use_laser, script_args.revisions_per_problem)
