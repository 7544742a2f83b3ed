"""Verifier rewards in TRL's reward-function signature: `f(completions, <dataset columns>, **kwargs) -> list`."""

import re

from math_verify import parse, verify


_INTEGER = re.compile(r"-?\d+")


def _text(completion) -> str:
    # Conversational completions are a list with one assistant message; standard ones are plain strings.
    return completion[0]["content"] if isinstance(completion, list) else completion


def extract_last_integer(text: str) -> int | None:
    """The last integer written in `text`, or None."""
    numbers = _INTEGER.findall(text.replace(",", ""))
    return int(numbers[-1]) if numbers else None


def exact_answer_reward(completions, answer, **kwargs) -> list[float]:
    """1.0 when the last integer of the completion equals the integer answer, else 0.0 (built-in tasks)."""
    rewards = []
    for completion, gold in zip(completions, answer, strict=True):
        predicted = extract_last_integer(_text(completion))
        rewards.append(float(predicted is not None and predicted == int(gold)))
    return rewards


def math_answer_reward(completions, answer, **kwargs) -> list[float | None]:
    """Math answers checked with math-verify: the completion's `\\boxed{}` answer against the gold answer.

    Returns None (no reward: the completion is left out of the LaSeR loss) when the gold answer cannot be parsed.
    """
    rewards = []
    for completion, gold in zip(completions, answer, strict=True):
        gold_parsed = parse(f"\\boxed{{{gold}}}" if "\\boxed" not in str(gold) else str(gold))
        if not gold_parsed:
            rewards.append(None)
            continue
        rewards.append(float(verify(gold_parsed, parse(_text(completion)))))
    return rewards
