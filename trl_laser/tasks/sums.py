"""A task with written work: "What is 23 + 45 + 17?", answered by adding one term at a time, generated in code.

On `compare` the answer is one or two tokens, so its own probability already tells whether it is right and a trained
last-token score has little to add. Here the model writes the partial sums before its final answer: a slip in an
early step carries through to a wrong answer that is then written with confidence, so whether the answer is right is
visible only by checking the work, which is what a self-verifier is for.

Every problem comes with a correctly worked solution in the format of the worked example (`solution`), so a short
SFT warm-start (`trl_laser.training.warm_start`) can teach a small model the format and to stop after the answer.

Sized for SmolLM2-135M-Instruct on a CPU (measured at temperature 1 on 48 validation problems x 4 samples): three
two-digit terms, a prompt of 90 tokens and answers of 34 tokens (35 at most, EOS included). Out of the box the model
finishes only about half of its answers in this format. After a warm-start on 128 worked solutions every completion
finishes within 40 tokens and 39 % are right, with right and wrong answers among the four samples of 65 % of the
problems; after 256, 53 % (96 problems x 8 samples); after 512, 69 %. Sixty steps of GRPO on two CPU cores move the
arithmetic by a few points (a larger learning rate makes it worse), so the reproduction's warm-start (256) sets the
level. Four terms would take ~46 tokens per answer, too long for a CPU step.
"""

import random

from .answers import INTEGER_ANSWERS
from .format import CorrectionFormat
from .task import GeneratedProblem, Task, register_task


SUMS_FEW_SHOT = [
    {"role": "system", "content": "Add the numbers step by step."},
    {"role": "user", "content": "What is 23 + 45 + 17?"},
    {"role": "assistant", "content": "23 + 45 = 68. 68 + 17 = 85. The answer is 85."},
]
_WORKED_TERMS = (17, 23, 45)

SUMS_TERMS = (3, 3)
"""The number of terms of a problem (inclusive range)."""
SUMS_RANGE = (10, 99)
"""The range of each term (inclusive)."""


def worked_solution(terms: list[int]) -> str:
    """The solution in the worked example's format: one partial sum per step, then the answer (so the answer is the
    last integer of the text, as `INTEGER_ANSWERS` reads it)."""
    steps, total = [], terms[0]
    for term in terms[1:]:
        steps.append(f"{total} + {term} = {total + term}.")
        total += term
    return " ".join([*steps, f"The answer is {total}."])


def sample_sums_problem(
    rng: random.Random, terms: tuple[int, int] = SUMS_TERMS, low: int = SUMS_RANGE[0], high: int = SUMS_RANGE[1]
) -> GeneratedProblem:
    """Between `terms[0]` and `terms[1]` numbers in [low, high], to be added in the order asked. The numbers, sorted,
    are the canonical form: the same numbers in another order are one problem (same answer, same split), and the
    worked example's numbers are never asked (its solution is in the prompt)."""
    while True:
        numbers = [rng.randint(low, high) for _ in range(rng.randint(*terms))]
        canonical = tuple(sorted(numbers))
        if canonical != _WORKED_TERMS:
            return GeneratedProblem(
                problem=f"What is {' + '.join(map(str, numbers))}?",
                answer=str(sum(numbers)),
                canonical="+".join(map(str, canonical)),
                solution=worked_solution(numbers),
            )


SUMS_TASK = register_task(
    Task(
        name="sums",
        answers=INTEGER_ANSWERS,
        few_shot=tuple(SUMS_FEW_SHOT),
        correction=CorrectionFormat(
            verify_prompt="Check each step of your sum. Reply `[VERIFY] wrong.` or `[VERIFY] correct.`",
            revise_prompt="Your answer is wrong. Add the numbers again step by step.",
            # As on `compare`: a small model rarely writes a verdict unless its evaluation is started for it.
            evaluation_start="[VERIFY]",
        ),
        sample_problem=sample_sums_problem,
    )
)
