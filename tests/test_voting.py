"""Voting, best-of-k and k-curves on hand-made examples (expected values computed by hand)."""

import pytest

from trl_laser.evaluation.voting import (
    aggregation_curves,
    best_of_n,
    group_answers,
    k_values,
    majority_vote,
    pass_at_k,
    self_reward_vote,
    vote_weights,
)
from trl_laser.tasks import MATH_TASK


def test_equivalent_math_answers_share_a_group():
    texts = [
        "so \\boxed{1/2}",
        "\\boxed{0.5}",
        "answer: \\boxed{\\frac{1}{2}}",
        "\\boxed{3}",
        "I give up",
        "\\boxed{3.0}",
    ]
    answers = [MATH_TASK.extract_answer(t) for t in texts]
    assert answers[4] is None
    assert group_answers(answers, MATH_TASK.same_answer) == [0, 0, 0, 1, None, 1]


def test_exact_grouping_by_default():
    assert group_answers([7, None, 9, 7]) == [0, None, 1, 0]


def test_majority_vote_ties_go_to_the_answer_seen_first():
    assert majority_vote([1, 0, 0, 1]) == 0  # groups 1 and 0 tie at 2 votes; group 1 appears first (index 0)
    assert majority_vote([0, 1, 1]) == 1  # index of the first member of the winning group
    assert majority_vote([None, None]) is None


def test_weighted_vote_uses_clipped_scores():
    groups = [0, 0, 1]
    assert majority_vote(groups) == 0
    assert self_reward_vote(groups, [0.2, 0.2, 0.9]) == 2  # 0.4 < 0.9
    # Clipping: 3.0 counts as 1 and -1.0 as 0, so group 0 collects 1.0 > 0.9.
    assert self_reward_vote(groups, [3.0, -1.0, 0.9]) == 0
    # Clipping decides here: group 1 collects 1.2 > 1.0, while unclipped 5.0 would win.
    assert self_reward_vote([0, 1, 1], [5.0, 0.6, 0.6]) == 1


def test_unscored_samples_weigh_zero_and_missing_answers_never_win():
    assert vote_weights([None, 0.3, float("nan"), -2.0, 4.0]) == [0.0, 0.3, 0.0, 0.0, 1.0]
    assert self_reward_vote([0, 1], [None, 0.1]) == 1
    assert self_reward_vote([None, 0], [1.0, 0.0]) == 1  # the only answered sample wins even with weight 0
    # Equal weights: more votes wins, then the earliest group.
    assert self_reward_vote([0, 1, 1], [0.5, 0.25, 0.25]) == 1
    assert self_reward_vote([0, 1], [None, None]) == 0


def test_best_of_n():
    assert best_of_n([0, 1, 2, None], [0.7, None, 1.3, 9.0]) == 2  # the unanswered 9.0 cannot win
    assert best_of_n([0, 1], [1.5, 2.0]) == 1  # both clip to 1: the higher unclipped score wins
    assert best_of_n([0, 1], [0.4, 0.4]) == 0  # full tie: the earlier sample
    assert best_of_n([0, 1], [None, -3.0]) == 1  # a scored sample ranks above an unscored one
    assert best_of_n([None, None], [0.9, 0.9]) is None


def test_k_values():
    assert k_values(8) == [1, 2, 4, 8]
    assert k_values(6) == [1, 2, 4, 6]
    assert k_values(1) == [1]


def test_curves_on_a_hand_computed_problem():
    # Two wrong samples agree; the right one is alone but the model is confident in it.
    groups = [[0, 0, 1]]
    scores = [[0.1, 0.1, 0.9]]
    correct = [[False, False, True]]
    curves = aggregation_curves(groups, scores, correct)  # C(3, k) <= 32: every subset is used
    third, two_thirds = pytest.approx(1 / 3), pytest.approx(2 / 3)
    assert curves["majority"] == {1: third, 2: 0.0, 3: 0.0}  # pair (0, 2) ties 1-1 and goes to sample 0
    assert curves["weighted"] == {1: third, 2: two_thirds, 3: 1.0}
    assert curves["best_of"] == {1: third, 2: two_thirds, 3: 1.0}
    assert curves["pass"] == {1: third, 2: two_thirds, 3: 1.0}


def test_pass_at_k_is_the_exact_estimator():
    # 5 samples, 2 correct: C(3, k) of the C(5, k) subsets of size k hold no correct sample.
    assert pass_at_k(5, 2, 1) == pytest.approx(2 / 5)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)
    assert pass_at_k(5, 2, 3) == pytest.approx(1 - 1 / 10)
    assert pass_at_k(5, 2, 4) == 1.0  # fewer than 4 wrong samples: any 4 include a correct one
    assert pass_at_k(5, 0, 5) == 0.0
    with pytest.raises(ValueError):
        pass_at_k(5, 2, 6)


def test_curves_average_over_problems_and_are_seeded():
    groups = [[0, 1, 0, 2, 1, 0, 3, 0], [0, 0, 0, 0, 1, 1, 1, 1]]
    scores = [[0.9, 0.1, 0.8, None, 0.2, 0.7, 0.0, 0.6], [0.1, 0.2, 0.1, 0.0, 0.9, 0.8, 0.7, None]]
    correct = [[True, False, True, False, False, True, False, True], [False] * 4 + [True] * 4]
    first = aggregation_curves(groups, scores, correct, num_subsets=5, seed=3)
    assert first == aggregation_curves(groups, scores, correct, num_subsets=5, seed=3)
    # k = 1 averages single samples; k = 8 is the one full set: problem 1 has majority right (group 0, 4 votes),
    # problem 2 ties 4-4 and goes to group 0 (wrong) while the weighted vote picks group 1 (2.4 > 0.4).
    assert first["majority"][8] == 0.5
    assert first["weighted"][8] == 1.0
    assert first["best_of"][8] == 1.0
    # pass@k does not sample subsets: problem 1 has 4 of 8 correct, problem 2 has 4 of 8.
    assert first["pass"][2] == pytest.approx(1 - 6 / 28)
    with pytest.raises(ValueError, match="same number of samples"):
        aggregation_curves([[0], [0, 1]], [[1.0], [1.0, 1.0]], [[True], [True, False]])
