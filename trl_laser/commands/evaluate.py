"""`trl-laser evaluate`: sample K solutions per problem, self-score them, vote, and report with plots.

Writes into `--output`: `results.json` (accuracy, self-verification metrics, maj@k / weighted@k / best-of-k curves),
`samples.jsonl` (one line per sampled solution) and three PNG plots.
"""

import json
import math
import os
import sys


def register(subparsers):
    parser = subparsers.add_parser(
        "evaluate",
        help="Sample solutions, score them with the model's own self-reward, vote, and plot.",
        description="Sample --num-samples solutions per problem, read each one's LaSeR self-reward during generation, "
        "and report accuracy, self-verification (F1, AUROC, ECE) and majority / self-reward-weighted / best-of-k "
        "voting curves, with plots.",
    )
    parser.add_argument("--model", required=True, help="Model directory (a LaSeR checkpoint) or id.")
    parser.add_argument(
        "--dataset",
        default="builtin:compare",
        help="A .jsonl file, a dataset directory (save_to_disk) or id, or 'builtin:compare' (default).",
    )
    parser.add_argument("--split", default=None, help="Dataset split (default: test, or the only one).")
    parser.add_argument("--problem-column", default=None, help="Problem column (default: 'problem' or 'question').")
    parser.add_argument("--answer-column", default=None, help="Reference answer column (default: 'answer').")
    parser.add_argument(
        "--answer-check",
        choices=("auto", "math", "exact"),
        default="auto",
        help="math: math-verify; exact: last integer (the built-in task); auto: exact for builtin:, else math.",
    )
    parser.add_argument(
        "--prompt-template",
        default=None,
        help="User-turn text with {problem}; default asks for a \\boxed{} answer on math datasets.",
    )
    parser.add_argument("--limit", type=int, default=None, help="Evaluate the first N problems only.")
    parser.add_argument("--num-samples", type=int, default=8, help="Solutions sampled per problem (K).")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=1.0, help="Sampling temperature (0: greedy).")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=16, help="Sequences per generation batch.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-subsets", type=int, default=32, help="Random subsets per k for the voting curves.")
    parser.add_argument("--token", default=None, help="Self-reward token (overrides the checkpoint's metadata).")
    parser.add_argument("--beta", type=float, default=None, help="β of the score (overrides the metadata).")
    parser.add_argument(
        "--ref-constant", type=float, default=None, help="c_ref of the score (overrides the metadata)."
    )
    parser.add_argument("--output", required=True, help="Report directory.")
    parser.add_argument(
        "--correction",
        choices=("none", "verbal", "laser"),
        default="none",
        help="Also evaluate self-correction (attempt, verify, retry) with verbal or LaSeR verification.",
    )
    parser.add_argument("--max-attempts", type=int, default=2, help="Attempts per problem with --correction.")
    parser.add_argument("--threshold", type=float, default=0.5, help="Self-reward threshold with --correction.")
    parser.set_defaults(func=run)


def _error(message: str) -> int:
    print(f"trl-laser evaluate: error: {message}", file=sys.stderr)
    return 2


def _json_safe(value):
    """NaN and inf become null (JSON has no NaN); dict keys become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _grade(texts: list[str], answer: str, check: str) -> tuple[list[bool] | None, list]:
    """Correctness of each text and its extracted answer; correctness is None when the reference cannot be parsed."""
    from ..inference.voting import extract_math_answer
    from ..tasks import exact_answer_reward, extract_last_integer, math_answer_reward

    if check == "exact":
        try:
            rewards = exact_answer_reward(texts, [answer] * len(texts))
        except ValueError:  # a reference that is not an integer
            return None, [None] * len(texts)
        return [r > 0.5 for r in rewards], [extract_last_integer(t) for t in texts]
    rewards = math_answer_reward(texts, [answer] * len(texts))
    answers = [extract_math_answer(t) for t in texts]
    if any(r is None for r in rewards):
        return None, answers
    return [r > 0.5 for r in rewards], answers


def run(args) -> int:
    from ..inference.data import DatasetError, load_problems
    from ..scoring.scorer import resolve_scoring_recipe

    # Everything that can be wrong with the input is checked before the model is loaded or anything is generated.
    if args.num_samples < 1:
        return _error("--num-samples must be at least 1.")
    if args.correction != "none" and args.max_attempts < 1:
        return _error("--max-attempts must be at least 1.")
    try:
        problems = load_problems(
            args.dataset,
            problem_column=args.problem_column,
            answer_column=args.answer_column,
            split=args.split,
            prompt_template=args.prompt_template,
            answer_check=args.answer_check,
            require_answer=True,
            limit=args.limit,
        )
        local = os.path.isdir(args.model)
        if not local and os.path.exists(args.model):
            raise ValueError(f"--model {args.model!r} is a file; pass the model directory.")
        token, beta, ref_constant = resolve_scoring_recipe(
            args.model if local else None, args.token, args.beta, args.ref_constant
        )
        os.makedirs(args.output, exist_ok=True)
    except (DatasetError, ValueError, OSError) as error:
        return _error(str(error))

    from ..scoring.scorer import SelfRewardScorer

    try:
        scorer = SelfRewardScorer.from_pretrained(args.model, token=token, beta=beta, ref_constant=ref_constant)
    except (ValueError, OSError) as error:
        return _error(str(error))

    samples = scorer.generate(
        [p.prompt for p in problems],
        num_samples=args.num_samples,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=True,
    )
    results = evaluate_samples(problems, samples, num_subsets=args.num_subsets, seed=args.seed, output_dir=args.output)
    results = {
        "model": args.model,
        "dataset": args.dataset,
        "self_reward": {
            "token": scorer.token,
            "token_id": scorer.token_id,
            "beta": beta,
            "ref_constant": ref_constant,
        },
        "generation": {
            "num_samples": args.num_samples,
            "max_new_tokens": args.max_new_tokens,
            "temperature": args.temperature,
            "top_p": args.top_p,
            "seed": args.seed,
        },
        **results,
    }

    if args.correction != "none":
        del scorer, samples  # the correction pipeline loads the model itself
        from ..correction.evaluation import evaluate_correction

        results["correction"] = evaluate_correction(
            model_path=args.model,
            problems=[p.problem for p in problems],
            answers=[p.answer for p in problems],
            mode=args.correction,
            max_attempts=args.max_attempts,
            threshold=args.threshold,
            output_dir=args.output,
            max_new_tokens=args.max_new_tokens,
            is_math=problems[0].check == "math",
            # Explicit scoring values matter for a model saved without LaSeR metadata.
            **{
                k: v
                for k, v in (("token", args.token), ("beta", args.beta), ("ref_constant", args.ref_constant))
                if v is not None
            },
        )

    with open(os.path.join(args.output, "results.json"), "w") as f:
        json.dump(_json_safe(results), f, indent=2)
        f.write("\n")
    _print_summary(results, args.output)
    return 0


def evaluate_samples(problems, samples, num_subsets: int = 32, seed: int = 0, output_dir: str | None = None) -> dict:
    """Grade, vote and measure; write `samples.jsonl` and the plots into `output_dir` when given."""
    from ..inference.metrics import verification_report
    from ..inference.plots import plot_all
    from ..inference.voting import aggregation_curves, answer_to_text, group_answers, math_equivalent

    groups, scores, correct, lines = [], [], [], []
    ungradable = 0
    for index, (problem, sample) in enumerate(zip(problems, samples, strict=True)):
        labels, answers = _grade(sample.texts, problem.answer, problem.check)
        if labels is None:
            ungradable += 1
        else:
            groups.append(group_answers(answers, math_equivalent if problem.check == "math" else None))
            scores.append(sample.scores)
            correct.append(labels)
        for j, text in enumerate(sample.texts):
            lines.append(
                {
                    "problem_index": index,
                    "sample_index": j,
                    "problem": problem.problem,
                    "reference": problem.answer,
                    "completion": text,
                    "answer": answer_to_text(answers[j]),
                    "correct": None if labels is None else labels[j],
                    "score": sample.scores[j],
                    "finished": sample.finished[j],
                    "num_tokens": len(sample.token_ids[j]),
                }
            )

    flat_scores = [s for row in scores for s in row]
    flat_labels = [c for row in correct for c in row]
    num = len(samples[0].texts) if samples else 0
    verification = verification_report(flat_scores, flat_labels)
    curves = aggregation_curves(groups, scores, correct, num_subsets=num_subsets, seed=seed)
    accuracy = sum(sum(c) / len(c) for c in correct) / len(correct) if correct else float("nan")
    results = {
        "num_problems": len(problems),
        "num_ungradable": ungradable,
        "accuracy": accuracy,
        "finished_rate": sum(f for s in samples for f in s.finished) / max(1, sum(len(s.finished) for s in samples)),
        f"maj@{num}": curves["majority"].get(num, float("nan")),
        f"weighted_maj@{num}": curves["weighted"].get(num, float("nan")),
        f"best_of_{num}": curves["best_of"].get(num, float("nan")),
        f"pass@{num}": curves["pass"].get(num, float("nan")),
        "verification": verification,
        "curves": curves,
    }
    if output_dir is not None:
        with open(os.path.join(output_dir, "samples.jsonl"), "w") as f:
            for line in lines:
                f.write(json.dumps(_json_safe(line)) + "\n")
        results["plots"] = [
            os.path.basename(p)
            for p in plot_all(output_dir, flat_scores, flat_labels, curves, accuracy, verification["ece"])
        ]
    return results


def _print_summary(results: dict, output: str) -> None:
    v = results["verification"]
    k = results["generation"]["num_samples"]

    def pct(x):
        return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"

    print(
        f"{results['num_problems']} problems x {k} samples: accuracy {pct(results['accuracy'])}, finished "
        f"{pct(results['finished_rate'])}\n"
        f"self-verification: F1 {pct(v['f1'])} (correct {pct(v['acc_correct'])}, incorrect {pct(v['acc_incorrect'])}), "
        f"AUROC {pct(v['auroc'])}, ECE {pct(v['ece'])}\n"
        f"maj@{k} {pct(results[f'maj@{k}'])}, weighted {pct(results[f'weighted_maj@{k}'])}, "
        f"best-of-{k} {pct(results[f'best_of_{k}'])}, pass@{k} {pct(results[f'pass@{k}'])}\n"
        f"report written to {output}/"
    )
