"""The demo task: "Which number is larger, a or b?", generated in code.

Sized for SmolLM2-135M-Instruct on a CPU: with a one-line system prompt and one worked example, the model answers
with a bare number and stops (~96% of completions finish within 16 tokens) and is right about half of the time at
temperature 1 (48 samples), so GRPO gets a learning signal from the first step and LaSeR sees both correct and
incorrect answers. The prompt is kept short (56 tokens) because its forward and backward dominate a CPU step.
"""

import random

from datasets import Dataset


COMPARE_FEW_SHOT = [
    {"role": "system", "content": "Answer with a number."},
    {"role": "user", "content": "Which is larger, 45 or 72?"},
    {"role": "assistant", "content": "72"},
]


def make_compare_dataset(num_examples: int = 2000, seed: int = 0, low: int = 10, high: int = 99) -> Dataset:
    """Pairs of distinct two-digit numbers. Columns: `prompt` (conversational: system prompt, worked example, question),
    `problem` (the question alone), `answer` (the larger number, as a string)."""
    rng = random.Random(seed)
    rows = {"prompt": [], "problem": [], "answer": []}
    for _ in range(num_examples):
        a, b = rng.sample(range(low, high + 1), 2)
        problem = f"Which is larger, {a} or {b}?"
        rows["prompt"].append([*COMPARE_FEW_SHOT, {"role": "user", "content": problem}])
        rows["problem"].append(problem)
        rows["answer"].append(str(max(a, b)))
    return Dataset.from_dict(rows)
