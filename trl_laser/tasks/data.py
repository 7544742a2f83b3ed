"""The one dataset loader: problems with reference answers, posed with their task's prompt.

Sources: `builtin:<task>` (generated, with disjoint train / validation / test splits), a `.jsonl` / `.json` /
`.csv` / `.parquet` file (one split), a directory written by `save_to_disk`, or a dataset id for
`datasets.load_dataset`. Columns are detected when not named: MATH-style `problem`/`answer`, GSM8K-style
`question`/`answer` (whose final answer follows `####`, parsed here once).
"""

import os
from dataclasses import dataclass, field

from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

from .answers import gsm8k_final_answer
from .builtin import generate_problems
from .task import TASKS, Task, get_task


BUILTIN_PREFIX = "builtin:"
FILE_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
PROBLEM_COLUMNS = ("problem", "question")
ANSWER_COLUMNS = ("answer", "final_answer", "solution")
ID_COLUMNS = ("problem_id", "unique_id", "id", "idx")


class DatasetError(ValueError):
    """The data cannot be used as given; the message says what to change."""


def load_problems(
    dataset_name: str,
    split: str = "train",
    num_problems: int | None = None,
    *,
    seed: int = 0,
    dataset_config: str | None = None,
    task: str | Task | None = None,
    problem_column: str | None = None,
    answer_column: str | None = None,
    require_answers: bool = True,
) -> tuple[Dataset, Task]:
    """Load problems and the task they belong to.

    Args:
        dataset_name: `builtin:<task>`, a data file, a `save_to_disk` directory, or a dataset id.
        split: the split to read (`train`, `validation` or `test` for built-in tasks; ignored for a single file).
        num_problems: generate this many built-in problems (default: 2000 for train, 500 otherwise), or keep the
            first `num_problems` rows of other sources.
        seed: seed of the built-in generator.
        task: the task (or its name) that poses and checks the problems: default the built-in task itself, `math`
            for other sources.
        problem_column / answer_column: column names, detected when None.
        require_answers: raise when there is no answer column (measuring c_ref needs prompts only).

    Returns:
        A `Dataset` with the columns `problem_id`, `problem`, `answer` (a string: the final answer) and `prompt` (the
        task's conversation for the problem), plus the source's other columns; and the `Task`.

    Raises:
        DatasetError: with a message naming the option to change.
    """
    if dataset_name.startswith(BUILTIN_PREFIX):
        name = dataset_name[len(BUILTIN_PREFIX) :]
        generated = sorted(BUILTIN_PREFIX + t.name for t in TASKS.values() if t.sample_problem is not None)
        if name not in TASKS or TASKS[name].sample_problem is None:
            raise DatasetError(f"Unknown built-in dataset {dataset_name!r}; available: {', '.join(generated)}.")
        task = _resolve_task(task, TASKS[name])
        try:
            rows = generate_problems(TASKS[name], split, num_problems, seed)
        except ValueError as error:
            raise DatasetError(str(error)) from None
        return Dataset.from_list([dict(row, prompt=task.build_prompt(row["problem"])) for row in rows]), task

    task = _resolve_task(task, get_task("math"))
    dataset = _read(dataset_name, split, dataset_config)
    if num_problems is not None:
        dataset = dataset.select(range(min(num_problems, len(dataset))))
    if len(dataset) == 0:
        raise DatasetError(f"{dataset_name!r} has no rows.")
    columns = dataset.column_names
    problem_key = _choose_column(columns, problem_column, PROBLEM_COLUMNS, "problem", "--problem-column")
    answer_key = None
    if answer_column is not None or require_answers:
        answer_key = _choose_column(columns, answer_column, ANSWER_COLUMNS, "answer", "--answer-column")
    id_key = next((c for c in ID_COLUMNS if c in columns), None)
    for number, text in enumerate(dataset[problem_key]):
        if not isinstance(text, str) or not text.strip():
            raise DatasetError(f"Row {number} of {dataset_name!r} has no text in its {problem_key!r} column.")
    for number, answer in enumerate(dataset[answer_key] if answer_key else []):
        if answer is None:
            raise DatasetError(f"Row {number} of {dataset_name!r} has no value in its answer column {answer_key!r}.")

    def to_problem(row, index):
        answer = str(row[answer_key]) if answer_key else None
        return {
            "problem_id": str(row[id_key]) if id_key else str(index),
            "problem": row[problem_key],
            "answer": gsm8k_final_answer(answer) if answer and "####" in answer else answer,
            "prompt": task.build_prompt(row[problem_key]),
        }

    replaced = [c for c in ("problem_id", "problem", "answer", "prompt") if c in columns]
    return dataset.map(to_problem, with_indices=True, remove_columns=replaced), task


def _resolve_task(task: str | Task | None, default: Task) -> Task:
    if task is None:
        return default
    return task if isinstance(task, Task) else get_task(task)


def _read(dataset_name: str, split: str, dataset_config: str | None) -> Dataset:
    extension = os.path.splitext(dataset_name)[1]
    if extension in FILE_FORMATS:
        if not os.path.isfile(dataset_name):
            raise DatasetError(f"No such file: {dataset_name!r}. Check --dataset-name.")
        try:
            return load_dataset(FILE_FORMATS[extension], data_files=dataset_name, split="train")
        except Exception as error:
            while error.__cause__ is not None:  # the reader's own message, not the dataset builder's wrapper
                error = error.__cause__
            raise DatasetError(f"Cannot read {dataset_name!r} as {FILE_FORMATS[extension]}: {error}") from None
    saved = os.path.isdir(dataset_name) and any(
        os.path.isfile(os.path.join(dataset_name, name))
        for name in ("dataset_info.json", "dataset_dict.json", "state.json")
    )
    try:
        dataset = load_from_disk(dataset_name) if saved else load_dataset(dataset_name, dataset_config, split=split)
    except Exception as error:
        raise DatasetError(
            f"Cannot load the dataset {dataset_name!r} ({type(error).__name__}: {error}). Pass builtin:<task>, a "
            ".jsonl/.json/.csv/.parquet file, a directory saved with save_to_disk, or a reachable dataset id."
        ) from None
    if isinstance(dataset, DatasetDict):
        if split not in dataset:
            raise DatasetError(f"{dataset_name!r} has the splits {list(dataset)}, not {split!r}; choose one.")
        dataset = dataset[split]
    return dataset


def _choose_column(columns: list[str], given: str | None, candidates: tuple[str, ...], what: str, flag: str) -> str:
    if given is not None:
        if given not in columns:
            raise DatasetError(f"The dataset has no column {given!r} ({what}); its columns are {columns}. Fix {flag}.")
        return given
    for name in candidates:
        if name in columns:
            return name
    raise DatasetError(
        f"Cannot find the {what} column: looked for {list(candidates)}, the dataset has {columns}. Name it with {flag}."
    )


@dataclass
class DatasetArguments:
    """Where the problems come from, for command lines and YAML configs (the arguments of `load_problems`)."""

    dataset_name: str = field(
        default="builtin:compare",
        metadata={
            "help": "builtin:<task> (generated; e.g. builtin:compare), a .jsonl/.json/.csv/.parquet file, a directory "
            "saved with `save_to_disk`, or a dataset id."
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration name of a Hub dataset."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on or sample data from."})
    dataset_test_split: str = field(default="test", metadata={"help": "Split to evaluate on."})
    task: str | None = field(
        default=None,
        metadata={
            "help": "Task that poses and checks the problems: 'math' (\\boxed{} answers, math-verify) or a built-in "
            "task name such as 'compare' (integer answers). Default: the built-in task itself, else 'math'."
        },
    )
    problem_column: str | None = field(
        default=None, metadata={"help": "Column with the problem text (default: 'problem' or 'question')."}
    )
    answer_column: str | None = field(
        default=None,
        metadata={
            "help": "Column with the reference answer (default: 'answer', 'final_answer' or 'solution'). GSM8K-style "
            "'... #### 42' answers are cut to the final answer."
        },
    )
    num_problems: int | None = field(
        default=None,
        metadata={
            "help": "Built-in tasks: problems to generate (default 2000 for train, 500 otherwise); else the first N "
            "rows."
        },
    )
    dataset_seed: int = field(default=0, metadata={"help": "Seed of the built-in problem generator."})

    def load(self, split: str, require_answers: bool = True) -> tuple[Dataset, Task]:
        return load_problems(
            self.dataset_name,
            split,
            self.num_problems,
            seed=self.dataset_seed,
            dataset_config=self.dataset_config,
            task=self.task,
            problem_column=self.problem_column,
            answer_column=self.answer_column,
            require_answers=require_answers,
        )
