"""What a yes/no self-verification of each sampled completion costs, three ways, on the same completions.

(a) LaSeR during generation: `SelfRewardScorer.generate` reads log π(z_c) at the step after EOS from the generation
    cache. Measured as the time spent in the scoring code (hook, logits processor, final decode step), and as the
    difference between generation with and without scoring (noisier: two long runs).
(b) Re-running prompt + completion through a full forward and reading z_c's log-prob at the last position: what the
    LaSeR authors' evaluation does (a prefill with prompt log-probs). Also shown: our `score()`, the same re-run
    without the LM head on every position.
(c) A verbal verification turn (self-rewarding correction): append a user turn asking whether the answer is correct
    and generate a short verdict.

Completions are forced to be exactly `--completion-tokens` long (EOS suppressed, then forced as the last token), so
every one is scored. All three are timed in one process, interleaved, `--repeats` times; medians are reported.

    python benchmarks/scoring_cost.py                      # SmolLM2-135M-Instruct, 8 completions of 256 tokens
"""

import argparse
import functools
import statistics
import time

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from trl_laser.core import during_generation
from trl_laser.core.during_generation import position_ids_from_mask
from trl_laser.core.readout import causal_lm
from trl_laser.core.recipe import SelfRewardConfig
from trl_laser.scoring.scorer import SelfRewardScorer, left_pad, load_pretrained


PROMPT = "Tom has 3 boxes with 12 apples each. He gives away 7 apples. How many apples are left? Explain step by step."
VERIFY_TURN = "Is this answer correct? Answer with [VERIFY] correct. or [VERIFY] wrong."


class EndAt(LogitsProcessor):
    """Forbid EOS before the `length`-th generated token and force it there, so completions have exactly `length`."""

    def __init__(self, prompt_width: int, length: int, eos_id: int):
        self.prompt_width, self.length, self.eos_id = prompt_width, length, eos_id

    def __call__(self, input_ids, scores):
        generated = input_ids.shape[1] - self.prompt_width
        if generated < self.length - 1:
            scores[:, self.eos_id] = -float("inf")
        else:
            forced = torch.full_like(scores, -float("inf"))
            forced[:, self.eos_id] = 0.0
            scores = forced
        return scores


class Stopwatch:
    """Accumulates the time spent inside wrapped functions."""

    def __init__(self):
        self.seconds = 0.0

    def wrap(self, function):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="Model path (default: the SmolLM2-135M-Instruct demo model).")
    parser.add_argument("--token", default="<repo_name>", help="Self-reward token (the demo model has no metadata).")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--ref-constant", type=float, default=-20.0)
    parser.add_argument("--num-completions", type=int, default=8)
    parser.add_argument("--completion-tokens", type=int, default=256)
    parser.add_argument("--verify-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.model is None:
        from trl_laser.demo_model import demo_model_path

        args.model = demo_model_path()
    model, tokenizer = load_pretrained(args.model, dtype=torch.float32)
    recipe = SelfRewardConfig(token=args.token, beta=args.beta, ref_constant=args.ref_constant)
    scorer = SelfRewardScorer(model, tokenizer, recipe, confidence=None)  # the score alone: no free verifiers
    config = scorer.config
    print(
        f"model {args.model}\ntoken {config.token!r} (id {config.token_id}), beta {config.beta}, c_ref "
        f"{config.ref_constant}; {args.num_completions} completions of {args.completion_tokens} tokens; "
        f"{torch.get_num_threads()} threads, {args.repeats} repeats"
    )

    # Time spent in the scoring code of `generate`: the hook, the logits processor and the final decode step.
    scoring = Stopwatch()
    recorder = during_generation.AfterEosRecorder
    recorder.capture = scoring.wrap(recorder.capture)
    recorder.__call__ = scoring.wrap(recorder.__call__)
    during_generation._read_last_step = scoring.wrap(during_generation._read_last_step)

    prompt_ids = scorer.encode_prompt(PROMPT)
    n = args.num_completions
    input_ids, mask = left_pad([prompt_ids] * n, scorer.pad_id)
    end_at = EndAt(input_ids.shape[1], args.completion_tokens, scorer.eos_ids[0])

    def generate_with_scores(seed):
        return scorer.generate(
            [PROMPT],
            num_samples=n,
            max_new_tokens=args.completion_tokens,
            batch_size=n,
            seed=seed,
            logits_processor=[end_at],
        )[0]

    def generate_plain(seed):
        torch.manual_seed(seed)
        with torch.no_grad():
            return causal_lm(model).generate(
                input_ids=input_ids,
                attention_mask=mask,
                max_new_tokens=args.completion_tokens,
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                eos_token_id=scorer.eos_ids,
                pad_token_id=scorer.pad_id,
                logits_processor=LogitsProcessorList([end_at]),
            )

    # Warm-up: the first calls of a process pay one-off costs (allocations, kernel selection).
    generate_with_scores(-1)
    generate_plain(-1)

    times = {"with": [], "without": [], "scoring": [], "full": [], "score": [], "verbal": []}
    samples = None
    for repeat in range(args.repeats):
        scoring.seconds = 0.0
        start = time.perf_counter()
        samples = generate_with_scores(repeat)
        times["with"].append(time.perf_counter() - start)
        times["scoring"].append(scoring.seconds)
        start = time.perf_counter()
        plain = generate_plain(repeat)
        times["without"].append(time.perf_counter() - start)
        if repeat == 0:
            same = plain[:, input_ids.shape[1] :].tolist() == samples.token_ids
            print(f"same seed gives the same tokens with and without scoring: {same}")
            assert all(len(ids) == args.completion_tokens for ids in samples.token_ids), "completions not full length"
            assert all(s is not None for s in samples.scores)

        sequences = [prompt_ids + ids for ids in samples.token_ids]
        # (b) the authors' way: a full forward (logits at every position), then z_c's log-prob after EOS.
        ids, full_mask = left_pad(sequences, scorer.pad_id)
        start = time.perf_counter()
        with torch.no_grad():
            logits = model(
                input_ids=ids, attention_mask=full_mask, position_ids=position_ids_from_mask(full_mask)
            ).logits
            full_log_probs = logits[:, -1].float().log_softmax(-1)[:, config.token_id]
        times["full"].append(time.perf_counter() - start)
        start = time.perf_counter()
        rescored = scorer.self_reward_log_probs(sequences, batch_size=n)
        times["score"].append(time.perf_counter() - start)
        if repeat == 0:
            generated = [(s / config.beta) + config.ref_constant for s in samples.scores]
            diff = max(abs(a - b) for a, b in zip(generated, full_log_probs.tolist(), strict=True))
            diff2 = max(abs(a - b) for a, b in zip(generated, rescored, strict=True))
            print(f"max |log π(z_c)| difference, generation-time vs full forward: {diff:.2e}, vs score(): {diff2:.2e}")

        # (c) a verbal verification turn: the whole conversation again, plus a short generated verdict.
        conversations = [
            [
                {"role": "user", "content": PROMPT},
                {"role": "assistant", "content": text},
                {"role": "user", "content": VERIFY_TURN},
            ]
            for text in samples.texts
        ]
        verify_ids = [
            tokenizer(
                tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True), add_special_tokens=False
            )["input_ids"]
            for c in conversations
        ]
        v_ids, v_mask = left_pad(verify_ids, scorer.pad_id)
        start = time.perf_counter()
        with torch.no_grad():
            causal_lm(model).generate(
                input_ids=v_ids,
                attention_mask=v_mask,
                max_new_tokens=args.verify_tokens,
                min_new_tokens=args.verify_tokens,
                do_sample=False,
                pad_token_id=scorer.pad_id,
            )
        times["verbal"].append(time.perf_counter() - start)

    med = {key: statistics.median(values) for key, values in times.items()}
    a = med["scoring"]
    difference = med["with"] - med["without"]
    print()
    print(f"generation without scoring      {med['without']:8.3f} s   (runs: {_fmt(times['without'])})")
    print(f"generation with scoring         {med['with']:8.3f} s   (runs: {_fmt(times['with'])})")
    print(f"(a) scoring inside generation   {a:8.3f} s   = {100 * a / med['without']:.2f} % of generation")
    print(f"    end-to-end difference       {difference:8.3f} s   = {100 * difference / med['without']:.2f} % (noisy)")
    print(
        f"(b) full forward re-run         {med['full']:8.3f} s   = {100 * med['full'] / med['without']:.1f} % of generation"
    )
    print(f"    score() re-run (no LM head) {med['score']:8.3f} s")
    print(
        f"(c) verbal verification turn    {med['verbal']:8.3f} s   = {100 * med['verbal'] / med['without']:.1f} % of generation"
    )
    print()
    print(f"(b)/(a) = {med['full'] / a:.0f}x   (goal >= 20)")
    print(f"(c)/(a) = {med['verbal'] / a:.0f}x   (goal >= 40)")
    print(f"(a) = {100 * a / med['without']:.2f} % of generation   (goal <= 1 %)")


def _fmt(values):
    return ", ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    main()
