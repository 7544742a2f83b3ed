"""Tasks (prompt, answer checking, correction wording), the verifier rewards, and the one dataset loader."""

from .answers import INTEGER_ANSWERS, MATH_ANSWERS, AnswerChecker, completion_text
from .compare import COMPARE_FEW_SHOT, COMPARE_TASK
from .data import BUILTIN_PREFIX, DatasetArguments, DatasetError, load_problems
from .format import CorrectionFormat
from .math import MATH_TASK
from .rewards import exact_answer_reward, math_answer_reward
from .sums import SUMS_FEW_SHOT, SUMS_TASK
from .task import TASKS, GeneratedProblem, Task, get_task, register_task


__all__ = [
    "BUILTIN_PREFIX",
    "COMPARE_FEW_SHOT",
    "COMPARE_TASK",
    "INTEGER_ANSWERS",
    "MATH_ANSWERS",
    "MATH_TASK",
    "SUMS_FEW_SHOT",
    "SUMS_TASK",
    "TASKS",
    "AnswerChecker",
    "CorrectionFormat",
    "DatasetArguments",
    "DatasetError",
    "GeneratedProblem",
    "Task",
    "completion_text",
    "exact_answer_reward",
    "get_task",
    "load_problems",
    "math_answer_reward",
    "register_task",
]
