"""The `trl-laser` command (also `python -m trl_laser`): one subcommand per tool.

    trl-laser estimate-constant   measure c_ref = mean log π_ref(z_c | x, y) for a model
    trl-laser evaluate            sample, self-score, vote, and plot on a dataset
    trl-laser adaptive            sample until a stopping rule settles each problem: accuracy against compute
    trl-laser correction-data     sequential rejection sampling for self-rewarding correction

Each subcommand parses its dataclasses with TRL's `TrlParser` (`--x-y` and `--x_y` alike, `--config file.yaml`)
and calls the library; `trl-laser COMMAND --help` lists its options.
"""

import argparse
import importlib
import logging
import sys


# name -> (module in trl_laser.cli, one-line help); modules are imported only for the command that runs.
COMMANDS = {
    "estimate-constant": ("estimate_constant", "measure the reference constant c_ref for a model"),
    "evaluate": ("evaluate", "sample solutions, score them with the model's self-reward, vote, and plot"),
    "adaptive": ("adaptive", "sample in rounds until the self-reward (or confidence) says stop; accuracy vs compute"),
    "correction-data": ("correction_data", "sequential rejection sampling of self-correction trajectories"),
}


def main(argv: list[str] | None = None) -> int:
    from .._version import __version__

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="trl-laser", description="LaSeR self-rewarding tools for TRL.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        subparsers.add_parser(name, help=help_text, add_help=False)
    args, _ = parser.parse_known_args(argv)
    logging.basicConfig(format="%(message)s")
    logging.getLogger("trl_laser").setLevel(logging.INFO)
    module = importlib.import_module(f"{__name__}.{COMMANDS[args.command][0]}")
    return module.main(argv[argv.index(args.command) + 1 :], prog=f"trl-laser {args.command}")


def report_error(prog: str, error: Exception) -> int:
    """Print an input error the way argparse does, and return its exit status."""
    print(f"{prog}: error: {error}", file=sys.stderr)
    return 2


def run_on_problems(parser, run, summary, argv: list[str] | None = None) -> int:
    """The body of a command that samples a model on a dataset's problems and writes a report (`evaluate`,
    `adaptive`): parse the `(DatasetArguments, config)` of `parser`, report everything that can be wrong with the
    input (the model path, the data, the scoring recipe, the report directory) before the model is loaded, then
    `run(config, problems, task, recipe, dataset_name=...)` and print `summary(results, output_dir)`."""
    from ..core.model_path import check_model_path
    from ..evaluation.evaluate import make_output_dir

    try:
        dataset_args, config = parser.parse_args_and_config(argv)
        check_model_path(config.model_name_or_path)
        problems, task = dataset_args.load(dataset_args.dataset_test_split)
        recipe = config.self_reward_config()
        make_output_dir(config.output_dir)
    except (ValueError, OSError) as error:
        return report_error(parser.prog, error)
    results = run(config, problems, task, recipe, dataset_name=dataset_args.dataset_name)
    print(summary(results, config.output_dir))
    return 0
