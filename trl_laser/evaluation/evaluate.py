"""Evaluate a model on problems: sample K solutions each (with their self-reward), grade, vote, measure, and plot.

Writes into `output_dir`: `results.json` (accuracy, self-verification metrics, maj@k / weighted@k / best-of-k /
pass@k curves, and the same measures for the free verifiers a model has without training one: its token
confidence, self-certainty, the agreement of its samples, answer length), `samples.jsonl` (one line per sampled
solution) and four PNG plots.
"""

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..core.recipe import SelfRewardConfig, resolve_self_reward_config
from ..core.self_reward import CORRECT_THRESHOLD
from ..tasks.task import Task
from .free_verifiers import free_verifier_report, sample_verifiers
from .metrics import verification_report
from .plots import plot_all
from .voting import aggregation_curves, group_answers


@dataclass
class ModelReportArguments:
    """The model to sample, where its report goes, and the scoring recipe's overrides: shared by `trl-laser evaluate`
    and `trl-laser adaptive`."""

    model_name_or_path: str = field(metadata={"help": "Model directory (a LaSeR checkpoint) or id."})
    output_dir: str = field(metadata={"help": "Report directory."})
    self_reward_token: str | None = field(
        default=None, metadata={"help": "Self-reward token z_c, string or id (overrides the checkpoint's metadata)."}
    )
    self_reward_beta: float | None = field(
        default=None, metadata={"help": "β_v, the scale of the score (overrides the checkpoint's metadata)."}
    )
    self_reward_ref_constant: float | None = field(
        default=None, metadata={"help": "c_ref of the score (overrides the checkpoint's metadata)."}
    )

    def local_model_directory(self) -> str | None:
        """`model_name_or_path` when it is a local directory (whose scoring metadata is read), None for a Hub id; a
        ValueError when it is a file."""
        if os.path.isdir(self.model_name_or_path):
            return self.model_name_or_path
        if os.path.exists(self.model_name_or_path):
            raise ValueError(f"{self.model_name_or_path!r} is a file; pass the model directory.")
        return None

    def self_reward_config(self) -> SelfRewardConfig:
        """The scoring recipe: the checkpoint's metadata (local directories), with the values given here replacing
        the saved ones. Raises before any model is loaded when something is missing."""
        return resolve_self_reward_config(
            self.local_model_directory(),
            self.self_reward_token,
            self.self_reward_beta,
            self.self_reward_ref_constant,
        )


@dataclass
class EvaluationConfig(ModelReportArguments):
    """Settings of `evaluate` (and of `trl-laser evaluate`)."""

    num_samples: int = field(default=8, metadata={"help": "Solutions sampled per problem (K)."})
    max_new_tokens: int = field(default=512, metadata={"help": "Token limit of a solution."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (0: greedy)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold."})
    batch_size: int = field(default=16, metadata={"help": "Sequences per generation batch."})
    seed: int = field(default=0, metadata={"help": "Seed of sampling and of the voting subsets."})
    num_subsets: int = field(default=32, metadata={"help": "Random subsets per k for the voting curves."})
    backend: Literal["transformers", "vllm"] = field(
        default="transformers", metadata={"help": "Generation backend ('vllm' needs a GPU)."}
    )
    correction: Literal["none", "verbal", "laser"] = field(
        default="none", metadata={"help": "Also evaluate self-correction (attempt, verify, retry) with this loop."}
    )
    max_attempts: int = field(default=2, metadata={"help": "Attempts per problem with --correction."})
    correction_threshold: float = field(
        default=CORRECT_THRESHOLD,
        metadata={"help": "With --correction laser: revise when the self-reward is at most this."},
    )

    def __post_init__(self):
        checks = [
            (self.num_samples >= 1, f"num_samples must be at least 1, got {self.num_samples}."),
            (self.max_attempts >= 1, f"max_attempts must be at least 1, got {self.max_attempts}."),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def make_output_dir(path: str) -> str:
    """Create the report directory (with its parents); a ValueError when `path` is a file."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--output_dir {path!r} is a file; pass a directory (it is created when missing).")
    os.makedirs(path, exist_ok=True)
    return path


def json_safe(value):
    """NaN and inf become null (JSON has no NaN); dict keys become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def roc_inputs(
    scores: Sequence[Sequence[float | None]],
    correct: Sequence[Sequence[bool]],
    finished: Sequence[Sequence[bool]],
    verifiers: Sequence[Sequence[dict[str, float]]],
) -> dict[str, tuple[list, list]]:
    """(scores, labels) of r_s and of every free verifier over the same samples (the finished ones), per name."""
    inputs: dict[str, tuple[list, list]] = {"r_s": ([], [])}
    for problem in zip(scores, correct, finished, verifiers, strict=True):
        for score, label, done, values in zip(*problem, strict=True):
            if not done:
                continue
            inputs["r_s"][0].append(score)
            inputs["r_s"][1].append(label)
            for name, value in values.items():
                inputs.setdefault(name, ([], []))
                inputs[name][0].append(value)
                inputs[name][1].append(label)
    return inputs


def evaluate_samples(
    problems: Sequence[dict], samples, task: Task, num_subsets: int = 32, seed: int = 0, output_dir: str | None = None
) -> dict:
    """Grade, vote and measure the `samples` (one `GeneratedSamples` per problem row); write `samples.jsonl` and the
    plots into `output_dir` when given. A problem whose reference answer cannot be read is left out of the metrics.
    r_s and every free verifier (`free_verifiers`) are measured on the same samples."""
    groups, scores, correct, finished, verifiers, lines = [], [], [], [], [], []
    ungradable = 0
    for sample in samples:
        sample.require_scores("Self-reward weighted voting and best-of-N")
    for index, (problem, sample) in enumerate(zip(problems, samples, strict=True)):
        labels = [task.check(text, problem["answer"]) for text in sample.texts]
        answers = [task.extract_answer(text) for text in sample.texts]
        problem_groups = group_answers(answers, task.same_answer)
        values = sample_verifiers(
            problem_groups, [c.verifiers for c in sample.completions], [c.num_tokens for c in sample.completions]
        )
        if None in labels:
            labels = [None] * len(labels)
            ungradable += 1
        else:
            groups.append(problem_groups)
            scores.append(sample.scores)
            correct.append(labels)
            finished.append(sample.finished)
            verifiers.append(values)
        for j, completion in enumerate(sample.completions):
            lines.append(
                {
                    "problem_index": index,
                    "sample_index": j,
                    "problem": problem["problem"],
                    "reference": problem["answer"],
                    "completion": completion.text,
                    "answer": answers[j],
                    "correct": labels[j],
                    "score": completion.score,
                    "finished": completion.finished,
                    "num_tokens": completion.num_tokens,
                    "verifiers": values[j],
                }
            )

    flat_scores = [s for row in scores for s in row]
    flat_labels = [c for row in correct for c in row]
    num = len(samples[0].completions) if samples else 0
    verification = verification_report(flat_scores, flat_labels)
    curves = aggregation_curves(groups, scores, correct, num_subsets=num_subsets, seed=seed)
    accuracy = sum(sum(c) / len(c) for c in correct) / len(correct) if correct else float("nan")
    all_finished = [f for s in samples for f in s.finished]
    results = {
        "num_problems": len(samples),
        "num_ungradable": ungradable,
        "accuracy": accuracy,
        "finished_rate": sum(all_finished) / max(1, len(all_finished)),
        f"maj@{num}": curves["majority"].get(num, float("nan")),
        f"weighted_maj@{num}": curves["weighted"].get(num, float("nan")),
        f"best_of_{num}": curves["best_of"].get(num, float("nan")),
        f"pass@{num}": curves["pass"].get(num, float("nan")),
        "verification": verification,
        "free_verifiers": free_verifier_report(groups, correct, finished, verifiers),
        "curves": curves,
    }
    if output_dir is not None:
        with open(os.path.join(output_dir, "samples.jsonl"), "w") as f:
            for line in lines:
                f.write(json.dumps(json_safe(line)) + "\n")
        rocs = roc_inputs(scores, correct, finished, verifiers)
        results["plots"] = [
            os.path.basename(p)
            for p in plot_all(output_dir, flat_scores, flat_labels, curves, accuracy, verification["ece"], rocs)
        ]
    return results


def evaluate(
    config: EvaluationConfig,
    problems,
    task: Task,
    recipe: SelfRewardConfig | None = None,
    dataset_name: str | None = None,
) -> dict:
    """Sample, score, grade and vote on `problems` (rows with `prompt`, `problem`, `answer`, as `load_problems`
    returns them); with `config.correction`, also run the correction loop with the same loaded model. Writes the
    report into `config.output_dir` and returns the results."""
    from ..scoring.scorer import SelfRewardScorer

    recipe = recipe if recipe is not None else config.self_reward_config()
    make_output_dir(config.output_dir)
    scorer = SelfRewardScorer.from_pretrained(config.model_name_or_path, recipe, backend=config.backend)
    problems = list(problems)
    samples = scorer.generate(
        [problem["prompt"] for problem in problems],
        num_samples=config.num_samples,
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        batch_size=config.batch_size,
        seed=config.seed,
        progress=True,
    )
    results = {
        "model": config.model_name_or_path,
        "dataset": dataset_name,
        "task": task.name,
        "self_reward": {key: getattr(scorer.config, key) for key in ("token", "token_id", "beta", "ref_constant")},
        "generation": {
            "num_samples": config.num_samples,
            "max_new_tokens": config.max_new_tokens,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "seed": config.seed,
        },
        **evaluate_samples(problems, samples, task, config.num_subsets, config.seed, config.output_dir),
    }
    if config.correction != "none":
        from ..correction.evaluation import evaluate_correction

        results["correction"] = evaluate_correction(
            scorer,
            [problem["problem"] for problem in problems],
            [problem["answer"] for problem in problems],
            task,
            mode=config.correction,
            max_attempts=config.max_attempts,
            threshold=config.correction_threshold,
            output_dir=config.output_dir,
            max_new_tokens=config.max_new_tokens,
        )
    with open(os.path.join(config.output_dir, "results.json"), "w") as f:
        json.dump(json_safe(results), f, indent=2)
        f.write("\n")
    return results


def format_summary(results: dict, output_dir: str) -> str:
    """A few lines for the terminal: accuracy, self-verification and voting at k = K."""
    v = results["verification"]
    k = results["generation"]["num_samples"]

    def pct(x):
        return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"

    return (
        f"{results['num_problems']} problems x {k} samples: accuracy {pct(results['accuracy'])}, finished "
        f"{pct(results['finished_rate'])}\n"
        f"self-verification: F1 {pct(v['f1'])} (correct {pct(v['acc_correct'])}, incorrect {pct(v['acc_incorrect'])}), "
        f"AUROC {pct(v['auroc'])}, ECE {pct(v['ece'])} ({pct(v['ece_prior_adjusted'])} at the estimated base rate "
        f"{pct(v['estimated_prior'])})\n"
        f"maj@{k} {pct(results[f'maj@{k}'])}, weighted {pct(results[f'weighted_maj@{k}'])}, "
        f"best-of-{k} {pct(results[f'best_of_{k}'])}, pass@{k} {pct(results[f'pass@{k}'])}\n"
        + free_verifier_lines(results.get("free_verifiers", {}), k, pct)
        + f"report written to {output_dir}/"
    )


def free_verifier_lines(report: dict, k: int, pct) -> str:
    """One terminal line per free verifier: its AUROC beside r_s's, and its DeepConf votes."""
    if not report:
        return ""
    width = max(len(name) for name in report)
    lines = ["free verifiers (same samples; AUROC, DeepConf vote keeping 90 % / 10 % of the samples):"]
    for name, entry in report.items():
        lines.append(
            f"  {name:<{width}}  AUROC {pct(entry['auroc'])}  vote {pct(entry[f'weighted_maj@{k}'])} / "
            f"{pct(entry[f'top10_weighted_maj@{k}'])}"
        )
    return "\n".join(lines) + "\n"
