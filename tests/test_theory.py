"""tpo_core.theory.exact against closed forms, identities and the paper's lemmas."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar
from scipy.special import expit

from tpo_core.theory import exact as th


def _instance(seed, n_states=3, n_actions=4, R=1.0, beta=0.5):
    rng = np.random.default_rng(seed)
    pi_ref = rng.dirichlet(np.ones(n_actions), size=n_states)
    rho = rng.dirichlet(np.ones(n_states))
    r = th.random_reward(rng, n_states, n_actions, R)
    return rng, pi_ref, rho, r, R, beta


# ----------------------------------------------------------------------------- optimal policy
def test_optimal_policy_closed_form_two_actions():
    # one state, uniform reference, rewards (1, 0): pi*(a0) = sigmoid(1/beta)
    pi_ref = np.array([[0.5, 0.5]])
    r = np.array([[1.0, 0.0]])
    for beta in (0.1, 1.0, 7.0):
        pi = th.optimal_policy(pi_ref, r, beta)
        assert pi[0, 0] == pytest.approx(expit(1.0 / beta), rel=1e-12)


def test_optimal_policy_is_stable_for_huge_reward_over_beta():
    pi = th.optimal_policy(np.full((1, 3), 1 / 3), np.array([[1000.0, 999.0, 0.0]]), 1e-3)
    assert np.all(np.isfinite(pi)) and pi[0, 0] == pytest.approx(1.0)


def test_optimal_policy_maximises_objective():
    rng, pi_ref, rho, r, R, beta = _instance(1)
    pi_star = th.optimal_policy(pi_ref, r, beta)
    j_star = th.kl_objective(pi_star, pi_ref, r, beta, rho)
    for _ in range(200):
        other = rng.dirichlet(np.ones(pi_ref.shape[1]), size=pi_ref.shape[0])
        assert th.kl_objective(other, pi_ref, r, beta, rho) <= j_star + 1e-12


def test_optimal_policy_invariant_to_per_state_shift():
    _, pi_ref, _, r, _, beta = _instance(2)
    shifted = r + np.arange(r.shape[0])[:, None] * 3.0
    np.testing.assert_allclose(th.optimal_policy(pi_ref, r, beta),
                               th.optimal_policy(pi_ref, shifted, beta), rtol=1e-12)


def test_kl_objective_of_reference_is_expected_reward():
    _, pi_ref, rho, r, _, beta = _instance(3)
    assert th.kl_objective(pi_ref, pi_ref, r, beta, rho) == pytest.approx(rho @ (pi_ref * r).sum(1))


# ----------------------------------------------------------------------------- identities
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), beta=st.floats(0.05, 20), n_actions=st.integers(2, 6))
def test_value_gap_identity(seed, beta, n_actions):
    """J(pi*) - J(pi) = beta E_rho KL(pi || pi*) (the identity behind Lemma 3.1)."""
    rng, pi_ref, rho, r, _, _ = _instance(seed, n_actions=n_actions)
    pi = rng.dirichlet(np.ones(n_actions), size=pi_ref.shape[0])
    direct = (th.kl_objective(th.optimal_policy(pi_ref, r, beta), pi_ref, r, beta, rho)
              - th.kl_objective(pi, pi_ref, r, beta, rho))
    assert th.value_gap(pi, pi_ref, r, beta, rho) == pytest.approx(direct, rel=1e-9, abs=1e-11)


def test_coverage_is_one_plus_chi_square_and_one_iff_equal():
    rng, pi_ref, rho, _, _, _ = _instance(4)
    assert th.coverage(pi_ref, pi_ref, rho) == pytest.approx(1.0, abs=1e-14)
    pi = rng.dirichlet(np.ones(pi_ref.shape[1]), size=pi_ref.shape[0])
    chi2 = (((pi - pi_ref) ** 2) / pi_ref).sum(1)
    assert th.coverage(pi, pi_ref, rho) == pytest.approx(1 + rho @ chi2, rel=1e-12)
    assert th.coverage(pi, pi_ref, rho) > 1.0


def test_coverage_ignores_states_outside_rho_support():
    pi_t = np.array([[1.0, 0.0], [0.2, 0.8]])
    pi = np.array([[0.5, 0.5], [0.9, 0.1]])
    assert th.coverage(pi_t, pi, np.array([1.0, 0.0])) == pytest.approx(2.0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_win_rate_symmetry(seed):
    rng, pi_ref, rho, r, _, _ = _instance(seed)
    pi = rng.dirichlet(np.ones(pi_ref.shape[1]), size=pi_ref.shape[0])
    assert th.win_rate(pi, pi, r, rho) == pytest.approx(0.5, abs=1e-14)
    assert th.win_rate(pi, pi_ref, r, rho) + th.win_rate(pi_ref, pi, r, rho) == pytest.approx(1.0)


def test_win_rate_deterministic_policies_is_sigmoid_of_reward_gap():
    r = np.array([[2.0, 0.5, 0.0]])
    a, b = np.array([[1.0, 0, 0]]), np.array([[0, 1.0, 0]])
    assert th.win_rate(a, b, r, np.array([1.0])) == pytest.approx(expit(1.5))


def test_policy_to_reward_round_trip():
    rng, pi_ref, _, _, _, beta = _instance(5)
    pi = rng.dirichlet(np.ones(pi_ref.shape[1]), size=pi_ref.shape[0])
    r = th.policy_to_reward(pi, pi_ref, beta)
    np.testing.assert_allclose(th.optimal_policy(pi_ref, r, beta), pi, rtol=1e-10)


def test_mixture_is_convex_combination():
    _, pi_ref, _, r, _, beta = _instance(6)
    pi_star = th.optimal_policy(pi_ref, r, beta)
    mix = th.mixture([pi_ref, pi_star], [0.25, 0.75])
    np.testing.assert_allclose(mix, 0.25 * pi_ref + 0.75 * pi_star)


# ----------------------------------------------------------------------------- kappa and the bounds
def test_kappa_values():
    assert th.kappa(1.0) == pytest.approx(2.0)
    x = np.e ** 2
    assert th.kappa(x) == pytest.approx((x - 1) ** 2 / (x - 3))
    # continuity through the series branch, and kappa(x) ~ x for large x
    for x in (1 - 1e-4, 1 + 1e-4, 1 + 2e-3):
        assert th.kappa(x) == pytest.approx((x - 1) ** 2 / (x - 1 - np.log(x)), rel=1e-6)
    assert th.kappa(1e300) == pytest.approx(1e300, rel=1e-2)
    grid = np.linspace(1.0, 50.0, 500)
    assert np.all(np.diff(th.kappa(grid)) > 0)


def test_lemma31_bound_formula():
    R, beta, gap = 1.0, 0.5, 0.01
    x = np.exp(2 * R / beta)
    expected = 1 + (x - 1) ** 2 / (x - 1 - np.log(x)) * gap / beta
    assert th.lemma31_bound(gap, R, beta) == pytest.approx(expected)
    assert th.lemma31_bound(0.0, R, beta) == 1.0


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**31), beta=st.floats(0.05, 10), R=st.floats(0.01, 5),
       n_actions=st.integers(2, 6), weight=st.floats(0, 1))
def test_lemma31_holds_in_conv_pi(seed, beta, R, n_actions, weight):
    """Cov^{pi*|pi} <= 1 + kappa(e^{2R/beta}) gap/beta for pi a mixture of optimal policies."""
    rng, pi_ref, rho, r_star, _, _ = _instance(seed, n_actions=n_actions, R=R)
    pi_star = th.optimal_policy(pi_ref, r_star, beta)
    members = [th.optimal_policy(pi_ref, th.random_reward(rng, *r_star.shape, R), beta) for _ in range(2)]
    pi = th.mixture(members, [weight, 1 - weight])
    gap = th.value_gap(pi, pi_ref, r_star, beta, rho)
    assert th.coverage(pi_star, pi, rho) <= th.lemma31_bound(gap, R, beta) * (1 + 1e-9)


def test_lemma31_fails_without_the_policy_class_assumption():
    """A policy far outside conv(Pi) (ratio to pi_ref below e^{-R/beta}) can break the bound:
    the lemma is not vacuous, its assumption matters."""
    pi_ref = np.array([[0.5, 0.5]])
    r_star = np.array([[0.0, 1e-3]])  # R tiny, so pi* is nearly pi_ref
    pi = np.array([[1 - 1e-9, 1e-9]])
    rho = np.array([1.0])
    beta, R = 1.0, 1e-3
    gap = th.value_gap(pi, pi_ref, r_star, beta, rho)
    assert th.coverage(th.optimal_policy(pi_ref, r_star, beta), pi, rho) > th.lemma31_bound(gap, R, beta)


@pytest.mark.parametrize("p", [1e-8, 1e-4, 0.01, 0.1, 0.3, 0.5, 0.77, 1.0])
def test_lemma51_maximisation_is_accurate(p):
    """The closed-form maximiser agrees with a numeric maximisation to 1e-6."""
    obj = lambda lg: np.exp(lg) + 2 * p * (np.log1p(np.exp(lg)) - lg)  # gamma = e^lg
    res = minimize_scalar(obj, bounds=(-40, 10), method="bounded", options={"xatol": 1e-12})
    assert th.lemma51_bound(p) == pytest.approx(1 / np.sqrt(res.fun), abs=1e-6)
    # and nothing on a dense grid beats it
    gammas = np.logspace(-8, 3, 20001)
    grid_best = np.max(1 / np.sqrt(gammas + 2 * p * np.log((1 + gammas) / gammas)))
    assert grid_best <= th.lemma51_bound(p) + 1e-12


def test_lemma51_edge_cases():
    assert th.lemma51_bound(0.0) == np.inf
    assert np.all(np.diff(th.lemma51_bound(np.linspace(0.01, 1, 100))) < 0)  # decreasing in p
    assert th.lemma51_gamma(1.0) == pytest.approx(1.0)  # gamma(1+gamma) = 2


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**31), beta=st.floats(0.05, 5), R=st.floats(0.1, 20),
       n_actions=st.integers(2, 8))
def test_lemma51_holds_on_random_instances(seed, beta, R, n_actions):
    rng, pi_ref, rho, r_star, _, _ = _instance(seed, n_actions=n_actions, R=R)
    pi_star = th.optimal_policy(pi_ref, r_star, beta)
    pi = th.optimal_policy(pi_ref, R - r_star if seed % 2 else th.random_reward(rng, *r_star.shape, R), beta)
    p = th.win_rate(pi, pi_star, r_star, rho)
    assert th.coverage(pi_star, pi, rho) >= th.lemma51_bound(p) * (1 - 1e-9)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: th.optimal_policy(np.full((1, 2), 0.5), np.zeros((1, 2)), 0.0), "beta"),
        (lambda: th.optimal_policy(np.full((1, 2), 0.5), np.zeros((1, 2)), -1), "beta"),
        (lambda: th.optimal_policy(np.array([[0.5, 0.6]]), np.zeros((1, 2)), 1), "sum to 1"),
        (lambda: th.optimal_policy(np.full((1, 2), 0.5), np.zeros((1, 3)), 1), "shapes disagree"),
        (lambda: th.optimal_policy(np.full(2, 0.5), np.zeros(2), 1), r"shape \(S, A\)"),
        (lambda: th.coverage(np.full((1, 2), 0.5), np.array([[1.0, 0.0]]), [1.0]), "zero where"),
        (lambda: th.coverage(np.full((1, 2), 0.5), np.full((1, 2), 0.5), [0.5, 0.5]), "rho"),
        (lambda: th.win_rate(np.full((1, 2), 0.5), np.full((1, 2), 0.5), np.zeros((2, 2)), [1.0]), "shapes"),
        (lambda: th.kl_objective(np.array([[1.0, 0]]), np.array([[0, 1.0]]), np.zeros((1, 2)), 1, [1.0]), "zero where"),
        (lambda: th.policy_to_reward(np.array([[1.0, 0]]), np.full((1, 2), 0.5), 1), "pi > 0"),
        (lambda: th.kappa(0.0), "x > 0"),
        (lambda: th.lemma31_bound(-0.1, 1, 1), "gap"),
        (lambda: th.lemma31_bound(0.1, -1, 1), "R must"),
        (lambda: th.lemma51_bound(1.5), "probability"),
        (lambda: th.mixture([np.full((1, 2), 0.5)], [0.5]), "weights"),
        (lambda: th.optimal_policy(np.array([[np.nan, 1.0]]), np.zeros((1, 2)), 1), "NaN"),
    ],
)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
