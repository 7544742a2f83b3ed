"""`trl-laser correction-data`: stage 1 of self-rewarding correction (sequential rejection sampling).

    trl-laser correction-data --dataset_name builtin:compare --num_problems 32 --output_dir data/correction

writes `trajectories.jsonl`, `problems.jsonl`, `stats.json` and a `dataset/` directory (`datasets.save_to_disk`, with
a `messages` column) that `examples/sft_self_correction.py` trains on. Rerun the same command to resume.
"""

import json
from dataclasses import dataclass, field
from typing import Literal

from trl import TrlParser

from ..correction.rejection_sampling import RejectionSamplingConfig
from ..tasks.data import DatasetArguments
from . import report_error


@dataclass
class CorrectionDataArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Model path or Hub id (default: the SmolLM2-135M-Instruct demo model)."}
    )
    output_dir: str = field(default="data/correction", metadata={"help": "Output directory (resumable)."})
    backend: Literal["transformers", "vllm"] = field(
        default="transformers", metadata={"help": "Generation backend ('vllm' needs a GPU)."}
    )


def make_parser(prog: str | None = None) -> TrlParser:
    dataclass_types = (CorrectionDataArguments, DatasetArguments, RejectionSamplingConfig)
    parser = TrlParser(dataclass_types, prog=prog, description=__doc__.split("\n\n")[0])
    parser.set_defaults(num_problems=64)
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    from ..core.model_path import check_model_path
    from ..correction.rejection_sampling import run_rejection_sampling
    from ..scoring.scorer import SelfRewardScorer

    parser = make_parser(prog)
    try:
        args, dataset_args, config = parser.parse_args_and_config(argv)
        if args.model_name_or_path is not None:
            check_model_path(args.model_name_or_path)
        problems, task = dataset_args.load(dataset_args.dataset_train_split)
    except (ValueError, OSError) as error:
        return report_error(parser.prog, error)
    model = args.model_name_or_path
    if model is None:
        from ..demo_model import demo_model_path

        model = demo_model_path()
    vllm_kwargs = {"seed": config.seed} if args.backend == "vllm" else {}
    generator = SelfRewardScorer.from_pretrained(model, backend=args.backend, **vllm_kwargs)
    stats = run_rejection_sampling(problems, generator, args.output_dir, task, config)
    print(json.dumps(stats, indent=2))
    print(
        f"Kept {stats['kept_total']} trajectories in {args.output_dir} (D1 {stats.get('kept_D1', 0)}, "
        f"D2 {stats.get('kept_D2', 0)}, D3 {stats.get('kept_D3', 0)})."
    )
    return 0
