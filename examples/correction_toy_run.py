"""A toy-scale run of self-rewarding correction, made only of the README's commands, with the wall time of each stage.

    python examples/correction_toy_run.py --output_dir outputs/correction-toy     # SmolLM2-135M, CPU
    python examples/correction_toy_run.py --dry_run                         # print the commands only
    python examples/correction_toy_run.py --report_dir docs/correction      # also copy the report there

Stages (each one a command of the README, run in a subprocess and timed; a stage whose output exists is skipped, so
rerunning the script resumes):

1. `trl-laser correction-data`: sequential rejection sampling on training problems of the built-in task;
2. `examples/sft_self_correction.py`: SFT on those trajectories, types balanced: with the method's per-type loss
   mask (verbal variant), and with `--loss_mask attempts`, the same data as attempts without verdicts (LaSeR variant);
3. `examples/rl_self_correction.py`: GRPO from the verbal SFT model on whole trajectories, reward on the last answer
   (verbal variant), and `--use_laser`: LaSeR GRPO from the attempts SFT model on attempts (first attempts and
   revisions of its own attempts), the score regressed onto each attempt's own correctness (LaSeR variant);
4. `trl-laser evaluate --correction ...` on the same held-out test problems: the starting model (one attempt: its
   turn-1 accuracy), the SFT model (verbal loop: what stage 1 alone did), the verbal loop on the verbal model, the
   LaSeR loop on the LaSeR model.

Writes `<output_dir>/results.json` = {"start": turn-1 accuracy of the starting model, "verbal": metrics, "laser":
metrics} (the metric dicts of `evaluate_correction`), `<output_dir>/stages.json` (wall seconds per stage, the
stage-1 counts D1 / D2 / D3 and the SFT model's verbal-loop metrics), and prints a Markdown table.
"""

import argparse
import json
import os
import shlex
import shutil
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

    def sft(name: str, output: str, *extra: str):
        command = [
            python, f"{EXAMPLES}/sft_self_correction.py", "--dataset_path", f"{out}/data/dataset",
            "--output_dir", output, "--num_train_epochs", str(args.sft_epochs), "--balance_types", "true", *extra,
        ]  # fmt: skip
        return name, command, f"{output}/training_args.bin"  # saved last by `Trainer.save_model`

    def rl(name: str, model: str, output: str, *extra: str):
        # The CPU demo's batch recipe (examples/train.py): 16 prompts x 8 samples per generation, learning rate
        # decaying to 0. Each variant sets its own completion length.
        command = [
            python, f"{EXAMPLES}/rl_self_correction.py", "--model_name_or_path", model, "--output_dir", output, *extra,
            *task, "--num_problems", str(args.rl_problems), "--dataset_seed", "1",
            "--max_steps", str(args.rl_steps), "--per_device_train_batch_size", "16", "--num_generations", "8",
            "--steps_per_generation", "8", "--temperature", "1.0", "--learning_rate", "1e-5",
            "--lr_scheduler_type", "cosine", "--logging_steps", "5", "--save_strategy", "no", "--report_to", "none",
            "--gradient_checkpointing", "false", "--bf16", "false", "--beta", str(args.beta),
        ]  # fmt: skip
        return name, command, f"{output}/training_args.bin"

    def evaluation(name: str, model: str, *extra: str):
        output = f"{out}/eval/{name}"
        command = [
            python, "-m", "trl_laser", "evaluate", *task, "--num_problems", str(args.eval_problems),
            "--num_samples", "1", "--max_new_tokens", "48", "--temperature", "0", "--model_name_or_path", model,
            *extra, "--output_dir", output,
        ]  # fmt: skip
        return f"eval_{name}", command, f"{output}/results.json"

    stage1_data = [
        python, "-m", "trl_laser", "correction-data", *task, "--model_name_or_path", start_model,
        "--num_problems", str(args.data_problems), "--num_attempts", "8",
        # The method's budget of evaluations and revisions (8 / 8 / 4): a wrong attempt becomes a D1 row only with an
        # agreeing "wrong" verdict AND a correct revision, both rare for a 135M model.
        "--num_evaluations", "8", "--num_revisions_wrong", "8", "--num_revisions_correct", "4", "--max_per_type", "2",
        "--max_new_tokens", "16",
        # A verdict after the forced "[VERIFY]" takes ~3 tokens; longer evaluations are rambling ones.
        "--evaluation_max_new_tokens", "8", "--output_dir", f"{out}/data",
    ]  # fmt: skip
    return [
        ("stage1_data", stage1_data, f"{out}/data/stats.json"),
        sft("stage1_sft", f"{out}/sft"),
        # The same trajectories in the LaSeR variant's format: correct attempts only, each in the LaSeR loop's
        # context, no verdict trained (the loop writes it from the score).
        sft("stage1_sft_attempts", f"{out}/sft-attempts", "--loss_mask", "attempts"),
        rl("stage2_rl_verbal", f"{out}/sft", f"{out}/rl-verbal", "--max_completion_length", "48"),
        # LaSeR from the attempts-format SFT model: the verbal SFT model writes a self-evaluation after each answer,
        # which the LaSeR loop would then generate before the EOS where the score is read. The CPU demo's LaSeR
        # recipe before its α was lowered to 0.1: α 1, β_v 0.5 (the README's toy-run numbers were measured with it),
        # answers of at most 16 tokens.
        rl(
            "stage2_rl_laser",
            f"{out}/sft-attempts",
            f"{out}/rl-laser",
            "--use_laser",
            "--self_reward_coef",
            "1.0",
            "--self_reward_beta",
            "0.5",
            "--max_completion_length",
            "16",
        ),  # fmt: skip
        evaluation("start", start_model, "--correction", "verbal", "--max_attempts", "1", *PLAIN_RECIPE),
        # Not in results.json: shows what SFT alone did to turn-1 accuracy and to the verdicts.
        evaluation("sft", f"{out}/sft", "--correction", "verbal", *PLAIN_RECIPE),
        evaluation("verbal", f"{out}/rl-verbal", "--correction", "verbal", *PLAIN_RECIPE),
        evaluation("laser", f"{out}/rl-laser", "--correction", "laser"),
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
    parser.add_argument("--rl_steps", type=int, default=60)
    parser.add_argument("--beta", type=float, default=0.0, help="KL coefficient (the method's: 0.001).")
    parser.add_argument("--eval_problems", type=int, default=128)
    parser.add_argument(
        "--report_dir", default=None, help="Also copy results.json, results.md and stages.json here (e.g. to commit)."
    )
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

    def correction(name):
        return json.load(open(os.path.join(args.output_dir, "eval", name, "results.json")))["correction"]

    data = json.load(open(os.path.join(args.output_dir, "data", "stats.json")))
    stages["stage1_counts"] = {kind: data.get(f"kept_{kind}", 0) for kind in ("D1", "D2", "D3")}
    stages["sft_verbal_loop"] = correction("sft")
    with open(stages_path, "w") as f:
        json.dump(stages, f, indent=2)
    results = {"start": correction("start")["turn1_accuracy"], "verbal": correction("verbal"),
               "laser": correction("laser")}  # fmt: skip
    with open(os.path.join(args.output_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(args.output_dir, "results.md"), "w") as f:
        f.write(table(results) + "\n")
    if args.report_dir is not None:
        os.makedirs(args.report_dir, exist_ok=True)
        for name in ("results.json", "results.md", "stages.json"):
            shutil.copy(os.path.join(args.output_dir, name), os.path.join(args.report_dir, name))
    print(json.dumps(stages, indent=2))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
