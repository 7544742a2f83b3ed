import math

import pytest
import torch

from trl_laser.core.self_reward import (
    class_weights,
    harmonic_f1,
    metrics_from_counts,
    mix_advantages,
    reference_constant,
    self_reward_score,
    verification_counts,
    weighted_squared_error_sum,
)


def test_score_is_scaled_log_ratio():
    log_probs = torch.tensor([-20.0, -23.0, -18.5])
    assert torch.allclose(self_reward_score(log_probs, 0.1, -23.0), torch.tensor([0.3, 0.0, 0.45]))
    # exact form: a per-completion reference log-prob
    assert torch.allclose(
        self_reward_score(log_probs, 0.5, torch.tensor([-21.0, -22.0, -18.5])), torch.tensor([0.5, -0.5, 0.0])
    )


def test_class_weights_balance_by_hand():
    # valid: rows 0-4; correct: 0, 1 (N=5, N1=2, N0=3); row 5 unfinished, row 6 unrewarded
    targets = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 1.0, float("nan")])
    valid = torch.tensor([True, True, True, True, True, False, False])
    weights = class_weights(targets, valid)
    assert torch.allclose(weights, torch.tensor([5 / 4, 5 / 4, 5 / 6, 5 / 6, 5 / 6, 0.0, 0.0]))
    assert torch.equal(class_weights(targets, valid, balance=False), valid.float())


def test_class_weights_absent_class_gets_nothing():
    weights = class_weights(torch.tensor([0.0, 0.0, 0.0]), torch.tensor([True, True, False]))
    # Only incorrect rows: they keep N / (2 N0) = 2 / 4, the absent class contributes nothing (as the authors' code)
    assert torch.allclose(weights, torch.tensor([0.5, 0.5, 0.0]))
    weights = class_weights(torch.tensor([0.0, 0.0]), torch.tensor([False, False]))
    assert torch.equal(weights, torch.zeros(2))


def test_balanced_loss_is_mean_of_class_mses():
    scores = torch.tensor([0.9, 0.5, 0.2, 0.4, 0.0, 7.0])
    targets = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, float("nan")])
    valid = torch.tensor([True, True, True, True, True, False])
    weights = class_weights(targets, valid)
    loss = weighted_squared_error_sum(scores, targets, weights) / (weights != 0).sum()
    mse_correct = (0.1**2 + 0.5**2) / 2
    mse_incorrect = (0.2**2 + 0.4**2 + 0.0) / 3
    assert loss.item() == pytest.approx((mse_correct + mse_incorrect) / 2)


def test_squared_error_gradient_reaches_scores_only():
    scores = torch.tensor([0.9, 0.2, 3.0], requires_grad=True)
    targets = torch.tensor([1.0, 0.0, float("nan")], requires_grad=True)
    weights = torch.tensor([2.0, 1.0, 0.0], requires_grad=True)
    weighted_squared_error_sum(scores, targets, weights).backward()
    # d/ds w (s - t)^2 = 2 w (s - t); the masked row has no gradient and no NaN
    assert torch.allclose(scores.grad, torch.tensor([2 * 2.0 * -0.1, 2 * 1.0 * 0.2, 0.0]))
    assert targets.grad is None and weights.grad is None


def test_mix_advantages_by_hand():
    # Two groups of 3. Group 0 has spread-out scores; group 1 has identical clipped scores (std 0 < threshold).
    verifier = torch.tensor([1.0, -0.5, -0.5, 0.2, 0.3, -0.5])
    scores = torch.tensor([1.4, 0.5, -2.0, 3.0, 1.0, 5.0])  # clipped: [1, .5, 0] and [1, 1, 1]
    finished = torch.tensor([True, True, True, True, True, True])
    mixed = mix_advantages(verifier, scores, finished, num_generations=3, coef=0.1, std_threshold=0.1)
    s = torch.tensor([1.0, 0.5, 0.0])
    self_adv = (s - s.mean()) / s.std()  # std = 0.5 (unbiased)
    expected0 = 0.9 * verifier[:3] + 0.1 * self_adv
    assert torch.allclose(mixed[:3], expected0)
    assert torch.allclose(self_adv, torch.tensor([1.0, 0.0, -1.0]))
    assert torch.allclose(mixed[3:], verifier[3:])  # uninformative group keeps its verifier advantage


def test_mix_advantages_follows_trl_reward_scaling():
    # Same two groups: s = [1, .5, 0] (informative) and [1, 1, 1] (std 0, keeps the verifier advantage).
    verifier = torch.tensor([1.0, -0.5, -0.5, 0.2, 0.3, -0.5])
    scores = torch.tensor([1.4, 0.5, -2.0, 3.0, 1.0, 5.0])
    finished = torch.ones(6, dtype=torch.bool)
    kwargs = dict(num_generations=3, coef=0.5, std_threshold=0.1)
    # "none": centred, not scaled: [0.5, 0, -0.5]
    none = mix_advantages(verifier, scores, finished, scale="none", **kwargs)
    assert torch.allclose(none[:3], 0.5 * verifier[:3] + 0.5 * torch.tensor([0.5, 0.0, -0.5]))
    # "batch": divided by the std of all six clipped scores [1, .5, 0, 1, 1, 1]: mean 0.75, unbiased var 0.175
    batch = mix_advantages(verifier, scores, finished, scale="batch", **kwargs)
    sigma = math.sqrt(0.175)
    assert torch.allclose(batch[:3], 0.5 * verifier[:3] + 0.5 * torch.tensor([0.5, 0.0, -0.5]) / sigma)
    for mixed in (none, batch):
        assert torch.allclose(mixed[3:], verifier[3:])
    with pytest.raises(ValueError, match="scale_rewards"):
        mix_advantages(verifier, scores, finished, scale="std", **kwargs)


def test_mix_advantages_unfinished_score_zero():
    verifier = torch.zeros(2)
    scores = torch.tensor([0.8, 0.8])
    mixed = mix_advantages(
        verifier, scores, torch.tensor([True, False]), num_generations=2, coef=1.0, std_threshold=0.1
    )
    # s = [0.8, 0]: mean 0.4, unbiased std 0.4*sqrt(2)
    std = 0.4 * math.sqrt(2)
    assert torch.allclose(mixed, torch.tensor([0.4 / std, -0.4 / std]))


def test_mix_advantages_rejects_ragged_groups():
    with pytest.raises(ValueError, match="num_generations=4"):
        mix_advantages(torch.zeros(6), torch.zeros(6), torch.ones(6, dtype=torch.bool), 4, 0.1, 0.1)


def test_verification_metrics_by_hand():
    scores = torch.tensor([0.9, 0.4, 0.6, 0.1, 0.5, 2.0])
    targets = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    valid = torch.tensor([True, True, True, True, True, False])
    counts = verification_counts(scores, targets, valid)
    assert counts.tolist() == pytest.approx([1.3, 1.2, 1.0, 2.0, 2.0, 3.0])  # r_s = 0.5 counts as "incorrect"
    metrics = metrics_from_counts(counts.tolist())
    assert metrics["acc_correct"] == pytest.approx(0.5)
    assert metrics["acc_incorrect"] == pytest.approx(2 / 3)
    assert metrics["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert metrics["score_correct"] == pytest.approx(0.65)


def test_verification_metrics_missing_class_is_nan():
    metrics = metrics_from_counts(verification_counts(torch.tensor([0.9]), torch.tensor([1.0]), torch.tensor([True])))
    assert metrics["acc_correct"] == 1.0
    assert math.isnan(metrics["acc_incorrect"]) and math.isnan(metrics["f1"])
    assert harmonic_f1(0.0, 0.0) == 0.0


def test_reference_constant_is_mean_and_sample_std():
    # values −18, −17, −16: mean −17; sample variance ((−1)² + 0 + 1²) / (3 − 1) = 1
    assert reference_constant([-18.0, -17.0, -16.0]) == (-17.0, 1.0)
    assert reference_constant([-5.0]) == (-5.0, 0.0)
    with pytest.raises(ValueError, match="at least one finished completion"):
        reference_constant([])
