"""Reading and checking final answers: one checker for math (math-verify) and one for exact integers.

A checker reads the final answer of a solution as a string (None when there is none) and compares answers. The same
reading serves the training reward, grading and voting at evaluation, and the self-correction pipeline.
"""

import re
from collections.abc import Sequence
from functools import lru_cache


_INTEGER = re.compile(r"-?\d+")


def completion_text(completion) -> str:
    """The text of a completion as TRL passes it to reward functions: a plain string as is; for a conversational
    completion (a list of messages), the content of its last assistant message."""
    if isinstance(completion, str):
        return completion
    replies = [message for message in completion if message.get("role") == "assistant"] or list(completion)
    return replies[-1]["content"] if replies else ""


def gsm8k_final_answer(answer: str) -> str:
    """The final answer of a GSM8K solution: the text after the last `####`, without thousands separators."""
    return answer.rsplit("####", 1)[-1].strip().replace(",", "")


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`) in `text`, with nested braces; None if there is none
    or if the last one is never closed (a generation cut by the length limit)."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start == -1:
        return None
    brace = text.find("{", start)
    if brace == -1:
        return None
    depth = 0
    for i in range(brace, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[brace + 1 : i]
    return None


def extract_last_integer(text: str) -> int | None:
    """The last integer written in `text` (thousands separators ignored), or None."""
    numbers = _INTEGER.findall(text.replace(",", ""))
    return int(numbers[-1]) if numbers else None


class AnswerChecker:
    """How a task reads and compares final answers. Subclasses define `extract`, `match` and `equivalent`."""

    name: str

    def extract(self, text: str) -> str | None:
        """The final answer written in `text`, or None."""
        raise NotImplementedError

    def match(self, predicted: str | None, gold: str) -> bool | None:
        """Whether the extracted answer `predicted` is the reference `gold`; None when `gold` itself is unreadable
        (the row cannot be graded)."""
        raise NotImplementedError

    def equivalent(self, a: str, b: str) -> bool:
        """Whether two extracted answers are the same answer (they then share a vote)."""
        raise NotImplementedError

    def check(self, text: str, gold: str) -> bool | None:
        """Whether the final answer of `text` is right; None when `gold` is unreadable."""
        return self.match(self.extract(text), gold)

    def rewards(self, completions: Sequence, answer: Sequence[str]) -> list[float | None]:
        """1.0 / 0.0 per completion, None where the reference answer is unreadable (TRL then leaves the row out)."""
        checks = [self.check(completion_text(c), gold) for c, gold in zip(completions, answer, strict=True)]
        return [None if ok is None else float(ok) for ok in checks]


class IntegerAnswers(AnswerChecker):
    """The last integer of the text, compared exactly."""

    name = "integer"

    def extract(self, text: str) -> str | None:
        number = extract_last_integer(text)
        return None if number is None else str(number)

    def match(self, predicted: str | None, gold: str) -> bool | None:
        try:
            reference = int(str(gold).strip().replace(",", ""))
        except ValueError:
            return None
        return predicted is not None and int(predicted) == reference

    def equivalent(self, a: str, b: str) -> bool:
        return int(a) == int(b)


@lru_cache(maxsize=8192)
def _parse_boxed(answer: str) -> tuple:
    from math_verify import parse

    try:
        return tuple(parse(answer if "\\boxed" in answer else f"\\boxed{{{answer}}}"))
    except Exception:  # math-verify raises on some pathological inputs: an answer it cannot read
        return ()


def _verify(gold: tuple, predicted: tuple) -> bool:
    from math_verify import verify

    try:
        return bool(gold) and bool(predicted) and bool(verify(list(gold), list(predicted)))
    except Exception:  # a checker error must cost a reward, not crash a training run
        return False


class MathAnswers(AnswerChecker):
    """The content of the last `\\boxed{}`, compared with math-verify (so "1/2", "0.5" and "\\frac{1}{2}" agree)."""

    name = "math"

    def extract(self, text: str) -> str | None:
        answer = last_boxed(text)
        return answer.strip() if answer and answer.strip() else None

    def match(self, predicted: str | None, gold: str) -> bool | None:
        reference = _parse_boxed(str(gold))
        if not reference:
            return None
        return predicted is not None and _verify(reference, _parse_boxed(predicted))

    def equivalent(self, a: str, b: str) -> bool:
        return a == b or _verify(_parse_boxed(a), _parse_boxed(b))


INTEGER_ANSWERS = IntegerAnswers()
MATH_ANSWERS = MathAnswers()
