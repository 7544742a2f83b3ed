"""`trl-laser evaluate`: sample K solutions per problem, self-score them, vote, and report with plots.

trl-laser evaluate --model_name_or_path out/checkpoint-100 --dataset_name math500.jsonl --output_dir report/
"""

from trl import TrlParser

from ..evaluation.evaluate import EvaluationConfig, evaluate, format_summary
from ..tasks.data import DatasetArguments
from . import run_on_problems


def make_parser(prog: str | None = None) -> TrlParser:
    parser = TrlParser((DatasetArguments, EvaluationConfig), prog=prog, description=__doc__.split("\n\n")[0])
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    return run_on_problems(make_parser(prog), evaluate, format_summary, argv)
