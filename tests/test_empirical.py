"""Per-prompt steps of empirical TPO (Alg. 3): candidate building and the win signal."""

import numpy as np
import pytest

from tpo_core.empirical import build_candidates, transfer_win


def test_null_arm_keeps_online_responses():
    cands, mask = build_candidates(["a", "b", "c"], None, None, 2)
    assert cands == ["a", "b", "c"] and not mask.any()


def test_source_arm_replaces_the_first_k_with_its_best_of_n():
    online = [f"o{i}" for i in range(8)]
    pool = [f"p{i}" for i in range(6)]
    scores = [0.1, 0.9, 0.3, 0.9, 0.5, 0.0]  # tie between p1 and p3 goes to the lower index
    cands, mask = build_candidates(online, pool, scores, 4)
    assert cands == ["p1", "p3", "p4", "p2", "o4", "o5", "o6", "o7"]
    assert mask.tolist() == [True] * 4 + [False] * 4


def test_transfer_win():
    assert transfer_win([0.2, 0.9, 0.1], [True, True, False]) == 1.0
    assert transfer_win([0.2, 0.1, 0.9], [True, True, False]) == 0.0
    assert transfer_win([0.5, 0.5], [False, True]) == 0.0  # ties: first index, as argmax


def test_win_is_one_half_in_expectation_when_groups_are_exchangeable():
    """Both groups from the same policy: P(best is transferred) = k / n_candidates = 1/2 for k = 4 of 8."""
    rng = np.random.default_rng(0)
    mask = np.arange(8) < 4
    wins = [transfer_win(rng.normal(size=8), mask) for _ in range(4000)]
    assert np.mean(wins) == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize("call, match", [
    (lambda: build_candidates(["a"], None, None, 1), "at least 2"),
    (lambda: build_candidates(["a", "b"], ["p"], [0.1, 0.2], 1), "one score per pool"),
    (lambda: build_candidates(["a", "b"], ["p", "q"], [0.1, 0.2], 2), "k must"),
    (lambda: transfer_win([0.1, 0.2], [True]), "equal-length"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
