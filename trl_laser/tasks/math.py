"""Math problems with a reference answer, answered in `\\boxed{}` and checked with math-verify.

The prompt is the one the self-rewarding correction method uses; training, evaluation and correction share it.
"""

from .answers import MATH_ANSWERS
from .task import Task, register_task


MATH_TEMPLATE = "{problem}\nPlease reason step by step, and put your final answer within \\boxed{}."

MATH_TASK = register_task(Task(name="math", answers=MATH_ANSWERS, template=MATH_TEMPLATE))
