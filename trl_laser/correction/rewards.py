"""The stage-2 (RL) reward of self-rewarding correction, on whole trajectories.

The reward is the correctness of the LAST final answer of the trajectory, 0/1, and nothing else: no format bonus, no
bonus for correcting a wrong first attempt (the method reports that such a bonus is hacked by answering wrong on
purpose first). Malformed trajectories get 0 and never raise.
"""

from collections.abc import Callable, Sequence

from ..tasks.answers import completion_text
from ..tasks.task import Task


def final_answer(trajectory: str, task: Task) -> str | None:
    """The answer of the LAST attempt of a trajectory, or None when the trajectory is malformed.

    Malformed: no attempt has an answer; the last attempt has no answer (e.g. a revision cut by the length limit, or a
    verdict written without any answer before it); or the trajectory ends on a "wrong" verdict with no revision.
    """
    attempts = task.correction.split(trajectory)
    return task.extract_answer(attempts[-1].text) if attempts else None


def cut_before_eos(completion_ids, row: int, eos_token_ids: set[int]) -> bool:
    """Whether TRL's completion `row` did not end with one of `eos_token_ids` (cut by the length limit). False when
    either is unknown (no EOS ids given, or TRL passed no `completion_ids`)."""
    if not eos_token_ids or completion_ids is None:
        return False
    ids = completion_ids[row]
    return len(ids) == 0 or int(ids[-1]) not in eos_token_ids


def make_trajectory_reward(task: Task, eos_token_ids: Sequence[int] | None = None) -> Callable[..., list[float]]:
    """A reward function with TRL's signature, `f(completions, answer, **kwargs) -> list[float]`.

    1.0 when the last final answer of the trajectory is right, else 0.0. When `eos_token_ids` is given and TRL passes
    `completion_ids`, a completion that did not end with one of them (cut by `max_completion_length`, e.g. an endless
    revise loop) gets 0: its "last answer" is only where the cut happened to fall.
    """
    eos = set(eos_token_ids or ())

    def trajectory_reward(completions, answer, completion_ids=None, **kwargs) -> list[float]:
        rewards = []
        for i, (completion, gold) in enumerate(zip(completions, answer, strict=True)):
            truncated = cut_before_eos(completion_ids, i, eos)
            ok = not truncated and task.answers_match(final_answer(completion_text(completion), task), gold)
            rewards.append(float(ok))
        return rewards

    # TRL logs each reward under the function's name.
    trajectory_reward.__name__ = "last_answer_reward"
    return trajectory_reward
