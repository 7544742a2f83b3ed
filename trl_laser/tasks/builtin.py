"""Problems of a built-in task, generated in code, in train / validation / test splits that cannot overlap.

Each problem belongs to one split, chosen by a stable hash (SHA-256, not Python's salted `hash`) of the task's name
and the problem's canonical form. A split is drawn from the task's generator by keeping the problems that fall in it,
without repeats, so the same problem can never be trained on and tested on, whatever the seeds and sizes.
"""

import hashlib
import random

from .task import Task


SPLITS = {"train": (0.0, 0.8), "validation": (0.8, 0.9), "test": (0.9, 1.0)}
"""The share of the problem space in each split, as an interval of [0, 1)."""

DEFAULT_SIZES = {"train": 2000, "validation": 500, "test": 500}


def split_of(task_name: str, canonical: str) -> str:
    """The split a problem belongs to."""
    digest = hashlib.sha256(f"{task_name}\n{canonical}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    return next(name for name, (low, high) in SPLITS.items() if low <= position < high)


def generate_problems(task: Task, split: str, num_problems: int | None = None, seed: int = 0) -> list[dict]:
    """`num_problems` distinct problems of `split` (default: `DEFAULT_SIZES[split]`), as rows with `problem_id`,
    `problem` and `answer`, and `solution` (a correctly worked answer) when the task's generator writes one. The same
    task, split, size and seed always give the same rows."""
    if task.sample_problem is None:
        raise ValueError(f"The task {task.name!r} has no problem generator, so it has no built-in dataset.")
    if split not in SPLITS:
        raise ValueError(f"Built-in datasets have the splits {list(SPLITS)}, not {split!r}.")
    size = DEFAULT_SIZES[split] if num_problems is None else num_problems
    rng = random.Random(seed)
    rows, seen = [], set()
    # The generator's space may be small (the demo task has ~800 test problems); give up rather than loop forever.
    for _ in range(100 * size + 10_000):
        if len(rows) == size:
            break
        problem = task.sample_problem(rng)
        if problem.problem in seen or split_of(task.name, problem.canonical) != split:
            continue
        seen.add(problem.problem)
        # The id is derived from the problem, so runs with other seeds or sizes agree on it (resume keys).
        problem_id = f"{task.name}-{hashlib.sha256(problem.problem.encode()).hexdigest()[:12]}"
        row = {"problem_id": problem_id, "problem": problem.problem, "answer": problem.answer}
        # Only tasks that write solutions get the column, so the rows of the others keep their shape.
        if problem.solution is not None:
            row["solution"] = problem.solution
        rows.append(row)
    if len(rows) < size:
        raise ValueError(
            f"builtin:{task.name} has only about {len(rows)} distinct problems in its {split!r} split; ask for fewer."
        )
    return rows
