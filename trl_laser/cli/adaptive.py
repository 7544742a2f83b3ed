"""`trl-laser adaptive`: sample in rounds until a stopping rule (self-reward, free-verifier confidence or plain vote
consensus) settles each problem, and report accuracy against compute beside fixed-K voting.

trl-laser adaptive --model_name_or_path out/checkpoint-100 --dataset_name math500.jsonl --output_dir adaptive/
"""

from trl import TrlParser

from ..evaluation.adaptive import AdaptiveConfig, evaluate_adaptive, format_summary
from ..tasks.data import DatasetArguments
from . import run_on_problems


def make_parser(prog: str | None = None) -> TrlParser:
    return TrlParser((DatasetArguments, AdaptiveConfig), prog=prog, description=__doc__.split("\n\n")[0])


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    return run_on_problems(make_parser(prog), evaluate_adaptive, format_summary, argv)
