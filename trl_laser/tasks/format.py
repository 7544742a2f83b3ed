"""The trajectory format of self-rewarding correction, as data.

A *trajectory* is ONE assistant message in which the model solves, judges itself, and revises:

    <attempt 1>

    Self-evaluation: <evaluation ending in> [VERIFY] wrong.

    Revision: <attempt 2>

    Self-evaluation: [VERIFY] correct.

Keeping the whole correction inside one assistant turn is what lets the model "decide by itself when to stop" (it
emits EOS after a "correct" verdict), lets GRPO train it like any single-turn completion (the reward reads the last
answer), and lets the inference loops cut it into attempts with plain stop strings.

The base model does not know this format, so sequential rejection sampling elicits the pieces with separate user
turns (the task's own prompt, then `verify_prompt`, `revise_prompt`) and `assemble` glues the kept pieces together.

A format is part of a task (`Task.correction`), so data generation, training and inference use the same one.
Everything here is overridable: `dataclasses.replace(task, correction=CorrectionFormat(...))`.
"""

import re
from dataclasses import dataclass


CORRECT = "correct"
WRONG = "wrong"


@dataclass(frozen=True)
class CorrectionFormat:
    """Templates of the self-rewarding correction system.

    Args:
        verify_prompt: user turn asking the model to judge its previous answer (data generation only).
        revise_prompt: user turn asking for a revision after a "wrong" verdict (data generation only).
        evaluation_start: text that sampled self-evaluations are made to begin with (data generation only; it stays in
            the kept evaluation, and the fine-tuned model then writes it by itself). Empty by default; a very small
            model may need e.g. "[VERIFY]" to produce verdicts at a usable rate.
        correct_verdict / wrong_verdict: the two verdicts. Matching ignores a missing final period, so a model that
            writes "[VERIFY] correct" is understood; kept evaluations are normalised to the full verdict.
        evaluation_prefix: joins an attempt and its self-evaluation inside a trajectory. It is also the stop string
            that ends an attempt at inference, so it should not occur in an ordinary solution.
        revision_prefix: joins a "wrong" verdict and the revision that follows it.
        separator: placed between a prefix and the piece that follows it. Prefixes end without a space because a
            prompt that ends in a space tokenizes differently from the same text continued by the model.

    The defaults are the method's wording for math problems with `\\boxed{}` answers.
    """

    verify_prompt: str = (
        "Perform a self-evaluation: check step by step whether your answer above is correct. End with exactly one "
        "line, either `[VERIFY] correct.` or `[VERIFY] wrong.`"
    )
    revise_prompt: str = (
        "Your self-evaluation is `[VERIFY] wrong.`. Identify the mistake in your previous reasoning, revise it, and "
        "put the corrected final answer within \\boxed{}."
    )
    evaluation_start: str = ""
    correct_verdict: str = "[VERIFY] correct."
    wrong_verdict: str = "[VERIFY] wrong."
    evaluation_prefix: str = "\n\nSelf-evaluation:"
    revision_prefix: str = "\n\nRevision:"
    separator: str = " "

    # -- prompts ---------------------------------------------------------------------------------------------------
    def verify_turn(self, prompt: list[dict], attempt: str) -> list[dict]:
        """Conversation that elicits a self-evaluation of `attempt` (stage-1 data generation)."""
        return [*prompt, {"role": "assistant", "content": attempt}, {"role": "user", "content": self.verify_prompt}]

    def revise_turn(self, prompt: list[dict], attempt: str, evaluation: str) -> list[dict]:
        """Conversation that elicits a revision after `evaluation` judged `attempt` wrong (stage-1 data generation)."""
        return [
            *self.verify_turn(prompt, attempt),
            {"role": "assistant", "content": evaluation},
            {"role": "user", "content": self.revise_prompt},
        ]

    # -- verdicts --------------------------------------------------------------------------------------------------
    @property
    def verdict_stems(self) -> dict[str, str]:
        """Verdict strings without their final period: what is matched in generated text (and the stop strings)."""
        return {CORRECT: self.correct_verdict.rstrip("."), WRONG: self.wrong_verdict.rstrip(".")}

    def verdict_text(self, verdict: str) -> str:
        return self.correct_verdict if verdict == CORRECT else self.wrong_verdict

    def find_verdicts(self, text: str) -> list[tuple[int, int, str]]:
        """All verdicts in `text` as (start, end, verdict), in order; `end` includes a final period when present."""
        found = []
        for verdict, stem in self.verdict_stems.items():
            start = text.find(stem)
            while start != -1:
                end = start + len(stem)
                if text.startswith(".", end):
                    end += 1
                found.append((start, end, verdict))
                start = text.find(stem, start + 1)
        return sorted(found)

    def parse_verdict(self, text: str) -> str | None:
        """`"correct"` or `"wrong"` when `text` holds exactly one verdict, else None (none, or several)."""
        verdicts = self.find_verdicts(text)
        return verdicts[0][2] if len(verdicts) == 1 else None

    def normalize_evaluation(self, text: str) -> str:
        """Cut a generated evaluation right after its first verdict and complete the verdict's final period.

        A verdict written inside a box (`\\boxed{[VERIFY] wrong.}`, `$\\boxed{\\text{[VERIFY] correct.}}$`) is
        unwrapped: cutting after the verdict would otherwise leave an unclosed `\\boxed{` in the kept text, which
        the fine-tuned model would learn, and which answer extraction would read as an answer.
        """
        verdicts = self.find_verdicts(text)
        if not verdicts:
            return text.strip()
        start, _, verdict = verdicts[0]
        before = text[:start]
        unwrapped = _VERDICT_WRAPPER.sub("", before)
        if unwrapped != before:
            before = unwrapped.rstrip() + " " if unwrapped.strip() else ""
        return (before + self.verdict_text(verdict)).strip()

    # -- trajectories ----------------------------------------------------------------------------------------------
    def join(self, prefix: str, piece: str) -> str:
        return prefix + self.separator + piece.strip()

    def assemble(self, attempts: list[str], evaluations: list[str]) -> str:
        """Glue attempts and the evaluations that follow them into one trajectory.

        `evaluations[i]` judges `attempts[i]`; there may be one evaluation fewer than attempts (a trajectory that
        ends on an unjudged attempt). Every evaluation but the last must be a "wrong" one, since only those are
        followed by a revision.
        """
        if not attempts or len(evaluations) not in (len(attempts), len(attempts) - 1):
            raise ValueError(f"{len(attempts)} attempts need {len(attempts)} or {len(attempts) - 1} evaluations.")
        text = attempts[0].strip()
        for i, attempt in enumerate(attempts):
            if i > 0:
                text = self.join(text + self.revision_prefix, attempt)
            if i < len(evaluations):
                text = self.join(text + self.evaluation_prefix, evaluations[i])
        return text

    def split(self, trajectory: str) -> list["Attempt"]:
        """Cut a trajectory into its attempts, each with the verdict that follows it (None when there is none).

        An evaluation starts at `evaluation_prefix` (or, when the model dropped the prefix, at a bare verdict) and
        ends at its verdict; an unterminated evaluation ends the trajectory. A trajectory that ends right after a
        "wrong" verdict yields a final, empty attempt: the model announced a revision it never wrote.
        """
        attempts = []
        position = 0
        while True:
            rest = trajectory[position:]
            verdicts = self.find_verdicts(rest)
            starts = [rest.find(self.evaluation_prefix.strip()), verdicts[0][0] if verdicts else -1]
            starts = [i for i in starts if i != -1]
            if not starts:
                attempts.append(Attempt(_strip_cue(rest, self.revision_prefix), None))
                return attempts
            start = min(starts)
            after = [v for v in verdicts if v[0] >= start]
            if not after:  # evaluation without a verdict: the attempt stands unjudged
                attempts.append(Attempt(_strip_cue(rest[:start], self.revision_prefix), None))
                return attempts
            _, end, verdict = after[0]
            attempts.append(Attempt(_strip_cue(rest[:start], self.revision_prefix), verdict))
            position += end
            if verdict == CORRECT or not trajectory[position:].strip():
                if verdict == WRONG:
                    attempts.append(Attempt("", None))
                return attempts


@dataclass(frozen=True)
class Attempt:
    """One attempt of a trajectory and the verdict the model gave it (None: not judged)."""

    text: str
    verdict: str | None


# Openers left in front of a verdict that the model put in a box, e.g. "$\\boxed{\\text{" (unwrapped).
_VERDICT_WRAPPER = re.compile(r"\s*(?:\$\s*)?\\boxed\s*\{\s*(?:\\(?:text|textbf|mathrm)\s*\{\s*)?$")


def _strip_cue(text: str, cue: str) -> str:
    text = text.strip()
    cue = cue.strip()
    return text[len(cue) :].strip() if cue and text.startswith(cue) else text
