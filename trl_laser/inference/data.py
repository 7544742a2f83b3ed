"""Problems with reference answers for evaluation: loading (jsonl, HF datasets, the built-in task) and prompts.

Every source becomes a list of `Problem`s. Columns are detected when not given: MATH-style `problem`/`answer` and
GSM8K-style `question`/`answer`, whose final answer follows `####`. A `prompt` column holding chat messages (as the
built-in "compare" task has, with its few-shot turns) is used as is; otherwise the problem is put in one user turn,
with an instruction to write the final answer in \\boxed{} for math datasets.
"""

import json
import os
from dataclasses import dataclass


BUILTIN_DATASETS = ("compare",)
DEFAULT_MATH_TEMPLATE = "{problem}\n\nPlease reason step by step, and put your final answer within \\boxed{}."
PROBLEM_COLUMNS = ("problem", "question")
ANSWER_COLUMNS = ("answer", "final_answer", "solution")
ANSWER_CHECKS = ("auto", "math", "exact")
# A held-out draw of the built-in task, different from the seed training scripts use by default.
BUILTIN_EVAL_SEED = 1234
BUILTIN_EVAL_SIZE = 500


@dataclass
class Problem:
    """One evaluation item.

    Attributes:
        problem: the question text.
        prompt: the chat messages sent to the model (ending with a user turn).
        answer: the reference final answer (None when the dataset has none).
        check: how answers are checked: "math" (math-verify) or "exact" (last integer equals the answer).
    """

    problem: str
    prompt: list[dict]
    answer: str | None
    check: str


class DatasetError(ValueError):
    """The evaluation data cannot be used as given; the message says what to change."""


def gsm8k_final_answer(answer: str) -> str:
    """The final answer of a GSM8K solution: the text after the last `####`, without thousands separators."""
    return answer.rsplit("####", 1)[-1].strip().replace(",", "")


def build_prompt(problem: str, template: str | None = DEFAULT_MATH_TEMPLATE) -> list[dict]:
    """One user turn holding `template` with `{problem}` replaced (plain replacement, so `\\boxed{}` needs no escaping).
    `template=None` sends the problem alone."""
    content = problem if template is None else template.replace("{problem}", problem)
    return [{"role": "user", "content": content}]


def _read_jsonl(path: str) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetError(
                    f"{path}, line {number}, is not valid JSON ({error.msg}); fix or remove it."
                ) from None
            if not isinstance(row, dict):
                raise DatasetError(f"{path}, line {number}, is not a JSON object with named fields.")
            rows.append(row)
    return rows


def _pick_split(dataset, split: str | None, source: str):
    from datasets import DatasetDict

    if not isinstance(dataset, DatasetDict):
        return dataset
    names = list(dataset)
    if split is None:
        split = "test" if "test" in names else names[0] if len(names) == 1 else None
    if split not in names:
        raise DatasetError(f"{source!r} has the splits {names}; choose one with --split.")
    return dataset[split]


def load_rows(source: str, split: str | None = None, limit: int | None = None) -> tuple[list[dict], bool]:
    """Rows of `source` as dicts, and whether it is the built-in task. See `load_problems` for the sources."""
    if source.startswith("builtin:"):
        name = source.split(":", 1)[1]
        if name not in BUILTIN_DATASETS:
            raise DatasetError(f"Unknown built-in dataset {name!r}; available: {', '.join(BUILTIN_DATASETS)}.")
        from ..tasks import make_compare_dataset

        dataset = make_compare_dataset(num_examples=limit or BUILTIN_EVAL_SIZE, seed=BUILTIN_EVAL_SEED)
        return dataset.to_list(), True

    if os.path.isfile(source):
        if source.endswith(".jsonl"):
            try:
                return _read_jsonl(source), False
            except (OSError, UnicodeDecodeError) as error:
                raise DatasetError(f"Cannot read {source!r}: {error}.") from None
        extension = {".json": "json", ".csv": "csv", ".parquet": "parquet"}.get(os.path.splitext(source)[1])
        if extension is None:
            raise DatasetError(f"{source!r} is not a .jsonl, .json, .csv or .parquet file.")
        from datasets import load_dataset

        try:
            return load_dataset(extension, data_files=source, split="train").to_list(), False
        except Exception as error:
            raise DatasetError(f"Cannot read {source!r} as {extension}: {error}") from None

    if os.path.splitext(source)[1] in (".jsonl", ".json", ".csv", ".parquet"):
        raise DatasetError(f"No such file: {source!r}. Check the --dataset path.")
    from datasets import load_dataset, load_from_disk

    saved = os.path.isdir(source) and any(
        os.path.isfile(os.path.join(source, name)) for name in ("dataset_info.json", "dataset_dict.json", "state.json")
    )
    try:
        dataset = load_from_disk(source) if saved else load_dataset(source)
    except Exception as error:
        raise DatasetError(
            f"Cannot load the dataset {source!r} ({type(error).__name__}: {error}). Pass a .jsonl file, a dataset "
            "directory (saved with save_to_disk), a reachable dataset id, or builtin:compare."
        ) from None
    return _pick_split(dataset, split, source).to_list(), False


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


def load_problems(
    source: str,
    problem_column: str | None = None,
    answer_column: str | None = None,
    split: str | None = None,
    prompt_template: str | None = None,
    answer_check: str = "auto",
    require_answer: bool = False,
    limit: int | None = None,
) -> list[Problem]:
    """Load evaluation problems.

    Args:
        source: a `.jsonl` (or .json/.csv/.parquet) file, a directory written by `Dataset.save_to_disk`, a dataset
            id or directory for `datasets.load_dataset`, or `builtin:compare` (a held-out draw of the built-in task).
        problem_column / answer_column: column names; detected when None (`problem` or `question`; `answer`).
        split: split of a dataset with several (default `test`).
        prompt_template: user-turn text with `{problem}`; default asks for a `\\boxed{}` answer on math data, and is
            not used when the rows carry chat messages in a `prompt` column.
        answer_check: "math" (math-verify), "exact" (last integer, the built-in task), or "auto" (exact for the
            built-in task, math otherwise).
        require_answer: raise if there is no answer column (evaluation needs one; prompts alone do not).
        limit: keep the first `limit` problems.
    Raises:
        DatasetError: with a message naming the option to change.
    """
    if answer_check not in ANSWER_CHECKS:
        raise DatasetError(f"answer_check must be one of {ANSWER_CHECKS}, not {answer_check!r}.")
    rows, builtin = load_rows(source, split=split, limit=limit)
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise DatasetError(f"{source!r} has no rows.")
    columns = list(dict.fromkeys(key for row in rows[:100] for key in row))
    problem_key = _choose_column(columns, problem_column, PROBLEM_COLUMNS, "problem", "--problem-column")
    answer_key = None
    if answer_column is not None or require_answer:
        answer_key = _choose_column(columns, answer_column, ANSWER_COLUMNS, "answer", "--answer-column")
    elif "answer" in columns:
        answer_key = "answer"
    check = answer_check if answer_check != "auto" else ("exact" if builtin else "math")
    template = prompt_template if prompt_template is not None else (DEFAULT_MATH_TEMPLATE if check == "math" else None)

    problems = []
    for number, row in enumerate(rows):
        text = row.get(problem_key)
        if not isinstance(text, str) or not text.strip():
            raise DatasetError(f"Row {number} of {source!r} has no text in its {problem_key!r} column.")
        answer = row.get(answer_key) if answer_key else None
        if answer is not None:
            answer = str(answer)
            if "####" in answer:
                answer = gsm8k_final_answer(answer)
        elif require_answer:
            raise DatasetError(f"Row {number} of {source!r} has no value in its answer column {answer_key!r}.")
        messages = row.get("prompt")
        if prompt_template is None and isinstance(messages, list) and messages and isinstance(messages[0], dict):
            prompt = messages
        else:
            prompt = build_prompt(text, template)
        problems.append(Problem(problem=text, prompt=prompt, answer=answer, check=check))
    return problems
