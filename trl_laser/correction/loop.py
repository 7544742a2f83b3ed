"""Self-correcting inference: the verdict-driven loop and the loop driven by the LaSeR score.

Both loops write one trajectory per problem in the format of `trl_laser.correction.format` and stop after at most
`max_attempts` attempts:

- verbal ("verbal"): after each attempt the model writes a self-evaluation (the loop appends the evaluation prefix
  and lets the model generate up to its verdict); "[VERIFY] correct." stops, "[VERIFY] wrong." asks for a revision.
  An evaluation without a verdict breaks the format: the loop stops and the first answer counts as final.
- LaSeR ("laser"): after each attempt, the scorer gives the last-token self-reward r_s of the trajectory so far;
  r_s > threshold stops, r_s ≤ threshold asks for a revision.
  The loop writes the "wrong" verdict into the trajectory itself, so the revision is generated in the same context
  as after a verbal "wrong" verdict, without generating a self-evaluation.

The last allowed attempt is never judged: no verdict could change the answer any more. Generation and scoring go
through one `SelfRewardScorer` (one loaded model); tests pass a fake with the same `generate` / `count_tokens`.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..tasks.task import Task
from ..training.self_reward import CORRECT_THRESHOLD
from .format import CORRECT, WRONG


ScoreFn = Callable[[list, list[str]], list[float | None]]
"""`score_fn(prompts, completions) -> r_s per completion` (None when a completion cannot be scored)."""

MODES = ("verbal", "laser")


@dataclass
class CorrectionResult:
    """One problem's run of a correction loop.

    Attributes:
        attempts: the text of each attempt (first attempt, then revisions).
        answers: the answer extracted from each attempt (None when there is none).
        verdicts: for each judged attempt, the verdict that decided the loop ("correct"/"wrong"; for the LaSeR loop,
            whether r_s > threshold); None where the model wrote no usable verdict.
        scores: the LaSeR score of each judged attempt (LaSeR loop only).
        trajectory: the whole assistant text, in the trajectory format.
        format_broken: the model broke the format (no verdict, or a revision without an answer).
        final_answer: the answer that counts: the last attempt's, or the first one's when the format broke.
        verification_tokens: tokens spent to obtain the verdicts: for the verbal loop the evaluation prefix written
            into the context plus the generated evaluation; for the LaSeR loop one token per scored attempt.
        generated_tokens: all tokens the model generated (attempts and evaluations).
        revision_prompt_tokens: tokens written into the context to ask for revisions (the revision prefix, and for the
            LaSeR loop also the evaluation prefix and the "wrong" verdict it inserts).
    """

    attempts: list[str] = field(default_factory=list)
    answers: list[str | None] = field(default_factory=list)
    verdicts: list[str | None] = field(default_factory=list)
    scores: list[float | None] = field(default_factory=list)
    trajectory: str = ""
    format_broken: bool = False
    final_answer: str | None = None
    verification_tokens: int = 0
    generated_tokens: int = 0
    revision_prompt_tokens: int = 0

    @property
    def num_attempts(self) -> int:
        return len(self.attempts)


def _attempt_text(completion) -> str:
    # An attempt ends where the model starts its self-evaluation: drop the (partial) evaluation prefix it wrote.
    text = completion.text[: -len(completion.stop)] if completion.stop else completion.text
    return text.strip()


def self_correct(
    problems: Sequence[str | list[dict]],
    generator,
    task: Task,
    mode: str = "verbal",
    max_attempts: int = 2,
    threshold: float = CORRECT_THRESHOLD,
    score_fn: ScoreFn | None = None,
    max_new_tokens: int = 256,
    evaluation_max_new_tokens: int = 64,
    temperature: float = 0.0,
) -> list[CorrectionResult]:
    """Run a self-correction loop on each problem (batched over problems at every step).

    Args:
        problems: problem texts (posed with `task.build_prompt`) or ready conversations.
        generator: a `SelfRewardScorer`: it generates, and in the LaSeR loop it scores (`generator.score`).
        task: the task: its answers and its correction format (the one the model was trained on).
        mode: "verbal" (the model's own verdict decides) or "laser" (the LaSeR score decides).
        max_attempts: attempts per problem, the first included (the method evaluates 2).
        threshold: the LaSeR loop revises when r_s ≤ threshold.
        score_fn: replaces `generator.score` in the LaSeR loop: `score_fn(prompts, completions) -> list[r_s | None]`.
        temperature: sampling temperature of attempts and evaluations (0: greedy, as the method evaluates).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}.")
    if mode == "laser" and score_fn is None:
        score_fn = generator.score
    fmt = task.correction
    prompts = [task.build_prompt(p) if isinstance(p, str) else list(p) for p in problems]
    results = [CorrectionResult() for _ in prompts]
    active = list(range(len(prompts)))
    attempt_stop = [fmt.evaluation_prefix.strip()]
    evaluation_cost = generator.count_tokens(fmt.evaluation_prefix)

    for k in range(max_attempts):
        if not active:
            break
        outputs = generator.generate(
            [prompts[i] for i in active],
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            assistant_prefixes=[results[i].trajectory for i in active],
            stop=attempt_stop,
        )
        for i, samples in zip(active, outputs, strict=True):
            r, out = results[i], samples.completions[0]
            attempt = _attempt_text(out)
            r.attempts.append(attempt)
            r.answers.append(task.extract_answer(attempt))
            r.generated_tokens += out.num_tokens
            r.trajectory = attempt if k == 0 else fmt.join(r.trajectory, attempt)
            if k > 0 and r.answers[-1] is None:
                r.format_broken = True  # a revision without an answer
        # The last allowed attempt is not judged, nor one that broke the format.
        active = [i for i in active if k < max_attempts - 1 and not results[i].format_broken]
        if not active:
            break

        if mode == "verbal":
            outputs = generator.generate(
                [prompts[i] for i in active],
                max_new_tokens=evaluation_max_new_tokens,
                temperature=temperature,
                assistant_prefixes=[results[i].trajectory + fmt.evaluation_prefix for i in active],
                stop=list(fmt.verdict_stems.values()),
            )
            verdicts = []
            for i, samples in zip(active, outputs, strict=True):
                r, out = results[i], samples.completions[0]
                verdict = fmt.parse_verdict(out.text)
                verdicts.append(verdict)
                r.verdicts.append(verdict)
                r.generated_tokens += out.num_tokens
                r.verification_tokens += evaluation_cost + out.num_tokens
                if verdict is None:
                    r.format_broken = True
                    continue
                r.trajectory = fmt.join(r.trajectory + fmt.evaluation_prefix, fmt.normalize_evaluation(out.text))
                if verdict == WRONG:
                    r.trajectory += fmt.revision_prefix
                    r.revision_prompt_tokens += generator.count_tokens(fmt.revision_prefix)
        else:
            scores = score_fn([prompts[i] for i in active], [results[i].trajectory for i in active])
            verdicts = []
            for i, score in zip(active, scores, strict=True):
                r = results[i]
                r.scores.append(score)
                r.verification_tokens += 1
                verdict = None if score is None else CORRECT if score > threshold else WRONG
                verdicts.append(verdict)
                r.verdicts.append(verdict)
                if verdict is None:
                    r.format_broken = True
                elif verdict == WRONG:
                    inserted = fmt.join(fmt.evaluation_prefix, fmt.wrong_verdict) + fmt.revision_prefix
                    r.trajectory += inserted
                    r.revision_prompt_tokens += generator.count_tokens(inserted)
        # Only a "wrong" verdict asks for another attempt.
        active = [i for i, verdict in zip(active, verdicts, strict=True) if verdict == WRONG]

    for r in results:
        # The method's rule: when the model breaks the format, its first answer counts as final.
        r.final_answer = r.answers[0] if r.format_broken else r.answers[-1]
    return results
