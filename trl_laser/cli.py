"""The `trl-laser` command: one entry point, one subcommand per task.

trl-laser estimate-constant   measure c_ref = mean log π_ref(z_c | x, y) for a model
trl-laser evaluate            sample, self-score, vote, and plot on a dataset
trl-laser correction-data     sequential rejection sampling for self-rewarding correction
"""

import argparse
import importlib


# Each module defines `register(subparsers)`, which adds its subcommand and sets `func` on its parser.
_COMMANDS = ("estimate_constant", "evaluate", "correction_data")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trl-laser", description="LaSeR self-rewarding tools for TRL.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in _COMMANDS:
        importlib.import_module(f"trl_laser.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    raise SystemExit(main())
