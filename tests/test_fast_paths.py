"""The fast reads of log π(z_c) check themselves. Each one is compared with its plain path the first time it runs; when
a change in TRL makes it read other numbers, the run warns (naming the path and the TRL version) and goes on with the
plain path, whose scores equal the oracle. Each test below simulates such a change. A configuration that a fast path
does not support (beam search) never uses it."""

import logging
from pathlib import Path

import pytest
import torch
import trl
from self_reward_records import MicroBatchRecorder, ScoreOracle, check_logged_windows

import trl_laser.training.trainer as trainer_module
from trl_laser import LaSeRGRPOTrainer
from trl_laser.training.trainer import (
    FAST_PATH_ATOL,
    FAST_PATH_ATOL_HALF_PRECISION,
    FUSED_LM_HEAD,
    GENERATION,
    OLD_LOG_PROB_FORWARD,
    TESTED_TRL,
)


# The generation kwargs of TRL's own `test_train_with_generation_kwargs`
BEAM_SEARCH = {"do_sample": True, "top_k": 50, "num_beams": 2, "length_penalty": -0.1}
MIXING = dict(self_reward_advantage_coef=0.5, self_reward_advantage_std_threshold=0.0, self_reward_beta=0.5)


def generation_batch(trainer):
    trainer.model.train()
    return trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))


def fast_path_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "fast read" in r.getMessage()]


def assert_warned_once(caplog, path: str):
    (message,) = fast_path_warnings(caplog)
    assert path in message and f"trl {trl.__version__}" in message
    assert TESTED_TRL in message, "the warning names the fix: a tested TRL"


def assert_c_ref_is_the_oracle_mean(trainer, oracle: ScoreOracle):
    first = oracle.generation[0]
    expected = first["oracle"][first["finished"]]
    assert trainer.ref_constant == pytest.approx(expected.mean().item(), abs=1e-4)


def test_fused_head_reading_another_value_falls_back_to_the_hook(make_trainer, monkeypatch, caplog, one_thread):
    """Simulates a TRL whose fused LM head returns another value for the z_c label than the model's distribution."""
    calls = []
    original = LaSeRGRPOTrainer._logps_with_self_reward

    def shifted(self, *args, **kwargs):
        calls.append(1)
        result = original(self, *args, **kwargs)
        self._loss_forward_log_probs = self._loss_forward_log_probs + 0.5
        return result

    monkeypatch.setattr(LaSeRGRPOTrainer, "_logps_with_self_reward", shifted)
    trainer = make_trainer(self_reward_coef=1.0, self_reward_beta=0.5, self_reward_ref_constant=-4.0, max_steps=3)
    recorder = MicroBatchRecorder(trainer, monkeypatch)
    oracle = ScoreOracle(trainer, monkeypatch)
    with caplog.at_level(logging.WARNING):
        trainer.train()
    assert_warned_once(caplog, FUSED_LM_HEAD)
    assert len(calls) == 1, "checked once, then the hook only"
    assert trainer._fast_paths == {FUSED_LM_HEAD: False, OLD_LOG_PROB_FORWARD: None, GENERATION: None}
    # every micro-batch, the checked one included, trained on the oracle's scores, and the logs show them
    assert len(oracle.loss) == 3 and oracle.assert_scores_match() > 0
    assert check_logged_windows(trainer, recorder, logging_steps=1) == 3


def test_capture_of_another_forward_falls_back(make_trainer, monkeypatch, caplog, one_thread):
    """Simulates a TRL that runs another no-grad forward of the policy (here over the batch in another order) before
    its old-log-prob forward: the capture reads that one."""
    original = LaSeRGRPOTrainer._get_per_token_logps_and_entropies
    earlier_forwards = []

    def trl_with_an_earlier_forward(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        if self._capture_policy_log_probs and model is self.model and not torch.is_grad_enabled():
            earlier_forwards.append(1)
            original(self, model, input_ids.flip(0), attention_mask.flip(0), logits_to_keep, *args, **kwargs)
        return original(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)

    monkeypatch.setattr(LaSeRGRPOTrainer, "_get_per_token_logps_and_entropies", trl_with_an_earlier_forward)
    trainer = make_trainer(steps_per_generation=2, self_reward_ref_constant=-4.6, **MIXING)
    assert trainer._runs_old_log_prob_forward
    oracle = ScoreOracle(trainer, monkeypatch)
    with caplog.at_level(logging.WARNING):
        generation_batch(trainer)
        generation_batch(trainer)
    assert_warned_once(caplog, OLD_LOG_PROB_FORWARD)
    assert len(earlier_forwards) == 1, "the capture is not armed again"
    # the second batch reads the scores during generation instead, checked on its first use
    assert trainer._fast_paths[OLD_LOG_PROB_FORWARD] is False and trainer._fast_paths[GENERATION] is True
    assert all(r["used"] is not None for r in oracle.generation) and len(oracle.generation) == 2
    assert oracle.assert_scores_match() > 0


def test_copied_condition_disagreeing_with_trl_falls_back(make_trainer, monkeypatch, caplog, one_thread):
    """Simulates a TRL that no longer runs its old-log-prob forward where the condition copied from it says it does:
    nothing is captured."""
    monkeypatch.setattr(LaSeRGRPOTrainer, "_runs_old_log_prob_forward", property(lambda self: True))
    trainer = make_trainer(**MIXING)  # on-policy micro-batches: TRL runs no old-log-prob forward
    oracle = ScoreOracle(trainer, monkeypatch)
    with caplog.at_level(logging.WARNING):
        generation_batch(trainer)
        generation_batch(trainer)
    assert_warned_once(caplog, OLD_LOG_PROB_FORWARD)
    assert trainer._fast_paths[OLD_LOG_PROB_FORWARD] is False and trainer._fast_paths[GENERATION] is True
    assert_c_ref_is_the_oracle_mean(trainer, oracle)
    assert all(r["used"] is not None for r in oracle.generation) and oracle.assert_scores_match() > 0


def test_generation_read_of_other_rows_falls_back(make_trainer, monkeypatch, caplog, one_thread):
    """Simulates a generation that returns its rows in another order than the read during generation assumes."""
    calls = []
    original = trainer_module.generate_with_log_probs

    def reordered(*args, **kwargs):
        calls.append(1)
        sequences, log_probs = original(*args, **kwargs)
        return sequences, log_probs.roll(1)

    monkeypatch.setattr(trainer_module, "generate_with_log_probs", reordered)
    trainer = make_trainer(self_reward_coef=1.0, max_steps=3, **MIXING)
    recorder = MicroBatchRecorder(trainer, monkeypatch)
    oracle = ScoreOracle(trainer, monkeypatch)
    with caplog.at_level(logging.WARNING):
        trainer.train()
    assert_warned_once(caplog, GENERATION)
    assert len(calls) == 1 and trainer._fast_paths[GENERATION] is False
    assert_c_ref_is_the_oracle_mean(trainer, oracle)
    assert len(oracle.generation) == 3 and all(r["used"] is not None for r in oracle.generation)
    assert oracle.assert_scores_match() > 0
    assert check_logged_windows(trainer, recorder, logging_steps=1) == 3


def test_beam_search_trains_with_the_plain_read(make_trainer, monkeypatch, caplog, one_thread):
    """Beam search expands and reorders rows inside `generate`: the read during generation does not apply there, so
    the scores come from the plain path, and GRPO's `generation_kwargs` train with LaSeR as with GRPOTrainer."""
    calls = []
    original = trainer_module.generate_with_log_probs
    monkeypatch.setattr(
        trainer_module, "generate_with_log_probs", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    trainer = make_trainer(
        generation_kwargs=BEAM_SEARCH, max_completion_length=12, self_reward_coef=1.0, max_steps=3, **MIXING
    )
    assert not trainer._generation_read_applies
    recorder = MicroBatchRecorder(trainer, monkeypatch)
    oracle = ScoreOracle(trainer, monkeypatch)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    with caplog.at_level(logging.WARNING):
        trainer.train()
    assert not calls and not fast_path_warnings(caplog)
    assert trainer._fast_paths == {FUSED_LM_HEAD: True, OLD_LOG_PROB_FORWARD: None, GENERATION: None}
    assert_c_ref_is_the_oracle_mean(trainer, oracle)
    assert all(r["used"] is not None for r in oracle.generation) and oracle.assert_scores_match() > 0
    assert check_logged_windows(trainer, recorder, logging_steps=1) == 3
    assert any(not torch.equal(before[name], p) for name, p in trainer.model.named_parameters())


@pytest.mark.parametrize(
    "generation_kwargs, applies",
    [
        ({}, True),  # sampling
        ({"do_sample": False}, True),  # greedy search
        (BEAM_SEARCH, False),
        ({"do_sample": False, "num_beams": 2}, False),
        ({"do_sample": False, "penalty_alpha": 0.6, "top_k": 4}, False),  # contrastive search
        ({"do_sample": False, "prompt_lookup_num_tokens": 2}, False),  # assisted generation
        ({"num_return_sequences": 2}, False),
    ],
    ids=["sample", "greedy", "beam-sample", "beam-search", "contrastive", "assisted", "several-sequences"],
)
def test_read_during_generation_applies_to_one_sequence_per_decode_step(make_trainer, generation_kwargs, applies):
    trainer = make_trainer(generation_kwargs=generation_kwargs)
    assert trainer._generation_read_applies is applies


def test_check_compares_finished_rows_within_the_tolerance_of_the_precision(make_trainer, caplog):
    trainer = make_trainer()
    assert trainer._fast_path_atol == FAST_PATH_ATOL
    assert make_trainer(name="bf16", bf16=True)._fast_path_atol == FAST_PATH_ATOL_HALF_PRECISION
    plain = torch.tensor([-4.0, -5.0, -6.0])
    finished = torch.tensor([True, False, True])
    # a batch with no finished completion leaves the path to be checked on a later one
    assert trainer._check_fast_path(GENERATION, plain + 1, plain, torch.zeros(3, dtype=torch.bool))
    assert trainer._fast_paths[GENERATION] is None
    # unfinished rows are not compared (their scores are not used): NaN there is fine
    assert trainer._check_fast_path(
        GENERATION, torch.tensor([-4.0, torch.nan, -6.0 + FAST_PATH_ATOL / 2]), plain, finished
    )
    assert trainer._fast_paths[GENERATION] is True and not fast_path_warnings(caplog)
    # NaN, a gap beyond the tolerance, another number of rows, or nothing read at all disagree
    for fast in (torch.tensor([torch.nan, -5.0, -6.0]), plain + 2 * FAST_PATH_ATOL, plain[:2], None):
        trainer._fast_paths[FUSED_LM_HEAD] = None
        with caplog.at_level(logging.WARNING):
            assert not trainer._check_fast_path(FUSED_LM_HEAD, fast, plain, finished)
        assert trainer._fast_paths[FUSED_LM_HEAD] is False
    assert len(fast_path_warnings(caplog)) == 4


def test_the_tested_trl_named_in_the_warning_is_the_declared_dependency():
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert f'"{TESTED_TRL}",' in pyproject
