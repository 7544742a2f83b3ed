"""Record what a LaSeR trainer scores in each micro-batch, and compute the `self_reward/` metrics of a logging window
by hand from those records (used by test_self_reward_logging.py, in one process and under torchrun); compare the
scores with the oracle (`ScoreOracle`, used by test_fast_paths.py)."""

import itertools
import math

import torch
from accelerate.utils import gather

import trl_laser.training.trainer as trainer_module
from trl_laser.testing import log_probs_by_hand


class MicroBatchRecorder:
    """Wraps the trainer's `_compute_loss` and the score function it uses, and keeps, per micro-batch and over all processes:
    the mode, the optimizer step during which it ran, log π(z_c), the targets and the class weights."""

    def __init__(self, trainer, monkeypatch=None):
        self.trainer = trainer
        self.records = []
        self._last_log_probs = None
        original_score = trainer_module.self_reward_score

        # log π(z_c) reaches the score function whichever forward it was read from
        def score(log_probs, *args, **kwargs):
            self._last_log_probs = log_probs
            return original_score(log_probs, *args, **kwargs)

        if monkeypatch is not None:
            monkeypatch.setattr(trainer_module, "self_reward_score", score)
        else:
            trainer_module.self_reward_score = score
        original_compute_loss = trainer._compute_loss

        def compute_loss(model, inputs):
            self._last_log_probs = None
            loss = original_compute_loss(model, inputs)
            assert self._last_log_probs is not None, "the alignment term should be active in these runs"
            rows = torch.stack(
                [
                    self._last_log_probs.detach().float(),
                    inputs["self_reward_targets"].float(),
                    inputs["self_reward_weights"].float(),
                ],
                dim=1,
            )
            self.records.append(
                {
                    "mode": "train" if model.training else "eval",
                    "step": trainer.state.global_step,
                    "rows": gather(rows).cpu(),
                }
            )
            return loss

        trainer._compute_loss = compute_loss


def expected_window_metrics(rows: torch.Tensor, beta: float, ref_constant: float) -> dict[str, float]:
    """The `self_reward/` metrics of the completions in `rows` (log π, target, weight), computed the plain way."""
    log_probs, targets, weights = rows.unbind(1)
    valid = weights != 0
    scores = beta * (log_probs - ref_constant)
    correct = [s for s, t, v in zip(scores.tolist(), targets.tolist(), valid.tolist(), strict=True) if v and t > 0.5]
    wrong = [s for s, t, v in zip(scores.tolist(), targets.tolist(), valid.tolist(), strict=True) if v and t <= 0.5]
    nan = float("nan")
    acc_correct = sum(s > 0.5 for s in correct) / len(correct) if correct else nan
    acc_incorrect = sum(s <= 0.5 for s in wrong) / len(wrong) if wrong else nan
    pairs = list(itertools.product(correct, wrong))
    return {
        "self_reward/loss": float((weights[valid] * (scores[valid] - targets[valid]).square()).sum() / valid.sum()),
        "self_reward/score_correct": sum(correct) / len(correct) if correct else nan,
        "self_reward/score_incorrect": sum(wrong) / len(wrong) if wrong else nan,
        "self_reward/acc_correct": acc_correct,
        "self_reward/acc_incorrect": acc_incorrect,
        "self_reward/f1": (
            2 * acc_correct * acc_incorrect / (acc_correct + acc_incorrect) if correct and wrong else nan
        ),
        # pairwise definition, independent of the rank formula the trainer uses
        "self_reward/auroc": (
            sum(1.0 if c > w else 0.5 if c == w else 0.0 for c, w in pairs) / len(pairs) if pairs else nan
        ),
    }


def check_logged_windows(trainer, recorder: MicroBatchRecorder, logging_steps: int) -> int:
    """Compare every training log entry's `self_reward/` metrics with the hand computation over the micro-batches of
    its window; returns the number of windows checked."""
    beta, ref_constant = trainer.args.self_reward_beta, trainer.ref_constant
    train_records = [r for r in recorder.records if r["mode"] == "train"]
    entries = [h for h in trainer.state.log_history if "self_reward/acc_correct" in h and "eval_loss" not in h]
    assert entries, "no self_reward/ metrics were logged"
    previous_end = 0
    for entry in entries:
        # A micro-batch computed while `global_step == g` belongs to optimizer step g + 1; the window of the entry
        # logged at step S holds the steps after the previous entry, up to S.
        end = entry["step"]
        rows = torch.cat([r["rows"] for r in train_records if previous_end <= r["step"] < end])
        expected = expected_window_metrics(rows, beta, ref_constant)
        for name, value in expected.items():
            logged = entry.get(name)
            if math.isnan(value):
                assert logged is None, (name, entry)
            else:
                assert logged is not None and math.isclose(logged, value, rel_tol=1e-5, abs_tol=1e-6), (
                    name,
                    entry["step"],
                    logged,
                    value,
                )
        for name in ("self_reward/acc_correct", "self_reward/acc_incorrect", "self_reward/f1", "self_reward/auroc"):
            assert entry[name] is None or 0.0 <= entry[name] <= 1.0, (name, entry[name])
        previous_end = end
    assert previous_end == trainer.state.global_step, "the last (partial) window must be logged too"
    return len(entries)


class ScoreOracle:
    """Next to the log π(z_c) a trainer scored with, the oracle's (`trl_laser.testing.log_probs_by_hand`, with the
    weights of that moment), per generation batch (`generation`: the scores mixed into the advantages, None when no
    mixing ran) and per micro-batch (`loss`: the scores of the alignment term). Wraps the trainer's methods with
    `monkeypatch`; combine with `MicroBatchRecorder` by building that one first."""

    def __init__(self, trainer, monkeypatch):
        self.trainer = trainer
        self.generation, self.loss = [], []
        used = []
        original_score = trainer_module.self_reward_score

        def score(log_probs, *args, **kwargs):
            used.append(log_probs.detach())
            return original_score(log_probs, *args, **kwargs)

        monkeypatch.setattr(trainer_module, "self_reward_score", score)

        def record(name, records):
            original = getattr(trainer, name)

            def method(*args):
                used.clear()
                result = original(*args)
                batch = result if name == "_generate_and_score_completions" else args[-1]
                with torch.no_grad():  # no update happens inside either method: the weights are those it used
                    oracle, finished = log_probs_by_hand(trainer.model, batch)
                records.append(
                    {"used": used[-1] if used else None, "oracle": oracle, "finished": finished, "batch": batch}
                )
                return result

            monkeypatch.setattr(trainer, name, method)

        record("_generate_and_score_completions", self.generation)
        record("_compute_loss", self.loss)

    def assert_scores_match(self, atol: float = 1e-4) -> int:
        """Every recorded score equals the oracle's on the finished completions; returns how many rows were compared."""
        compared = 0
        for where, records in (("generation", self.generation), ("loss", self.loss)):
            for index, entry in enumerate(records):
                if entry["used"] is None:
                    continue
                finished = entry["finished"]
                used, oracle = entry["used"][finished], entry["oracle"][finished]
                assert torch.allclose(used, oracle, atol=atol), (where, index, (used - oracle).abs().max().item())
                compared += int(finished.sum())
        return compared
