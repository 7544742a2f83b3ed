"""Verifier rewards in TRL's reward-function signature: `f(completions, answer, **kwargs) -> list[float | None]`.

TRL logs each reward under its function's name, so each checker has one named function.
"""

from .answers import INTEGER_ANSWERS, MATH_ANSWERS


def exact_answer_reward(completions, answer, **kwargs) -> list[float | None]:
    """1.0 when the last integer of the completion equals the integer answer, else 0.0 (None: the answer is not an
    integer, and the row is left out)."""
    return INTEGER_ANSWERS.rewards(completions, answer)


def math_answer_reward(completions, answer, **kwargs) -> list[float | None]:
    """1.0 when the completion's last `\\boxed{}` answer equals the reference answer by math-verify, else 0.0 (None:
    the reference answer cannot be parsed, and the row is left out of the LaSeR loss)."""
    return MATH_ANSWERS.rewards(completions, answer)


REWARD_FUNCTIONS = {INTEGER_ANSWERS.name: exact_answer_reward, MATH_ANSWERS.name: math_answer_reward}
