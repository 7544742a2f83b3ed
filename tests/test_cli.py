"""Command-line conventions: `--version`, `python -m trl_laser`, both flag spellings, YAML recipes, demo defaults."""

import argparse
import importlib
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trl_laser import __version__
from trl_laser.cli import COMMANDS, main


ROOT = Path(__file__).resolve().parent.parent


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_version_and_module_entry_point(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"trl-laser {__version__}"
    result = subprocess.run([sys.executable, "-m", "trl_laser", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0
    assert all(name in result.stdout for name in COMMANDS)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_takes_both_spellings_and_a_config_file(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "--dataset_name" in help_text and "--dataset-name" in help_text
    assert f"trl-laser {command}" in help_text


HELP = {  # each script's own parser, asked for --help
    "reproduce": lambda module: module.parse_args(["--help"]),
    "train": lambda module: module.parse_args(["--help"]),
    "rl_self_correction": lambda module: module.make_parser(use_laser=True, demo=True).parse_args(["--help"]),
    "sft_self_correction": lambda module: module.make_parser(["--help"]).parse_args(["--help"]),
}


@pytest.mark.parametrize("script", list(HELP))
def test_every_example_script_prints_its_help(script, capsys):
    # argparse %-formats each help string: a bare "%" in one field's help breaks `--help` for the whole script
    module = load_example(script)
    with pytest.raises(SystemExit) as exit_info:
        HELP[script](module)
    assert exit_info.value.code == 0
    assert "--output_dir" in capsys.readouterr().out


def test_an_unknown_option_is_an_error(capsys):
    # the score's scale is --self-reward-beta: --beta is GRPO's KL coefficient
    assert main(["evaluate", "--model_name_or_path", "m", "--output_dir", "o", "--beta", "0.1"]) == 2
    assert "['--beta', '0.1']" in capsys.readouterr().err


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda path: path.stem)
def test_recipes_run_through_the_training_script(recipe):
    text = recipe.read_text()
    # the command that runs the recipe is written at its top, with files that exist
    command = re.search(r"accelerate launch --config_file (\S+) (\S+) --config (\S+)", text)
    assert command, "the first lines must give the accelerate command"
    assert (ROOT / command.group(1)).is_file() and (ROOT / command.group(2)).is_file()
    assert command.group(3) == os.path.relpath(recipe, ROOT)
    train = load_example("train")
    # every key is a known option (bf16 and vLLM need a GPU, so they are switched off for the parse)
    dataset_args, training_args, model_args = train.parse_args(
        ["--config", str(recipe), "--bf16", "false", "--use_vllm", "false"]
    )
    values = yaml.safe_load(text)
    parsed = {**vars(dataset_args), **vars(training_args), **vars(model_args)}
    assert {key: parsed[key] for key in values if key not in ("bf16", "use_vllm")} == {
        key: value for key, value in values.items() if key not in ("bf16", "use_vllm")
    }
    assert training_args.max_steps != train.DEMO_DEFAULTS["max_steps"]  # a recipe is not the CPU demo


def test_demo_defaults_apply_to_the_demo_only():
    train = load_example("train")
    _, demo, _ = train.parse_args([])
    assert (demo.max_steps, demo.learning_rate, demo.output_dir) == (60, 1e-5, "outputs/laser-smollm2-compare")
    assert (demo.steps_per_generation, demo.self_reward_coef, demo.self_reward_beta) == (8, 0.1, 0.5)
    _, tuned, _ = train.parse_args(["--max-steps", "3", "--num_generations", "16"])
    assert (tuned.max_steps, tuned.num_generations, tuned.per_device_train_batch_size) == (3, 16, 16)
    _, own, model_args = train.parse_args(["--model-name-or-path", "Qwen/Qwen2.5-1.5B-Instruct", "--use_peft"])
    assert own.max_steps == -1 and own.learning_rate != 1e-5 and own.output_dir != demo.output_dir
    assert own.self_reward_coef == 0.1 and own.self_reward_beta == 0.1  # the paper's values (the demo's β_v is 0.5)
    assert model_args.use_peft


def readme_commands(program: str) -> list[list[str]]:
    """The arguments of every `program ...` command written in the README (continuation lines joined)."""
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        line = line.split(" # ")[0].strip()
        if program in line and not line.startswith(("#", "`")) and line.split()[0] in ("trl-laser", "accelerate"):
            commands.append(shlex.split(line[line.index(program) + len(program) :]))
    return commands


def spellings(argv: list[str]) -> list[list[str]]:
    """The command as written, with every option in snake case, and with every option in kebab case."""
    snake = ["--" + a[2:].replace("-", "_") if a.startswith("--") else a for a in argv]
    kebab = ["--" + a[2:].replace("_", "-") if a.startswith("--") else a for a in argv]
    return [argv, snake, kebab]


def test_readme_cli_commands_parse_in_both_spellings():
    commands = readme_commands("trl-laser")
    assert {argv[0] for argv in commands} == set(COMMANDS)
    for argv in commands:
        module = importlib.import_module(f"trl_laser.cli.{COMMANDS[argv[0]][0]}")
        parsed = [module.make_parser().parse_args_and_config(variant) for variant in spellings(argv[1:])]
        assert parsed[0] == parsed[1] == parsed[2]


def test_readme_training_commands_parse_in_both_spellings():
    train = load_example("train")
    commands = readme_commands("examples/train.py")
    assert len(commands) >= 3
    for argv in commands:
        # bf16 needs a GPU; the rest is parsed as written
        parsed = [train.parse_args([*variant, "--bf16", "false"]) for variant in spellings(argv)]
        assert parsed[0] == parsed[1] == parsed[2]


def test_correction_toy_run_commands_parse():
    """The hour-long toy run chains commands; an option one of them does not know must fail here, not mid-run."""
    toy = load_example("correction_toy_run")
    args = argparse.Namespace(output_dir="out", dataset_name="builtin:compare", data_problems=4, sft_epochs=1,
                              rl_problems=8, rl_steps=2, beta=0.0, eval_problems=4)  # fmt: skip
    stages = toy.commands(args, "start-model")
    assert [name for name, _, _ in stages] == [
        "stage1_data", "stage1_sft", "stage1_sft_attempts", "stage2_rl_verbal", "stage2_rl_laser", "eval_start",
        "eval_sft", "eval_verbal", "eval_laser",
    ]  # fmt: skip
    sft, rl = load_example("sft_self_correction"), load_example("rl_self_correction")
    for name, command, done in stages:
        assert done.startswith("out/")
        if command[1:3] == ["-m", "trl_laser"]:
            module = importlib.import_module(f"trl_laser.cli.{COMMANDS[command[3]][0]}")
            module.make_parser().parse_args_and_config(command[4:])
        elif command[1].endswith("sft_self_correction.py"):
            script_args, training_args, _ = sft.make_parser(command[2:]).parse_args_and_config(command[2:])
            assert script_args.balance_types and training_args.output_dir.startswith("out/")
        else:
            use_laser, demo = rl._pre_parse(command[2:])
            assert use_laser == (name == "stage2_rl_laser") and not demo
            dataset_args, training_args, model_args, _ = rl.make_parser(use_laser, demo).parse_args_and_config(
                command[2:]
            )
            assert training_args.max_steps == 2 and model_args.model_name_or_path.startswith("out/sft")
