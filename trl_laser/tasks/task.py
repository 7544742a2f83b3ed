"""A task: how a kind of problem is posed, how its answers are read and checked, and how its self-correction is
worded. Training rewards, evaluation, voting and the correction pipeline all take these from the task, so a model is
evaluated on the prompt it was trained on."""

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from .answers import AnswerChecker
from .format import CorrectionFormat
from .rewards import REWARD_FUNCTIONS


class GeneratedProblem(NamedTuple):
    """A problem made by a built-in task's generator. `canonical` identifies the problem (e.g. "45|72" for both
    orders of a pair): it decides the problem's split, so equal problems always land in the same split. `solution`,
    when the task can write one, is a correctly worked answer in the format its prompt asks for (data for an SFT
    warm-start)."""

    problem: str
    answer: str
    canonical: str
    solution: str | None = None


@dataclass(frozen=True)
class Task:
    """
    Args:
        name: the task's name (`--task NAME`; `builtin:NAME` when it has a generator).
        answers: how final answers are read and compared (`MATH_ANSWERS` or `INTEGER_ANSWERS`).
        template: the user turn that poses a problem; `{problem}` is replaced by the problem text.
        few_shot: messages placed before the question (a system prompt, worked examples), in every prompt.
        correction: the wording of the self-rewarding correction format for this task.
        sample_problem: for a built-in task, draws one problem from a `random.Random`.
    """

    name: str
    answers: AnswerChecker
    template: str = "{problem}"
    few_shot: tuple[dict, ...] = ()
    correction: CorrectionFormat = field(default_factory=CorrectionFormat)
    sample_problem: Callable[[random.Random], GeneratedProblem] | None = None

    def build_prompt(self, problem: str) -> list[dict]:
        """The conversation that poses `problem`: the few-shot messages, then the question (plain replacement of
        `{problem}`, so neither the template's nor the problem's braces need escaping)."""
        question = {"role": "user", "content": self.template.replace("{problem}", problem)}
        return [*(dict(message) for message in self.few_shot), question]

    def extract_answer(self, text: str) -> str | None:
        return self.answers.extract(text)

    def check(self, text: str, gold: str) -> bool | None:
        """Whether the final answer of `text` is `gold`; None when `gold` cannot be read."""
        return self.answers.check(text, gold)

    def is_correct(self, text: str, gold: str) -> bool:
        return self.check(text, gold) is True

    def answers_match(self, predicted: str | None, gold: str) -> bool:
        """Whether an already extracted answer is right (False when `gold` cannot be read)."""
        return self.answers.match(predicted, gold) is True

    def same_answer(self, a: str, b: str) -> bool:
        return self.answers.equivalent(a, b)

    @property
    def reward_function(self) -> Callable[..., list[float | None]]:
        """The verifier reward in TRL's signature; it reads the dataset's `answer` column."""
        return REWARD_FUNCTIONS[self.answers.name]


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Make `task` available by name (`load_problems(..., task=NAME)`, `--task NAME`); a task with a
    `sample_problem` generator is also the dataset `builtin:NAME`."""
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; available: {', '.join(sorted(TASKS))}.")
    return TASKS[name]
