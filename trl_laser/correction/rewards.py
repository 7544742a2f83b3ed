"""Answer checking for self-rewarding correction, and the stage-2 (RL) reward on whole trajectories.

The RL reward is the correctness of the LAST final answer of the trajectory, 0/1, and nothing else: no format bonus,
no bonus for correcting a wrong first attempt (the method reports that such a bonus is hacked by answering wrong on
purpose first). Malformed trajectories get 0 and never raise.
"""

from collections.abc import Callable, Sequence

from math_verify import parse, verify

from ..tasks.rewards import extract_last_integer
from .format import CorrectionFormat


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


def extract_answer(text: str, is_math: bool) -> str | None:
    """The final answer written in one attempt: its last boxed expression (math) or its last integer (built-in)."""
    if is_math:
        return last_boxed(text)
    number = extract_last_integer(text)
    return None if number is None else str(number)


def answers_match(predicted: str | None, gold: str, is_math: bool) -> bool:
    """Whether an extracted answer equals the gold answer: math-verify for math, exact integers for the built-in task.

    math-verify can raise or time out on exotic input; any failure counts as "not correct".
    """
    if predicted is None:
        return False
    if not is_math:
        try:
            return int(predicted) == int(str(gold).strip())
        except ValueError:
            return False
    try:
        gold_parsed = parse(f"\\boxed{{{gold}}}" if "\\boxed" not in str(gold) else str(gold))
        return bool(gold_parsed) and bool(verify(gold_parsed, parse(f"\\boxed{{{predicted}}}")))
    except Exception:  # noqa: BLE001 - a checker error must cost a reward, not crash a training run
        return False


def is_correct(text: str, gold: str, is_math: bool) -> bool:
    """Whether the final answer of one attempt is right."""
    return answers_match(extract_answer(text, is_math), gold, is_math)


def final_answer(trajectory: str, fmt: CorrectionFormat, is_math: bool) -> str | None:
    """The answer of the LAST attempt of a trajectory, or None when the trajectory is malformed.

    Malformed: no attempt has an answer; the last attempt has no answer (e.g. a revision cut by the length limit, or a
    verdict written without any answer before it); or the trajectory ends on a "wrong" verdict with no revision.
    """
    attempts = fmt.split(trajectory)
    return extract_answer(attempts[-1].text, is_math) if attempts else None


def make_trajectory_reward(
    fmt: CorrectionFormat, is_math: bool, eos_token_ids: Sequence[int] | None = None
) -> Callable[..., list[float]]:
    """A reward function with TRL's signature, `f(completions, answer, **kwargs) -> list[float]`.

    1.0 when the last final answer of the trajectory is right, else 0.0. When `eos_token_ids` is given and TRL passes
    `completion_ids`, a completion that did not end with one of them (cut by `max_completion_length`, e.g. an endless
    revise loop) gets 0: its "last answer" is only where the cut happened to fall.
    """
    eos = set(eos_token_ids or ())

    def trajectory_reward(completions, answer, completion_ids=None, **kwargs) -> list[float]:
        rewards = []
        for i, (completion, gold) in enumerate(zip(completions, answer, strict=True)):
            text = completion[-1]["content"] if isinstance(completion, list) else completion
            truncated = (
                bool(eos)
                and completion_ids is not None
                and (len(completion_ids[i]) == 0 or int(completion_ids[i][-1]) not in eos)
            )
            ok = not truncated and answers_match(final_answer(text, fmt, is_math), gold, is_math)
            rewards.append(float(ok))
        return rewards

    # TRL logs each reward under the function's name.
    trajectory_reward.__name__ = "last_answer_reward"
    return trajectory_reward
