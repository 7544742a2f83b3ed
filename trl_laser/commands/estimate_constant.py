"""`trl-laser estimate-constant`: measure c_ref for a model on a dataset's prompts."""

import json


def register(subparsers):
    parser = subparsers.add_parser(
        "estimate-constant",
        help="Measure the reference constant c_ref = mean log π_ref(z_c | x, y) over the model's own completions.",
    )
    parser.add_argument("--model", required=True, help="Model path or Hub id (the reference model).")
    parser.add_argument(
        "--dataset",
        default="builtin:compare",
        help="jsonl file, dataset path / Hub id, or 'builtin:compare'. Prompts come from its problem column.",
    )
    parser.add_argument("--problem-column", default=None, help="Column with the problem text (default: detected).")
    parser.add_argument("--token", default="auto", help="Self-reward token (string or id), or 'auto'.")
    parser.add_argument("--num-prompts", type=int, default=64, help="Number of prompts to sample.")
    parser.add_argument("--num-samples", type=int, default=4, help="Completions per prompt.")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="Write the result as JSON to this file.")
    parser.set_defaults(func=run)


def run(args) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..inference.data import load_problems
    from ..scoring.reference_constant import estimate_reference_constant

    problems = load_problems(args.dataset, problem_column=args.problem_column, limit=args.num_prompts)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    result = estimate_reference_constant(
        model,
        tokenizer,
        [problem.prompt for problem in problems],
        token=args.token,
        num_samples=args.num_samples,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    print(
        f"c_ref = {result.mean:.4f} ± {result.std:.4f} for token {result.token!r} (id {result.token_id}), over "
        f"{result.num_completions} finished completions ({result.num_unfinished} unfinished left out).\n"
        f"Train with: --self_reward_token {result.token_id} --self_reward_ref_constant {result.mean:.4f}"
    )
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result.to_dict(), f, indent=2)
    return 0
