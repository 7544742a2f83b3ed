"""AUROC, calibration error and verification metrics against values computed by hand."""

import math

import pytest
import torch

from trl_laser.evaluation.metrics import (
    adjust_to_prior,
    auroc,
    estimate_prior,
    expected_calibration_error,
    reliability_bins,
    verification_report,
)


def test_auroc_hand_computed():
    # Positive-negative pairs: (0.35 vs 0.1) win, (0.35 vs 0.4) lose, (0.8 vs both) win: 3 of 4.
    assert auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)
    assert auroc([0.5, 0.5], [True, False]) == pytest.approx(0.5)  # a tie counts half
    assert auroc([0.2, 0.2, 0.9], [False, True, True]) == pytest.approx(0.75)
    assert auroc([0.0, 1.0], [False, True]) == 1.0
    assert auroc([0.0, 1.0, None], [True, False, True]) == 0.0  # unscored samples are left out


def test_auroc_needs_both_classes():
    assert math.isnan(auroc([0.3, 0.4], [True, True]))
    assert math.isnan(auroc([0.3, None], [True, False]))


def test_expected_calibration_error_hand_computed():
    # Bin [0.9, 1]: confidence 0.95, accuracy 1/2. Bin [0.1, 0.2): confidence 0.15, accuracy 0. Each holds half.
    scores, labels = [0.95, 0.95, 0.15, 0.15], [True, False, False, False]
    assert expected_calibration_error(scores, labels) == pytest.approx(0.5 * 0.45 + 0.5 * 0.15)


def test_calibration_clips_scores_to_unit_interval():
    # 1.7 counts as 1 (last bin, right answer) and -0.3 as 0 (first bin, wrong answer): perfectly calibrated.
    assert expected_calibration_error([1.7, -0.3], [True, False]) == pytest.approx(0.0)
    bins = reliability_bins([1.7, -0.3, 0.55, None], [True, False, True, False], num_bins=4)
    assert [b.count for b in bins] == [1, 0, 1, 1]
    assert bins[3].confidence == 1.0 and bins[0].confidence == 0.0
    assert math.isnan(bins[1].accuracy)
    assert math.isnan(expected_calibration_error([None], [True]))


def test_verification_report_hand_computed():
    scores = [0.9, 0.2, 0.6, 0.5, None]
    labels = [True, True, False, False, True]
    report = verification_report(scores, labels)
    assert report["acc_correct"] == 0.5  # 0.9 judged correct, 0.2 not
    assert report["acc_incorrect"] == 0.5  # 0.5 is judged incorrect (threshold is strict), 0.6 is not
    assert report["f1"] == pytest.approx(0.5)
    assert report["accuracy"] == 0.5
    assert report["score_correct"] == pytest.approx(0.55)
    assert (report["num_correct"], report["num_incorrect"], report["num_unscored"]) == (2, 2, 1)
    assert report["auroc"] == pytest.approx(0.5)  # pairs: 0.9 beats both, 0.2 loses to both


def test_adjust_to_prior_hand_computed():
    assert adjust_to_prior(0.5, 0.9) == pytest.approx(0.9)  # no evidence either way: the base rate
    assert adjust_to_prior(0.8, 0.9) == pytest.approx(0.72 / (0.72 + 0.02))
    assert adjust_to_prior(0.8, 0.5) == pytest.approx(0.8)  # the balanced prior changes nothing
    assert adjust_to_prior(1.3, 0.2) == pytest.approx(1.0, abs=1e-5)  # r_s is clipped to [0, 1] first
    assert 0.0 < adjust_to_prior(-0.4, 0.99) < 1e-3


def test_estimate_prior_recovers_the_base_rate_of_a_balanced_score():
    # Correct answers have x ~ N(1, 1), wrong ones x ~ N(-1, 1); the balanced-prior posterior is sigmoid(2x).
    generator = torch.Generator().manual_seed(0)
    labels = torch.rand(20000, generator=generator) < 0.8
    x = torch.randn(20000, generator=generator) + torch.where(labels, 1.0, -1.0)
    scores = torch.sigmoid(2 * x).tolist()
    assert estimate_prior(scores) == pytest.approx(0.8, abs=0.01)
    assert estimate_prior([0.5, 0.5, None]) == pytest.approx(0.5) and math.isnan(estimate_prior([None]))
    report = verification_report(scores, labels.tolist())
    assert report["estimated_prior"] == pytest.approx(0.8, abs=0.01)
    assert report["ece"] > 0.08 and report["ece_prior_adjusted"] < 0.02  # calibrated once the balance is undone
    # The verdict stays r_s > 0.5 on the raw score (with the adjusted one nearly every answer would be judged correct).
    wrong = [s for s, y in zip(scores, labels.tolist(), strict=True) if not y]
    assert report["acc_incorrect"] == pytest.approx(sum(s <= 0.5 for s in wrong) / len(wrong))
