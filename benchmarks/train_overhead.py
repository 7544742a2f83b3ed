"""Cost of LaSeR over plain GRPO: step time and peak memory, measured side by side in one process.

    python benchmarks/train_overhead.py                       # SmolLM2-135M on the built-in task
    python benchmarks/train_overhead.py --model tiny --steps 3 # a quick check

GRPOTrainer, LaSeRGRPOTrainer (alignment term) and LaSeRGRPOTrainer with advantage mixing train on identical data
with identical seeds. The learning rate is 0 so that all three keep identical weights and sample identical
completions: what differs is only the work each trainer does per step. Runs alternate between the trainers (A B C A
B C ...) so that drift of a noisy machine hits all of them alike; we report the median of TRL's own `step_time`
metric, and the median peak memory above the pre-step level (CUDA allocator on GPU; on CPU the C heap in use,
sampled every millisecond, which only approximates the peak).

Goals: alignment term ≤ 1.03× time and ≤ 1.02× memory; with advantage mixing ≤ 1.10× time.
"""

import argparse
import ctypes
import statistics
import tempfile
import threading
import time

import torch
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from trl_laser import LaSeRConfig, LaSeRGRPOTrainer
from trl_laser.demo_model import demo_model_path
from trl_laser.tasks import exact_answer_reward, make_compare_dataset
from trl_laser.testing import save_tiny_model


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
    ]


_libc = ctypes.CDLL(None)
_libc.mallinfo2.restype = _MallInfo2


def _heap_bytes() -> int:
    """Bytes the C heap has handed out and not taken back (glibc's `mallinfo2`), where torch's CPU tensors live.

    Unlike the resident set size, this drops as soon as a tensor is freed, so it measures what a step holds rather
    than what the allocator kept cached from earlier steps."""
    info = _libc.mallinfo2()
    return info.uordblks + info.hblkhd


class PeakMemory(TrainerCallback):
    """Peak memory of each optimizer step above the level at its start."""

    def __init__(self):
        self.peaks: list[int] = []
        self._stop = None

    def on_step_begin(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
            return
        self._start, self._peak = _heap_bytes(), 0
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self._peak = max(self._peak, _heap_bytes())
                time.sleep(0.001)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            self.peaks.append(torch.cuda.max_memory_allocated() - self._start)
            return
        self._stop.set()
        self._thread.join()
        self.peaks.append(max(self._peak, _heap_bytes()) - self._start)


def run(name: str, model: str, steps: int, output_dir: str, args: argparse.Namespace) -> tuple[list[float], list[int]]:
    common = dict(
        output_dir=output_dir,
        max_steps=steps,
        learning_rate=0.0,  # identical weights on every side → identical completions → same work but LaSeR's
        per_device_train_batch_size=args.batch_size,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        gradient_checkpointing=False,
        report_to="none",
        logging_steps=1,
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
    memory = PeakMemory()
    trainer = trainer_class(
        model=model,
        reward_funcs=exact_answer_reward,
        args=config,
        train_dataset=make_compare_dataset(256, seed=0),
        callbacks=[memory],
    )
    trainer.train()
    times = [h["step_time"] for h in trainer.state.log_history if "step_time" in h]
    # The first step of every run pays one-off costs (allocator warm-up); leave it out of both measures.
    return times[1:], memory.peaks[1:]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="Model path; default SmolLM2-135M; 'tiny' for a quick check.")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="Optimizer steps per run (the first is discarded).")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--max-completion-length", type=int, default=32)
    parser.add_argument("--token", default="<repo_name>")
    parser.add_argument("--ref-constant", type=float, default=-20.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "tiny":
            model, args.token = save_tiny_model(f"{tmp}/tiny"), "<reserved_0>"
        else:
            model = args.model or demo_model_path()
        names = ["grpo", "laser", "laser+mixing"]
        times = {name: [] for name in names}
        peaks = {name: [] for name in names}
        for round_index in range(args.rounds):
            for name in names:
                t, m = run(name, model, args.steps, f"{tmp}/{name}-{round_index}", args)
                times[name] += t
                peaks[name] += m

    median_time = {name: statistics.median(times[name]) for name in names}
    median_peak = {name: statistics.median(peaks[name]) for name in names}
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"model={model} device={device} batch={args.batch_size} completion_length={args.max_completion_length}")
    print(f"{'trainer':<14}{'step time (s)':>15}{'peak memory (MiB)':>20}{'steps':>7}")
    for name in names:
        print(f"{name:<14}{median_time[name]:>15.3f}{median_peak[name] / 2**20:>20.1f}{len(times[name]):>7}")
    for name, time_goal in (("laser", 1.03), ("laser+mixing", 1.10)):
        time_ratio = median_time[name] / median_time["grpo"]
        memory_ratio = median_peak[name] / max(median_peak["grpo"], 1)
        print(
            f"{name} / grpo: time ratio {time_ratio:.3f} (goal ≤ {time_goal}), "
            f"peak memory ratio {memory_ratio:.3f}" + (" (goal ≤ 1.02)" if name == "laser" else "")
        )


if __name__ == "__main__":
    main()
