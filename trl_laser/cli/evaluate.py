"""`trl-laser evaluate`: sample K solutions per problem, self-score them, vote, and report with plots.

trl-laser evaluate --model_name_or_path out/checkpoint-100 --dataset_name math500.jsonl --output_dir report/
"""

from trl import TrlParser

from ..evaluation.evaluate import EvaluationConfig, evaluate, format_summary
from ..tasks.data import DatasetArguments
from . import report_error


def make_parser(prog: str | None = None) -> TrlParser:
    parser = TrlParser((DatasetArguments, EvaluationConfig), prog=prog, description=__doc__.split("\n\n")[0])
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    from ..core.model_path import check_model_path

    parser = make_parser(prog)
    # Everything that can be wrong with the input is reported before the model is loaded.
    try:
        dataset_args, config = parser.parse_args_and_config(argv)
        check_model_path(config.model_name_or_path)
        problems, task = dataset_args.load(dataset_args.dataset_test_split)
        recipe = config.self_reward_config()
    except (ValueError, OSError) as error:
        return report_error(parser.prog, error)
    results = evaluate(config, problems, task, recipe, dataset_name=dataset_args.dataset_name)
    print(format_summary(results, config.output_dir))
    return 0
