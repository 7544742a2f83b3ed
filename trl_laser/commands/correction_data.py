"""`trl-laser correction-data`: stage 1 of self-rewarding correction (sequential rejection sampling).

    trl-laser correction-data --dataset builtin:compare --num-problems 32 --output data/correction

writes `trajectories.jsonl`, `problems.jsonl`, `stats.json` and a `dataset/` directory (`datasets.save_to_disk`, with
a `messages` column) that `examples/sft_self_correction.py` trains on. Rerun the same command to resume.
"""

import json
import logging


BUILTIN_PREFIX = "builtin:"


def load_problems(
    dataset: str,
    num_problems: int | None = None,
    split: str = "train",
    problem_column: str | None = None,
    answer_column: str = "answer",
    seed: int = 0,
) -> tuple[list[dict], bool]:
    """Problems as dicts (`problem_id`, `problem`, `answer`) and whether they are math (checked with math-verify).

    `dataset` is `builtin:compare`, a `.jsonl`/`.json` file, a directory saved with `save_to_disk`, or a Hub name.
    The problem column defaults to the first of `problem`, `question`; GSM8K-style answers ("... #### 18") are cut
    to the final answer.
    """
    import os

    from datasets import load_dataset, load_from_disk

    if dataset.startswith(BUILTIN_PREFIX):
        name = dataset[len(BUILTIN_PREFIX) :]
        if name != "compare":
            raise ValueError(f"Unknown built-in dataset {name!r}; available: builtin:compare.")
        from ..tasks import make_compare_dataset

        rows = make_compare_dataset(num_problems or 64, seed=seed)
        return [
            {"problem_id": str(i), "problem": r["problem"], "answer": r["answer"]} for i, r in enumerate(rows)
        ], False
    if dataset.endswith((".jsonl", ".json")):
        rows = load_dataset("json", data_files=dataset, split="train")
    elif os.path.isdir(dataset):
        rows = load_from_disk(dataset)
        rows = rows[split] if hasattr(rows, "keys") else rows
    else:
        rows = load_dataset(dataset, split=split)
    if num_problems is not None:
        rows = rows.select(range(min(num_problems, len(rows))))
    column = problem_column or next((c for c in ("problem", "question") if c in rows.column_names), None)
    if column is None or answer_column not in rows.column_names:
        raise ValueError(f"{dataset} needs a problem column and {answer_column!r}; columns are {rows.column_names}.")
    id_column = next((c for c in ("problem_id", "unique_id", "id", "idx") if c in rows.column_names), None)
    problems = []
    for i, r in enumerate(rows):
        answer = str(r[answer_column])
        answer = answer.split("####")[-1].strip() if "####" in answer else answer
        problem_id = str(r[id_column]) if id_column else str(i)
        problems.append({"problem_id": problem_id, "problem": r[column], "answer": answer})
    return problems, True


def run(args) -> int:
    import torch

    from ..correction.format import default_format
    from ..correction.generation import load_generator
    from ..correction.rejection_sampling import RejectionSamplingConfig, run_rejection_sampling

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    problems, is_math = load_problems(
        args.dataset, args.num_problems, args.split, args.problem_column, args.answer_column, args.seed
    )
    model = args.model
    if model is None:
        from ..demo_model import demo_model_path

        model = demo_model_path()
    torch.manual_seed(args.seed)
    generator = load_generator(
        model,
        backend=args.backend,
        temperature=args.temperature,
        top_p=args.top_p,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    config = RejectionSamplingConfig(
        num_attempts=args.num_attempts,
        num_evaluations=args.num_evaluations,
        num_revisions_wrong=args.num_revisions_wrong,
        num_revisions_correct=args.num_revisions_correct,
        max_per_type=args.max_per_type,
        max_new_tokens=args.max_new_tokens,
        evaluation_max_new_tokens=args.evaluation_max_new_tokens,
        problems_per_batch=args.problems_per_batch,
    )
    stats = run_rejection_sampling(problems, generator, args.output, default_format(is_math), config, is_math)
    print(json.dumps(stats, indent=2))
    print(
        f"Kept {stats['kept_total']} trajectories in {args.output} (D1 {stats.get('kept_D1', 0)}, "
        f"D2 {stats.get('kept_D2', 0)}, D3 {stats.get('kept_D3', 0)})."
    )
    return 0


def register(subparsers):
    parser = subparsers.add_parser(
        "correction-data",
        help="sequential rejection sampling of self-correction trajectories (stage 1 data for SFT)",
        description="Sample first attempts, self-evaluations and revisions; keep the ones that agree with the "
        "verifier; write a conversational dataset for TRL's SFTTrainer. Rerun the same command to resume.",
    )
    parser.add_argument("--model", default=None, help="model path or Hub id (default: the SmolLM2-135M demo model)")
    parser.add_argument(
        "--dataset",
        default="builtin:compare",
        help="builtin:compare, a .jsonl file, a saved dataset directory, or a Hub dataset name",
    )
    parser.add_argument("--output", default="data/correction", help="output directory (resumable)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--problem-column", "--problem_column", default=None)
    parser.add_argument("--answer-column", "--answer_column", default="answer")
    parser.add_argument("--num-problems", "--num_problems", type=int, default=None, help="use the first N problems (builtin: N=64)")
    parser.add_argument("--num-attempts", "--num_attempts", type=int, default=8, help="first attempts per problem")
    parser.add_argument("--num-evaluations", "--num_evaluations", type=int, default=4, help="self-evaluations per first attempt")
    parser.add_argument("--num-revisions-wrong", "--num_revisions_wrong", type=int, default=4, help="revisions per wrong first attempt")
    parser.add_argument("--num-revisions-correct", "--num_revisions_correct", type=int, default=2, help="revisions per correct first attempt")
    parser.add_argument("--max-per-type", "--max_per_type", type=int, default=1, help="trajectories per problem and type (D1/D2/D3)")
    parser.add_argument("--max-new-tokens", "--max_new_tokens", type=int, default=256)
    parser.add_argument("--evaluation-max-new-tokens", "--evaluation_max_new_tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", "--top_p", type=float, default=1.0)
    parser.add_argument("--batch-size", "--batch_size", type=int, default=32, help="conversations per generate call (transformers)")
    parser.add_argument("--problems-per-batch", "--problems_per_batch", type=int, default=8, help="problems sampled and saved together")
    parser.add_argument("--backend", choices=["auto", "transformers", "vllm"], default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run)
