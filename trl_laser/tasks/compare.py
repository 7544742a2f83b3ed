"""The demo task: "Which is larger, a or b?" for two-digit numbers, generated in code.

Sized for SmolLM2-135M-Instruct on a CPU: with a one-line system prompt and one worked example, the model answers
with a bare number and stops (~96% of completions finish within 16 tokens) and is right about half of the time at
temperature 1 (48 samples), so GRPO gets a learning signal from the first step and LaSeR sees both correct and
incorrect answers. The prompt is kept short (56 tokens) because its forward and backward dominate a CPU step.
"""

import random

from .answers import INTEGER_ANSWERS
from .format import CorrectionFormat
from .task import GeneratedProblem, Task, register_task


COMPARE_FEW_SHOT = [
    {"role": "system", "content": "Answer with a number."},
    {"role": "user", "content": "Which is larger, 45 or 72?"},
    {"role": "assistant", "content": "72"},
]
_WORKED_PAIR = (45, 72)


def sample_compare_problem(rng: random.Random, low: int = 10, high: int = 99) -> GeneratedProblem:
    """A pair of distinct numbers in [low, high]; the answer is the larger one. Both orders of a pair are one
    problem (same canonical form), and the pair of the worked example is never asked (its answer is in the prompt)."""
    while True:
        a, b = rng.sample(range(low, high + 1), 2)
        if tuple(sorted((a, b))) != _WORKED_PAIR:
            return GeneratedProblem(f"Which is larger, {a} or {b}?", str(max(a, b)), f"{min(a, b)}|{max(a, b)}")


COMPARE_TASK = register_task(
    Task(
        name="compare",
        answers=INTEGER_ANSWERS,
        few_shot=tuple(COMPARE_FEW_SHOT),
        correction=CorrectionFormat(
            verify_prompt="Was your answer wrong? Reply `[VERIFY] wrong.` or `[VERIFY] correct.`",
            revise_prompt="Your answer is wrong. Answer again with just the larger number.",
            # Measured with SmolLM2-135M-Instruct at temperature 1: without a forced start it writes almost no
            # verdict; with "[VERIFY]" forced about a third of its evaluations hold exactly one, of both kinds.
            evaluation_start="[VERIFY]",
        ),
        sample_problem=sample_compare_problem,
    )
)
