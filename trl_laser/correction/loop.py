"""Self-correcting inference: the verdict-driven loop and the loop driven by the LaSeR score.

Both loops write one trajectory per problem in the format of `trl_laser.tasks.format` and stop after at most
`max_attempts` attempts:

- verbal ("verbal"): the model decides, as in the method's inference. An attempt is generated until the model starts
  its self-evaluation (the evaluation prefix, a stop string); the loop then lets it write the evaluation up to its
  verdict. "[VERIFY] correct." stops, "[VERIFY] wrong." asks for a revision. An attempt that ends the turn (EOS) or
  is cut by the token limit without starting a self-evaluation, or an evaluation without a verdict, breaks the
  format: the loop stops and the first answer counts as final.
- LaSeR ("laser"): each attempt is generated to its EOS, in the context where LaSeR training put it (see
  `trl_laser.correction.laser`), and the score r_s read after that EOS from the generation cache decides:
  r_s > threshold stops, r_s ≤ threshold asks for a revision. The loop writes the "wrong" verdict into the context.
  An attempt cut by the token limit has no last token and no score: the format is broken.

The last allowed attempt is never judged: no verdict could change the answer any more. Generation and scoring go
through one `SelfRewardScorer` (one loaded model); tests pass a fake with the same `generate` / `count_tokens`.

Cost. `verification_tokens` counts the tokens of the verdicts themselves; `verification_compute_tokens` counts what
the model processes to reach them (prefill + decode): for the verbal loop, the prefill of prompt + trajectory +
evaluation prefix in the evaluation call and the decoded evaluation; for the LaSeR loop, one decode step per judged
attempt (the step fed with the attempt's EOS), plus any text the model wrote after its answer before that EOS.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..core.self_reward import CORRECT_THRESHOLD
from ..tasks.format import CORRECT, WRONG
from ..tasks.task import Task
from .laser import attempt_prefix, split_attempt


ScoreFn = Callable[[list, list], list[float | None]]
"""`score_fn(prompts, completions) -> r_s per completion`: the `Completion`s of the attempts just generated (None
when a completion cannot be scored). The default reads the score each completion carries from generation."""

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
        format_broken: the model broke the format (no self-evaluation or no verdict where one was due, an attempt
            without a score, or a revision without an answer).
        final_answer: the answer that counts: the last attempt's, or the first one's when the format broke.
        verification_tokens: tokens of the verdicts: for the verbal loop the evaluation prefix written into the
            context plus the generated evaluation; for the LaSeR loop one token per scored attempt.
        verification_compute_tokens: tokens the model processed to reach its verdicts, prefill + decode (see the
            module docstring).
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
    verification_compute_tokens: int = 0
    generated_tokens: int = 0
    revision_prompt_tokens: int = 0

    @property
    def num_attempts(self) -> int:
        return len(self.attempts)


def _cached_scores(prompts, completions) -> list[float | None]:
    return [c.score for c in completions]


def _context_tokens(generator, prompt, prefix: str) -> int:
    """Tokens of a prompt with an assistant prefix, as the generator feeds them (its prefill)."""
    encode = getattr(generator, "encode_prompt", None)
    if encode is not None:
        return len(encode(prompt, prefix))
    return sum(generator.count_tokens(m["content"]) for m in prompt) + generator.count_tokens(prefix)


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
        generator: a `SelfRewardScorer`: it generates, and in the LaSeR loop its completions carry their scores.
        task: the task: its answers and its correction format (the one the model was trained on).
        mode: "verbal" (the model's own verdict decides) or "laser" (the LaSeR score decides).
        max_attempts: attempts per problem, the first included (the method evaluates 2).
        threshold: the LaSeR loop revises when r_s ≤ threshold.
        score_fn: replaces the scores read during generation in the LaSeR loop (see `ScoreFn`).
        temperature: sampling temperature of attempts and evaluations (0: greedy, as the method evaluates).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}.")
    if mode == "laser" and score_fn is None and not getattr(generator, "has_scores", True):
        raise ValueError(
            "The LaSeR correction loop decides by r_s, and this generator has no scoring recipe. Load it with "
            "`SelfRewardScorer.from_pretrained(path, config=SelfRewardConfig(...))` or from a LaSeR checkpoint."
        )
    prompts = [task.build_prompt(p) if isinstance(p, str) else list(p) for p in problems]
    if mode == "verbal":
        loop = _VerbalLoop(generator, task, prompts, evaluation_max_new_tokens, temperature)
    else:
        loop = _LaserLoop(generator, task, prompts, score_fn or _cached_scores, threshold)
    results = [CorrectionResult() for _ in prompts]
    active = list(range(len(prompts)))
    for k in range(max_attempts):
        if not active:
            break
        judged = k < max_attempts - 1
        completions = _attempt(loop, results, active, k, judged, max_new_tokens, temperature)
        # The last allowed attempt is not judged, nor one that broke the format.
        keep = [n for n, i in enumerate(active) if judged and not results[i].format_broken]
        active, completions = [active[n] for n in keep], [completions[n] for n in keep]
        if not active:
            break
        verdicts = loop.judge(results, active, completions)
        # Only a "wrong" verdict asks for another attempt.
        active = [i for i, verdict in zip(active, verdicts, strict=True) if verdict == WRONG]

    for r in results:
        # The method's rule: when the model breaks the format, its first answer counts as final.
        r.final_answer = r.answers[0] if r.format_broken else r.answers[-1]
    return results


def _attempt(loop, results, active, k, judged, max_new_tokens, temperature):
    """Generate attempt k of the `active` problems (continuing each one's context), record it, and flag a broken
    format; returns the attempts' completions."""
    task, fmt = loop.task, loop.task.correction
    prefixes = [loop.attempt_prefix(results[i]) for i in active]
    outputs = loop.generator.generate(
        [loop.prompts[i] for i in active],
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        assistant_prefixes=prefixes,
        stop=loop.attempt_stop,
    )
    completions = [samples.completions[0] for samples in outputs]
    for i, prefix, out in zip(active, prefixes, completions, strict=True):
        r = results[i]
        attempt = loop.attempt_text(out)
        r.attempts.append(attempt)
        r.answers.append(task.extract_answer(attempt))
        r.generated_tokens += out.num_tokens
        r.trajectory = prefix + (attempt if k == 0 else fmt.separator + attempt)
        if k > 0 and r.answers[-1] is None:
            r.format_broken = True  # a revision without an answer
        elif judged and loop.ended_before_judgement(out):
            r.format_broken = True
    return completions


class _VerbalLoop:
    """The method's loop: after an attempt the model writes its own evaluation, whose verdict decides."""

    def __init__(self, generator, task: Task, prompts, evaluation_max_new_tokens: int, temperature: float):
        self.generator, self.task, self.prompts = generator, task, prompts
        self.evaluation_max_new_tokens, self.temperature = evaluation_max_new_tokens, temperature
        fmt = task.correction
        self.attempt_stop = [fmt.evaluation_prefix.strip()]  # an attempt ends where its self-evaluation starts
        self.evaluation_cost = generator.count_tokens(fmt.evaluation_prefix)

    def attempt_prefix(self, result: CorrectionResult) -> str:
        return result.trajectory

    def attempt_text(self, out) -> str:
        return _attempt_text(out)

    def ended_before_judgement(self, out) -> bool:
        return out.stop is None  # the turn ended (EOS or token limit) where a self-evaluation was due

    def judge(self, results, active, completions) -> list[str | None]:
        fmt = self.task.correction
        eval_prefixes = [results[i].trajectory + fmt.evaluation_prefix for i in active]
        outputs = self.generator.generate(
            [self.prompts[i] for i in active],
            max_new_tokens=self.evaluation_max_new_tokens,
            temperature=self.temperature,
            assistant_prefixes=eval_prefixes,
            stop=list(fmt.verdict_stems.values()),
        )
        verdicts = []
        for i, prefix, samples in zip(active, eval_prefixes, outputs, strict=True):
            r, out = results[i], samples.completions[0]
            verdict = fmt.parse_verdict(out.text)
            verdicts.append(verdict)
            r.verdicts.append(verdict)
            r.generated_tokens += out.num_tokens
            r.verification_tokens += self.evaluation_cost + out.num_tokens
            r.verification_compute_tokens += _context_tokens(self.generator, self.prompts[i], prefix) + out.num_tokens
            if verdict is None:
                r.format_broken = True
                continue
            r.trajectory = fmt.join(r.trajectory + fmt.evaluation_prefix, fmt.normalize_evaluation(out.text))
            if verdict == WRONG:
                r.trajectory += fmt.revision_prefix
                r.revision_prompt_tokens += self.generator.count_tokens(fmt.revision_prefix)
        return verdicts


class _LaserLoop:
    """The LaSeR variant: an attempt ends at its EOS, and the score read there decides (r_s > threshold: correct)."""

    def __init__(self, generator, task: Task, prompts, score_fn: ScoreFn, threshold: float):
        self.generator, self.task, self.prompts = generator, task, prompts
        self.score_fn, self.threshold = score_fn, threshold
        # A model that starts a revision by itself is stopped there: that completion has no score.
        self.attempt_stop = [task.correction.revision_prefix.strip()]

    def attempt_prefix(self, result: CorrectionResult) -> str:
        return attempt_prefix(self.task.correction, result.attempts)

    def attempt_text(self, out) -> str:
        return split_attempt(out.text, self.task.correction)[0]

    def ended_before_judgement(self, out) -> bool:
        return False  # an attempt without a score is caught when it is judged

    def judge(self, results, active, completions) -> list[str | None]:
        fmt = self.task.correction
        scores = self.score_fn([self.prompts[i] for i in active], completions)
        verdicts = []
        for i, out, score in zip(active, completions, scores, strict=True):
            r = results[i]
            r.scores.append(score)
            verdict = None if score is None else CORRECT if score > self.threshold else WRONG
            verdicts.append(verdict)
            r.verdicts.append(verdict)
            if verdict is None:
                r.format_broken = True
                continue
            r.verification_tokens += 1
            # The decode step fed with the EOS, and whatever the model wrote after its answer before that EOS.
            after_answer = out.num_tokens - int(out.finished) - self.generator.count_tokens(r.attempts[-1])
            r.verification_compute_tokens += 1 + max(after_answer, 0)
            if verdict == WRONG:
                inserted = fmt.join(fmt.evaluation_prefix, fmt.wrong_verdict) + fmt.revision_prefix
                r.revision_prompt_tokens += self.generator.count_tokens(inserted)
        return verdicts
