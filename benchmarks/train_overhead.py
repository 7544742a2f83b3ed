"""Cost of LaSeR over plain GRPO: step time and peak memory, measured side by side in one process.

    python benchmarks/train_overhead.py                         # SmolLM2-135M, demo and num_iterations=2 setups
    python benchmarks/train_overhead.py --model tiny --pairs 4  # a quick check of the script itself
    python benchmarks/train_overhead.py --model large-vocab --skip-steps --pairs 6   # memory at a 152k vocabulary

Two measurements, each with the sides interleaved step by step (A B C A B C ...) so that the drift of a noisy machine
hits every side alike, and each ratio reported with a 95 % bootstrap confidence interval over the interleaved rounds:

1. The part LaSeR changes: the loss forward + backward of the *same* generation batch, computed by
   `GRPOTrainer._compute_loss` and by `LaSeRGRPOTrainer._compute_loss` on one trainer, one model and one batch. No
   sampling is involved, so this resolves differences of a few percent.
2. Whole optimizer steps (generation + scoring + loss) of GRPOTrainer, LaSeRGRPOTrainer and LaSeRGRPOTrainer with
   advantage mixing, built on identical data and seeds with learning rate 0: all sides keep identical weights and so
   sample identical completions, and what differs is only the work each trainer does. Peak memory above the level
   at the start of each step is sampled alongside (CUDA allocator on GPU; on CPU the C heap in use, sampled every
   millisecond, which approximates the peak).

Goals: LaSeR / GRPO time ≤ 1.03 and peak memory ≤ 1.02; LaSeR + mixing / GRPO time ≤ 1.03.
"""

import argparse
import ctypes
import random
import statistics
import tempfile
import threading
import time

import torch
from trl import GRPOConfig, GRPOTrainer

from trl_laser import LaSeRConfig, LaSeRGRPOTrainer
from trl_laser.demo_model import demo_model_path
from trl_laser.tasks import exact_answer_reward, load_problems
from trl_laser.testing import save_tiny_model


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


_libc = ctypes.CDLL(None)
_libc.mallinfo2.restype = _MallInfo2


def _heap_bytes() -> int:
    """Bytes the C heap has handed out and not taken back (glibc's `mallinfo2`), where torch's CPU tensors live.

    Unlike the resident set size, this drops as soon as a tensor is freed, so it measures what a step holds rather
    than what the allocator kept cached from earlier steps."""
    info = _libc.mallinfo2()
    return info.uordblks + info.hblkhd


class PeakMemory:
    """Peak memory of a block of work above the level at its start (`with PeakMemory() as peak: ...; peak.bytes`)."""

    def __enter__(self):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
            return self
        self._start, self._peak = _heap_bytes(), 0
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self._peak = max(self._peak, _heap_bytes())
                time.sleep(0.001)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            self.bytes = torch.cuda.max_memory_allocated() - self._start
            return
        self._stop.set()
        self._thread.join()
        self.bytes = max(self._peak, _heap_bytes()) - self._start


def save_large_vocab_model(directory: str) -> str:
    """A random-weight 2-layer Llama with Qwen2.5's vocabulary size (152,064) and Qwen2.5-0.5B's hidden size (896),
    untied: the LM head is 136 M parameters, so a vocab x hidden gradient buffer is 520 MiB in float32."""
    return save_tiny_model(directory, vocab_size=152064, hidden_size=896, num_attention_heads=14)


def ratio_with_interval(numerator: list[float], denominator: list[float], resamples: int = 2000, seed: int = 0):
    """Ratio of means of two paired series, and its 95 % bootstrap interval (rounds resampled with replacement, the
    pairing kept so that a slow moment of the machine stays on both sides)."""
    rng = random.Random(seed)
    n = len(numerator)
    estimate = statistics.fmean(numerator) / statistics.fmean(denominator)
    ratios = []
    for _ in range(resamples):
        picks = [rng.randrange(n) for _ in range(n)]
        ratios.append(sum(numerator[i] for i in picks) / sum(denominator[i] for i in picks))
    ratios.sort()
    return estimate, ratios[int(0.025 * resamples)], ratios[int(0.975 * resamples) - 1]


def build(name: str, model: str, output_dir: str, args: argparse.Namespace, num_iterations: int):
    common = dict(
        output_dir=output_dir,
        max_steps=10**6,
        learning_rate=0.0,  # identical weights on every side → identical completions → same work but LaSeR's
        per_device_train_batch_size=args.batch_size,
        num_generations=args.num_generations,
        steps_per_generation=args.steps_per_generation,
        num_iterations=num_iterations,
        max_completion_length=args.max_completion_length,
        temperature=args.temperature,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        seed=0,
        bf16=torch.cuda.is_available(),
        disable_tqdm=True,
    )
    if name == "grpo":
        config, trainer_class = GRPOConfig(**common), GRPOTrainer
    else:
        mixing = {"self_reward_advantage_coef": 0.1} if name == "laser+mixing" else {}
        config = LaSeRConfig(
            **common, self_reward_token=args.token, self_reward_ref_constant=args.ref_constant, **mixing
        )
        trainer_class = LaSeRGRPOTrainer
    trainer = trainer_class(
        model=model,
        reward_funcs=exact_answer_reward,
        args=config,
        train_dataset=load_problems("builtin:compare", "train", 512)[0],
    )
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = config.gradient_accumulation_steps
    trainer.create_optimizer_and_scheduler(num_training_steps=10**6)
    batches = iter(trainer.get_train_dataloader())
    return trainer, batches


def optimizer_step(trainer, batches) -> float:
    """One optimizer step as `Trainer.train` runs it (generation when TRL's buffer is empty, loss, backward)."""
    start = time.perf_counter()
    for _ in range(trainer.args.gradient_accumulation_steps):
        trainer.training_step(trainer.model, next(batches), None)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad()
    return time.perf_counter() - start


def measure_loss_part(model: str, args, tmp: str) -> None:
    """Loss forward + backward of the same batches: GRPO's `_compute_loss` vs LaSeR's, interleaved."""
    trainer, batches = build("laser", model, f"{tmp}/loss", args, num_iterations=1)
    # One micro-batch, as `training_step` gets it (TRL generates the whole generation batch and splits it).
    batch = trainer._prepare_inputs(next(batches))
    trainer.current_gradient_accumulation_steps = 1
    sides = {"grpo": lambda m, b: GRPOTrainer._compute_loss(trainer, m, b), "laser": trainer._compute_loss}
    times = {name: [] for name in sides}
    peaks = {name: [] for name in sides}
    for _ in range(args.warmup):
        for compute in sides.values():
            compute(trainer.model, batch).backward()
            trainer.model.zero_grad()
    for _ in range(args.pairs):
        for name, compute in sides.items():
            with PeakMemory() as peak:
                start = time.perf_counter()
                compute(trainer.model, batch).backward()
                times[name].append(time.perf_counter() - start)
            peaks[name].append(peak.bytes)
            trainer.model.zero_grad(set_to_none=False)  # a gradient buffer exists, as in gradient accumulation
    ratio, low, high = ratio_with_interval(times["laser"], times["grpo"])
    memory = statistics.median(peaks["laser"]) / max(statistics.median(peaks["grpo"]), 1)
    print(
        f"loss forward+backward, same batch ({args.pairs} interleaved pairs): grpo "
        f"{statistics.fmean(times['grpo']):.3f} s, laser {statistics.fmean(times['laser']):.3f} s, "
        f"laser/grpo time {ratio:.3f} [95% CI {low:.3f}, {high:.3f}] (goal ≤ 1.03), "
        f"peak memory {memory:.3f} (goal ≤ 1.02)"
    )


def rng_state():
    return torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None


def set_rng_state(state) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])


def measure_steps(model: str, args, tmp: str, num_iterations: int) -> None:
    names = ["grpo", "laser", "laser+mixing"]
    runs = {name: build(name, model, f"{tmp}/{name}-{num_iterations}", args, num_iterations) for name in names}
    times = {name: [] for name in names}
    peaks = {name: [] for name in names}
    # Each side samples from its own copy of the global RNG, so that all sides draw the same completions (their
    # weights stay equal at learning rate 0): generation time then differs only by the work each trainer adds.
    rng_states = dict.fromkeys(names, rng_state())
    for round_index in range(args.warmup + args.steps):
        for name in names:
            set_rng_state(rng_states[name])
            with PeakMemory() as peak:
                seconds = optimizer_step(*runs[name])
            rng_states[name] = rng_state()
            if round_index >= args.warmup:  # the first steps pay one-off costs (allocator warm-up, c_ref)
                times[name].append(seconds)
                peaks[name].append(peak.bytes)
    label = f"optimizer steps, num_iterations={num_iterations}, steps_per_generation={args.steps_per_generation}"
    print(f"{label} ({args.steps} interleaved rounds):")
    for name in names:
        print(
            f"  {name:<13} {statistics.fmean(times[name]):8.3f} s/step   "
            f"peak {statistics.median(peaks[name]) / 2**20:8.1f} MiB"
        )
    for name in names[1:]:
        ratio, low, high = ratio_with_interval(times[name], times["grpo"])
        memory = statistics.median(peaks[name]) / max(statistics.median(peaks["grpo"]), 1)
        print(
            f"  {name} / grpo: time {ratio:.3f} [95% CI {low:.3f}, {high:.3f}] (goal ≤ 1.03), "
            f"peak memory {memory:.3f}" + (" (goal ≤ 1.02)" if name == "laser" else "")
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="Model path; default SmolLM2-135M; 'tiny' for a quick check.")
    parser.add_argument("--pairs", type=int, default=30, help="Interleaved rounds of the loss-only measurement.")
    parser.add_argument("--steps", type=int, default=16, help="Interleaved rounds of whole optimizer steps.")
    parser.add_argument("--warmup", type=int, default=2, help="Rounds run first and left out of the measures.")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--steps-per-generation", type=int, default=8, help="As in the demo.")
    parser.add_argument("--max-completion-length", type=int, default=16)
    parser.add_argument("--token", default="<repo_name>")
    parser.add_argument("--ref-constant", type=float, default=-18.0)
    parser.add_argument(
        "--temperature", type=float, default=1.0, help="≠ 1 measures the path that projects the EOS states separately."
    )
    parser.add_argument("--skip-loss", action="store_true", help="Only measure whole optimizer steps.")
    parser.add_argument("--skip-steps", action="store_true", help="Only measure the loss part.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "tiny":
            model, args.token = save_tiny_model(f"{tmp}/tiny"), "<reserved_0>"
        elif args.model == "large-vocab":
            model, args.token = save_large_vocab_model(f"{tmp}/large-vocab"), "<reserved_0>"
        else:
            model = args.model or demo_model_path()
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
        print(f"model={model} device={device} threads={torch.get_num_threads()} batch={args.batch_size}")
        if not args.skip_loss:
            measure_loss_part(model, args, tmp)
        if not args.skip_steps:
            for num_iterations in (1, 2):
                measure_steps(model, args, tmp, num_iterations)


if __name__ == "__main__":
    main()
