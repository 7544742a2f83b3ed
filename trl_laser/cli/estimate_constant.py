"""`trl-laser estimate-constant`: measure c_ref = mean log π_ref(z_c | x, y) over a model's own completions.

trl-laser estimate-constant --model_name_or_path Qwen/Qwen2.5-7B --dataset_name data.jsonl --num_problems 64
"""

import json
from dataclasses import dataclass, field

from trl import TrlParser

from ..tasks.data import DatasetArguments
from . import report_error


@dataclass
class EstimateConstantArguments:
    model_name_or_path: str = field(metadata={"help": "Model path or Hub id (the reference model)."})
    self_reward_token: str = field(default="auto", metadata={"help": "Self-reward token (string or id), or 'auto'."})
    num_samples: int = field(default=4, metadata={"help": "Completions per prompt."})
    max_new_tokens: int = field(default=256, metadata={"help": "Token limit of a completion."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    batch_size: int = field(default=8, metadata={"help": "Sequences per generation batch."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    output_file: str | None = field(default=None, metadata={"help": "Write the result as JSON to this file."})

    def __post_init__(self):
        for name in ("num_samples", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}.")
        if not self.temperature > 0:
            raise ValueError(
                f"--temperature must be > 0 (c_ref is measured on sampled completions), got {self.temperature}."
            )


def make_parser(prog: str | None = None) -> TrlParser:
    parser = TrlParser((DatasetArguments, EstimateConstantArguments), prog=prog, description=__doc__.split("\n\n")[0])
    parser.set_defaults(num_problems=64)
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    from ..core.model_path import check_model_path
    from ..scoring.reference_constant import estimate_reference_constant
    from ..scoring.scorer import load_pretrained

    parser = make_parser(prog)
    # Everything that can be wrong with the input is reported before the model is loaded.
    try:
        dataset_args, args = parser.parse_args_and_config(argv)
        check_model_path(args.model_name_or_path)
        if dataset_args.num_problems is not None and dataset_args.num_problems < 1:
            raise ValueError(f"--num_problems must be >= 1, got {dataset_args.num_problems}.")
        problems, _ = dataset_args.load(dataset_args.dataset_train_split, require_answers=False)
        if len(problems) == 0:
            raise ValueError(f"The dataset {dataset_args.dataset_name!r} has no problems in this split.")
    except (ValueError, OSError) as error:
        return report_error(parser.prog, error)
    model, tokenizer = load_pretrained(args.model_name_or_path)
    result = estimate_reference_constant(
        model,
        tokenizer,
        problems["prompt"],
        token=args.self_reward_token,
        num_samples=args.num_samples,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    print(
        f"c_ref = {result.mean:.4f} ± {result.std:.4f} for token {result.token!r} (id {result.token_id}), over "
        f"{result.num_completions} finished completions ({result.num_unfinished} unfinished left out).\n"
        f"Train with: --self_reward_token {result.token_id} --self_reward_ref_constant {result.mean:.4f}"
    )
    if args.output_file:
        with open(args.output_file, "w") as f:
            json.dump(result.to_dict(), f, indent=2)
    return 0
