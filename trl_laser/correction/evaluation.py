"""Metrics of self-rewarding correction (the method's tables), and a one-call evaluation of a model.

Per problem: turn-1 correctness (first attempt), final correctness, and the verdict given to the first attempt.
Over problems:

- `turn1_accuracy`, `final_accuracy`, `delta` = final − turn-1 (Δ(t1, t2)),
- `delta_i_to_c`: fraction of problems wrong at turn 1 and right at the end (Δ^{i→c}),
- `delta_c_to_i`: fraction right at turn 1 and wrong at the end (Δ^{c→i}),
- `verdict_acc_correct` / `verdict_acc_incorrect`: how often the first attempt's verdict was right, among correct and
  among incorrect first attempts (a missing verdict counts as not right),
- `avg_attempts`, `format_broken_rate`,
- `verification_tokens_per_problem`: the tokens of the verdicts (verbal: evaluation prefix + generated evaluation;
  LaSeR: 1 token per scored attempt),
- `verification_compute_tokens_per_problem`: the tokens the model processes to reach its verdicts, prefill + decode
  (verbal: the evaluation call's prefill of prompt + trajectory + evaluation prefix, and the decoded evaluation;
  LaSeR: the one decode step fed with each judged attempt's EOS, on the generation cache, plus any text written
  after the answer), next to `generated_tokens_per_problem` and `revision_prompt_tokens_per_problem`.
"""

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict

from ..core.self_reward import CORRECT_THRESHOLD
from ..tasks.format import CORRECT, WRONG
from ..tasks.task import Task
from .loop import CorrectionResult, ScoreFn, self_correct


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def correction_metrics(results: Sequence[CorrectionResult], answers: Sequence[str], task: Task) -> dict:
    """The metric dict over problems (fractions in [0, 1]; NaN where a class is empty)."""
    turn1 = [task.answers_match(r.answers[0] if r.answers else None, a) for r, a in zip(results, answers, strict=True)]
    final = [task.answers_match(r.final_answer, a) for r, a in zip(results, answers, strict=True)]
    first_verdicts = [r.verdicts[0] if r.verdicts else None for r in results]
    judged = [r.num_attempts > 1 or bool(r.verdicts) for r in results]
    n = len(results)
    return {
        "num_problems": n,
        "turn1_accuracy": _mean(turn1),
        "final_accuracy": _mean(final),
        "delta": _mean(final) - _mean(turn1),
        "delta_i_to_c": _mean([not t and f for t, f in zip(turn1, final, strict=True)]),
        "delta_c_to_i": _mean([t and not f for t, f in zip(turn1, final, strict=True)]),
        "verdict_acc_correct": _mean(
            [v == CORRECT for t, v, j in zip(turn1, first_verdicts, judged, strict=True) if t and j]
        ),
        "verdict_acc_incorrect": _mean(
            [v == WRONG for t, v, j in zip(turn1, first_verdicts, judged, strict=True) if not t and j]
        ),
        "avg_attempts": _mean([r.num_attempts for r in results]),
        "format_broken_rate": _mean([r.format_broken for r in results]),
        "verification_tokens_per_problem": _mean([r.verification_tokens for r in results]),
        "verification_compute_tokens_per_problem": _mean([r.verification_compute_tokens for r in results]),
        "generated_tokens_per_problem": _mean([r.generated_tokens for r in results]),
        "revision_prompt_tokens_per_problem": _mean([r.revision_prompt_tokens for r in results]),
    }


def evaluate_correction(
    generator,
    problems: list[str],
    answers: list[str],
    task: Task,
    mode: str,
    max_attempts: int = 2,
    threshold: float = CORRECT_THRESHOLD,
    output_dir: str | None = None,
    max_new_tokens: int = 256,
    score_fn: ScoreFn | None = None,
) -> dict:
    """Run a correction loop ("verbal" or "laser") greedily on `problems` and return `correction_metrics`.

    `generator` is a loaded `SelfRewardScorer` (for the LaSeR loop, with its scoring recipe): the same model
    generates and scores, the score of each attempt read during its generation. `score_fn` replaces those scores. With `output_dir`, writes `records.jsonl` (one line per
    problem: attempts, answers, verdicts, scores, token counts, correctness) and `metrics.json` there.
    """
    start = time.perf_counter()
    results = self_correct(
        problems,
        generator,
        task,
        mode=mode,
        max_attempts=max_attempts,
        threshold=threshold,
        score_fn=score_fn,
        max_new_tokens=max_new_tokens,
    )
    metrics = correction_metrics(results, answers, task)
    metrics.update(mode=mode, max_attempts=max_attempts, wall_seconds=round(time.perf_counter() - start, 1))
    if mode == "laser":
        metrics["threshold"] = threshold
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, "records.jsonl"), "w") as f:
            for problem, answer, r in zip(problems, answers, results, strict=True):
                record = {"problem": problem, "answer": answer, **asdict(r)}
                record["turn1_correct"] = task.answers_match(r.answers[0] if r.answers else None, answer)
                record["final_correct"] = task.answers_match(r.final_answer, answer)
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        with open(os.path.join(output_dir, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)
    return metrics
