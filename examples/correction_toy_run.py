"""A toy-scale run of self-rewarding correction, made only of the README's commands, with the wall time of each stage.

    python examples/correction_toy_run.py --output_dir outputs/correction-toy     # SmolLM2-135M, CPU
    python examples/correction_toy_run.py --dry_run                         # print the commands only

Stages (each one a command of the README, run in a subprocess and timed; a stage whose output exists is skipped, so
rerunning the script resumes):

1. `trl-laser correction-data`: sequential rejection sampling on training problems of the built-in task;
2. `examples/sft_self_correction.py`: SFT on those trajectories, types balanced (the method's per-type loss mask);
3. `examples/rl_self_correction.py`: GRPO on whole trajectories, reward on the last answer (verbal variant), and
   `--use_laser`: LaSeR GRPO on attempts, the score regressed onto each attempt's own correctness (LaSeR variant);
4. `trl-laser evaluate --correction ...` on the same held-out test problems: the starting model (one attempt: its
   turn-1 accuracy), the verbal loop on the verbal model, the LaSeR loop on the LaSeR model.

Writes `<output_dir>/results.json` = {"start": turn-1 accuracy of the starting model, "verbal": metrics, "laser":
metrics} (the metric dicts of `evaluate_correction`), `<output_dir>/stages.json` (wall seconds per stage and the
stage-1 counts D1 / D2 / D3), and prints a Markdown table.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time


EXAMPLES = os.path.dirname(os.path.abspath(__file__))
# Without a Hub, the starting model is the converted demo model; models without LaSeR metadata are evaluated with
# this scoring recipe (the verbal loop does not use it; `trl-laser evaluate` needs one to run).
PLAIN_RECIPE = ["--self_reward_token", "<repo_name>", "--self_reward_beta", "0.1", "--self_reward_ref_constant", "-18"]


def commands(args, start_model: str) -> list[tuple[str, list[str], str]]:
    """(stage name, command, the file that marks the stage as done)."""
    out = args.output_dir
    python = sys.executable
    task = ["--dataset_name", args.dataset_name]
    rl_common = [
        *task, "--num_problems", str(args.rl_problems), "--dataset_seed", "1", "--max_steps", str(args.rl_steps),
        "--per_device_train_batch_size", "8", "--num_generations", "4", "--max_completion_length", "48",
        "--temperature", "1.0", "--learning_rate", "5e-6", "--logging_steps", "1", "--save_strategy", "no",
        "--report_to", "none", "--gradient_checkpointing", "false", "--bf16", "false", "--beta", str(args.beta),
    ]  # fmt: skip
    evaluate = [
        python, "-m", "trl_laser", "evaluate", *task, "--num_problems", str(args.eval_problems), "--num_samples", "1",
        "--max_new_tokens", "48", "--temperature", "0",
    ]  # fmt: skip
    return [
        (
            "stage1_data",
            [
                python,
                "-m",
                "trl_laser",
                "correction-data",
                *task,
                "--model_name_or_path",
                start_model,
                "--num_problems",
                str(args.data_problems),
                "--num_attempts",
                "8",
                # The method's budget of evaluations and revisions (8 / 8 / 4): a wrong attempt becomes a D1 row only
                # with an agreeing "wrong" verdict AND a correct revision, both rare for a 135M model.
                "--num_evaluations",
                "8",
                "--num_revisions_wrong",
                "8",
                "--num_revisions_correct",
                "4",
                "--max_per_type",
                "2",
                "--max_new_tokens",
                "16",
                # A verdict after the forced "[VERIFY]" takes ~3 tokens; longer evaluations are rambling ones.
                "--evaluation_max_new_tokens",
                "8",
                "--output_dir",
                f"{out}/data",
            ],
            f"{out}/data/stats.json",
        ),  # fmt: skip
        (
            "stage1_sft",
            [
                python,
                f"{EXAMPLES}/sft_self_correction.py",
                "--dataset_path",
                f"{out}/data/dataset",
                "--output_dir",
                f"{out}/sft",
                "--num_train_epochs",
                str(args.sft_epochs),
                "--balance_types",
                "true",
            ],
            f"{out}/sft/config.json",
        ),  # fmt: skip
        (
            "stage2_rl_verbal",
            [
                python,
                f"{EXAMPLES}/rl_self_correction.py",
                "--model_name_or_path",
                f"{out}/sft",
                "--output_dir",
                f"{out}/rl-verbal",
                *rl_common,
            ],
            f"{out}/rl-verbal/config.json",
        ),  # fmt: skip
        (
            "stage2_rl_laser",
            [
                python,
                f"{EXAMPLES}/rl_self_correction.py",
                "--use_laser",
                "--model_name_or_path",
                f"{out}/sft",
                "--output_dir",
                f"{out}/rl-laser",
                "--self_reward_coef",
                "1.0",
                *rl_common,
            ],
            f"{out}/rl-laser/config.json",
        ),  # fmt: skip
        (
            "eval_start",
            [
                *evaluate,
                "--model_name_or_path",
                start_model,
                "--correction",
                "verbal",
                "--max_attempts",
                "1",
                *PLAIN_RECIPE,
                "--output_dir",
                f"{out}/eval/start",
            ],
            f"{out}/eval/start/results.json",
        ),  # fmt: skip
        (
            "eval_verbal",
            [
                *evaluate,
                "--model_name_or_path",
                f"{out}/rl-verbal",
                "--correction",
                "verbal",
                *PLAIN_RECIPE,
                "--output_dir",
                f"{out}/eval/verbal",
            ],
            f"{out}/eval/verbal/results.json",
        ),  # fmt: skip
        (
            "eval_laser",
            [
                *evaluate,
                "--model_name_or_path",
                f"{out}/rl-laser",
                "--correction",
                "laser",
                "--output_dir",
                f"{out}/eval/laser",
            ],
            f"{out}/eval/laser/results.json",
        ),  # fmt: skip
    ]


def table(results: dict) -> str:
    rows = [
        ("turn-1 accuracy", "turn1_accuracy"),
        ("final accuracy", "final_accuracy"),
        ("Δ^{i→c}", "delta_i_to_c"),
        ("Δ^{c→i}", "delta_c_to_i"),
        ("verdict accuracy, correct first attempts", "verdict_acc_correct"),
        ("verdict accuracy, incorrect first attempts", "verdict_acc_incorrect"),
        ("format broken", "format_broken_rate"),
        ("verification tokens / problem", "verification_tokens_per_problem"),
        ("verification compute tokens / problem", "verification_compute_tokens_per_problem"),
    ]
    lines = ["| | starting model | verbal loop | LaSeR loop |", "|---|---|---|---|"]
    for name, key in rows:
        start = f"{results['start']:.3f}" if key == "turn1_accuracy" else ""
        cells = [
            f"{results[m][key]:.3f}" if isinstance(results[m].get(key), float) else "" for m in ("verbal", "laser")
        ]
        lines.append(f"| {name} | {start} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="outputs/correction-toy")
    parser.add_argument("--model_name_or_path", default=None, help="Starting model (default: the demo model).")
    parser.add_argument("--dataset_name", default="builtin:compare")
    parser.add_argument("--data_problems", type=int, default=64)
    parser.add_argument("--sft_epochs", type=int, default=3)
    parser.add_argument("--rl_problems", type=int, default=256)
    parser.add_argument("--rl_steps", type=int, default=40)
    parser.add_argument("--beta", type=float, default=0.0, help="KL coefficient (the method's: 0.001).")
    parser.add_argument("--eval_problems", type=int, default=128)
    parser.add_argument("--dry_run", action="store_true")
    args = parser.parse_args(argv)
    start_model = args.model_name_or_path
    if start_model is None:
        from trl_laser.demo_model import demo_model_path

        start_model = demo_model_path()
    os.makedirs(args.output_dir, exist_ok=True)
    stages_path = os.path.join(args.output_dir, "stages.json")
    stages = json.load(open(stages_path)) if os.path.isfile(stages_path) else {}
    for name, command, done in commands(args, start_model):
        print("$ " + shlex.join(command), flush=True)
        if args.dry_run or os.path.isfile(done):
            continue
        begin = time.perf_counter()
        subprocess.run(command, check=True)
        stages[name] = {"wall_seconds": round(time.perf_counter() - begin, 1)}
        with open(stages_path, "w") as f:
            json.dump(stages, f, indent=2)
    if args.dry_run:
        return 0
    data = json.load(open(os.path.join(args.output_dir, "data", "stats.json")))
    stages["stage1_counts"] = {kind: data.get(f"kept_{kind}", 0) for kind in ("D1", "D2", "D3")}
    with open(stages_path, "w") as f:
        json.dump(stages, f, indent=2)

    def correction(name):
        return json.load(open(os.path.join(args.output_dir, "eval", name, "results.json")))["correction"]

    results = {"start": correction("start")["turn1_accuracy"], "verbal": correction("verbal"),
               "laser": correction("laser")}  # fmt: skip
    with open(os.path.join(args.output_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(stages, indent=2))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
