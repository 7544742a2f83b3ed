"""Self-correcting inference: the verdict-driven loop and the loop driven by the LaSeR score.

Both loops write one trajectory per problem in the format of `trl_laser.correction.format` and stop after at most
`max_attempts` attempts:

- verbal ("verbal"): after each attempt the model writes a self-evaluation (the loop appends the evaluation prefix
  and lets the model generate up to its verdict); "[VERIFY] correct." stops, "[VERIFY] wrong." asks for a revision.
  An evaluation without a verdict breaks the format: the loop stops and the first answer counts as final.
- LaSeR ("laser"): after each attempt, `score_fn` gives the last-token self-reward r_s of the trajectory so far (one
  token of inference when done on the generation cache); r_s > threshold stops, r_s ≤ threshold asks for a revision.
  The loop writes the "wrong" verdict into the trajectory itself, so the revision is generated in the same context
  as after a verbal "wrong" verdict, without generating a self-evaluation.

The last allowed attempt is never judged: no verdict could change the answer any more.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .format import CORRECT, WRONG, CorrectionFormat, default_format
from .generation import Generator
from .rewards import extract_answer


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
    stopped: bool = field(default=False, repr=False)

    @property
    def num_attempts(self) -> int:
        return len(self.attempts)


def _attempt_text(completion) -> str:
    # An attempt ends where the model starts its self-evaluation: drop the (partial) evaluation prefix it wrote.
    text = completion.text[: -len(completion.stop)] if completion.stop else completion.text
    return text.strip()


def self_correct(
    problems: Sequence[str | list[dict]],
    generator: Generator,
    mode: str = "verbal",
    fmt: CorrectionFormat | None = None,
    max_attempts: int = 2,
    threshold: float = 0.5,
    score_fn: ScoreFn | None = None,
    is_math: bool = True,
    max_new_tokens: int = 256,
    evaluation_max_new_tokens: int = 64,
) -> list[CorrectionResult]:
    """Run a self-correction loop on each problem (batched over problems at every step).

    Args:
        problems: problem texts (posed with `fmt.build_prompt`) or ready conversations.
        generator: see `trl_laser.correction.generation` (e.g. `load_generator(path, temperature=0)`).
        mode: "verbal" (the model's own verdict decides) or "laser" (the LaSeR score decides; needs `score_fn`).
        fmt: the trajectory format the model was trained on (default: `default_format(is_math)`).
        max_attempts: attempts per problem, the first included (the method evaluates 2).
        threshold: the LaSeR loop revises when r_s ≤ threshold.
        score_fn: `score_fn(prompts, completions) -> list[r_s | None]`, e.g. `laser_score_fn(model_path)`.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    if mode == "laser" and score_fn is None:
        raise ValueError("The LaSeR loop needs a score_fn (see `laser_score_fn`).")
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}.")
    fmt = fmt or default_format(is_math)
    prompts = [fmt.build_prompt(p) if isinstance(p, str) else list(p) for p in problems]
    results = [CorrectionResult() for _ in prompts]
    attempt_stop = [fmt.evaluation_prefix.strip()]
    evaluation_cost = generator.count_tokens(fmt.evaluation_prefix)

    for k in range(max_attempts):
        active = [i for i, r in enumerate(results) if not r.stopped]
        if not active:
            break
        outputs = generator.generate(
            [prompts[i] for i in active],
            assistant_prefixes=[results[i].trajectory for i in active],
            max_new_tokens=max_new_tokens,
            stop=attempt_stop,
        )
        for i, out in zip(active, outputs, strict=True):
            r = results[i]
            attempt = _attempt_text(out[0])
            r.attempts.append(attempt)
            r.answers.append(extract_answer(attempt, is_math))
            r.generated_tokens += out[0].num_tokens
            r.trajectory = attempt if k == 0 else fmt.join(r.trajectory, attempt)
            if k > 0 and r.answers[-1] is None:
                r.format_broken = True  # a revision without an answer
            if k == max_attempts - 1 or r.format_broken:
                r.stopped = True
        active = [i for i in active if not results[i].stopped]
        if not active:
            break

        if mode == "verbal":
            outputs = generator.generate(
                [prompts[i] for i in active],
                assistant_prefixes=[results[i].trajectory + fmt.evaluation_prefix for i in active],
                max_new_tokens=evaluation_max_new_tokens,
                stop=list(fmt.verdict_stems.values()),
            )
            for i, out in zip(active, outputs, strict=True):
                r = results[i]
                verdict = fmt.parse_verdict(out[0].text)
                r.verdicts.append(verdict)
                r.generated_tokens += out[0].num_tokens
                r.verification_tokens += evaluation_cost + out[0].num_tokens
                if verdict is None:
                    r.format_broken = r.stopped = True
                    continue
                r.trajectory = fmt.join(r.trajectory + fmt.evaluation_prefix, fmt.normalize_evaluation(out[0].text))
                if verdict == CORRECT:
                    r.stopped = True
                else:
                    r.trajectory += fmt.revision_prefix
                    r.revision_prompt_tokens += generator.count_tokens(fmt.revision_prefix)
        else:
            scores = score_fn([prompts[i] for i in active], [results[i].trajectory for i in active])
            for i, score in zip(active, scores, strict=True):
                r = results[i]
                r.scores.append(score)
                r.verification_tokens += 1
                if score is None:
                    r.verdicts.append(None)
                    r.format_broken = r.stopped = True
                    continue
                verdict = CORRECT if score > threshold else WRONG
                r.verdicts.append(verdict)
                if verdict == CORRECT:
                    r.stopped = True
                else:
                    inserted = fmt.join(fmt.evaluation_prefix, fmt.wrong_verdict) + fmt.revision_prefix
                    r.trajectory += inserted
                    r.revision_prompt_tokens += generator.count_tokens(inserted)

    for r in results:
        # The method's rule: when the model breaks the format, its first answer counts as final.
        r.final_answer = r.answers[0] if r.format_broken else r.answers[-1]
    return results


def laser_score_fn(
    model_path: str, token: str | None = None, beta: float | None = None, ref_constant: float | None = None
) -> ScoreFn:
    """A `score_fn` backed by `trl_laser.SelfRewardScorer` (built on first call, so creating this is free).

    `token`, `beta` and `ref_constant` override the model's saved LaSeR metadata; a model without metadata needs all
    three.
    """
    scorer = None

    def score_fn(prompts, completions):
        nonlocal scorer
        if scorer is None:
            from ..scoring.scorer import SelfRewardScorer

            scorer = SelfRewardScorer.from_pretrained(model_path, token=token, beta=beta, ref_constant=ref_constant)
        return scorer.score(prompts, completions)

    return score_fn
