"""Exact objects of the finite KL-regularised contextual bandit (paper §2-3, poster Eq. 1-3).

A finite problem has ``S`` prompts (states) and ``A`` responses (actions).

* a **policy** is a float array of shape ``(S, A)`` whose rows are probability vectors;
* ``rho`` is the prompt distribution, shape ``(S,)``;
* a **reward** is a float array of shape ``(S, A)``, typically with values in ``[0, R]``.

Everything here is closed form; nothing is sampled. Invalid input raises ``ValueError``
with a message that says what is wrong.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, logsumexp

__all__ = [
    "optimal_policy",
    "kl_objective",
    "kl_divergence",
    "value_gap",
    "coverage",
    "win_rate",
    "kappa",
    "lemma31_bound",
    "lemma51_bound",
    "lemma51_gamma",
    "policy_to_reward",
    "mixture",
    "random_reward",
]

_ROW_TOL = 1e-8


# --------------------------------------------------------------------------- validation
def _check_beta(beta: float) -> float:
    beta = float(beta)
    if not np.isfinite(beta) or beta <= 0:
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
    return beta


def _as_2d(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (S, A), got an array of shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite entries")
    return x


def _check_policy(pi, name: str = "pi") -> np.ndarray:
    pi = _as_2d(pi, name)
    if np.any(pi < 0):
        raise ValueError(f"{name} has negative probabilities")
    sums = pi.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > _ROW_TOL)
    if bad.size:
        raise ValueError(
            f"rows of {name} must sum to 1; row {bad[0]} sums to {sums[bad[0]]:.10g}"
        )
    return pi


def _check_same_shape(**arrays: np.ndarray) -> None:
    shapes = {k: v.shape for k, v in arrays.items()}
    if len(set(shapes.values())) > 1:
        desc = ", ".join(f"{k}{s}" for k, s in shapes.items())
        raise ValueError(f"shapes disagree: {desc}")


def _check_rho(rho, n_states: int) -> np.ndarray:
    rho = np.asarray(rho, dtype=float)
    if rho.shape != (n_states,):
        raise ValueError(f"rho must have shape ({n_states},) to match the policies, got {rho.shape}")
    if not np.all(np.isfinite(rho)) or np.any(rho < 0):
        raise ValueError("rho must be finite and non-negative")
    if abs(rho.sum() - 1.0) > _ROW_TOL:
        raise ValueError(f"rho must sum to 1, sums to {rho.sum():.10g}")
    return rho


def _check_support(p: np.ndarray, q: np.ndarray, p_name: str, q_name: str) -> None:
    """The ratio p/q is needed where p > 0: q must be positive there."""
    bad = (p > 0) & (q <= 0)
    if np.any(bad):
        s, a = np.argwhere(bad)[0]
        raise ValueError(
            f"{q_name} is zero where {p_name} is positive (state {s}, action {a}): "
            f"the ratio {p_name}/{q_name} is infinite"
        )


# --------------------------------------------------------------------------- objects
def optimal_policy(pi_ref, r, beta) -> np.ndarray:
    """KL-regularised optimum pi*_r(a|s) ∝ pi_ref(a|s) exp(r(s,a)/beta) (poster Eq. 2).

    Computed in log space with a log-sum-exp per state, so large ``r/beta`` does not overflow.
    Actions with ``pi_ref = 0`` keep probability 0.
    """
    beta = _check_beta(beta)
    pi_ref = _check_policy(pi_ref, "pi_ref")
    r = _as_2d(r, "r")
    _check_same_shape(pi_ref=pi_ref, r=r)
    with np.errstate(divide="ignore"):
        logits = np.log(pi_ref) + r / beta
    return np.exp(logits - logsumexp(logits, axis=1, keepdims=True))


def kl_divergence(p, q) -> np.ndarray:
    """Per-state KL(p(.|s) || q(.|s)), shape (S,), with 0 log 0 = 0."""
    p = _check_policy(p, "p")
    q = _check_policy(q, "q")
    _check_same_shape(p=p, q=q)
    _check_support(p, q, "p", "q")
    mask = p > 0
    terms = np.zeros_like(p)
    terms[mask] = p[mask] * (np.log(p[mask]) - np.log(q[mask]))
    return terms.sum(axis=1)


def kl_objective(pi, pi_ref, r, beta, rho) -> float:
    """J_beta(pi) = E_{s~rho, a~pi}[r(s,a)] - beta E_{s~rho} KL(pi(.|s) || pi_ref(.|s)) (poster Eq. 1)."""
    beta = _check_beta(beta)
    pi = _check_policy(pi, "pi")
    pi_ref = _check_policy(pi_ref, "pi_ref")
    r = _as_2d(r, "r")
    _check_same_shape(pi=pi, pi_ref=pi_ref, r=r)
    rho = _check_rho(rho, pi.shape[0])
    _check_support(pi, pi_ref, "pi", "pi_ref")
    per_state = (pi * r).sum(axis=1) - beta * kl_divergence(pi, pi_ref)
    return float(rho @ per_state)


def value_gap(pi, pi_ref, r, beta, rho) -> float:
    """J_beta(pi*_r) - J_beta(pi) = beta E_rho KL(pi || pi*_r)  (identity used in Lemma 3.1's proof).

    Computed through the KL identity, which is exact and never negative.
    """
    beta = _check_beta(beta)
    pi_star = optimal_policy(pi_ref, r, beta)
    pi = _check_policy(pi, "pi")
    _check_same_shape(pi=pi, pi_star=pi_star)
    rho = _check_rho(rho, pi.shape[0])
    return float(beta * (rho @ kl_divergence(pi, pi_star)))


def coverage(pi_target, pi, rho) -> float:
    """Cov^{pi_target|pi} = E_{s~rho, a~pi_target}[pi_target(a|s) / pi(a|s)] (Definition 2.2).

    Equals 1 + E_rho chi^2(pi_target || pi) >= 1, with equality iff pi = pi_target on supp(rho).
    """
    pi_target = _check_policy(pi_target, "pi_target")
    pi = _check_policy(pi, "pi")
    _check_same_shape(pi_target=pi_target, pi=pi)
    rho = _check_rho(rho, pi.shape[0])
    _check_support(pi_target, pi, "pi_target", "pi")
    mask = pi_target > 0
    terms = np.zeros_like(pi)
    terms[mask] = pi_target[mask] ** 2 / pi[mask]
    return float(rho @ terms.sum(axis=1))


def win_rate(pi, pi_other, r, rho) -> float:
    """P_r(pi ≻ pi_other) = E_{s~rho, a~pi, a'~pi_other}[sigmoid(r(s,a) - r(s,a'))] (Bradley-Terry, paper §5)."""
    pi = _check_policy(pi, "pi")
    pi_other = _check_policy(pi_other, "pi_other")
    r = _as_2d(r, "r")
    _check_same_shape(pi=pi, pi_other=pi_other, r=r)
    rho = _check_rho(rho, pi.shape[0])
    prefs = expit(r[:, :, None] - r[:, None, :])  # (S, A, A'): P(a ≻ a' | s)
    per_state = np.einsum("sa,sb,sab->s", pi, pi_other, prefs)
    return float(rho @ per_state)


# --------------------------------------------------------------------------- bounds
def _kappa_from_log(log_x: np.ndarray) -> np.ndarray:
    """kappa(e^l) = (e^l - 1)^2 / (e^l - 1 - l), stable near l = 0 (limit 2) and for large l."""
    log_x = np.asarray(log_x, dtype=float)
    with np.errstate(over="ignore", invalid="ignore"):
        u = np.expm1(log_x)
        den = u - log_x
        small = np.abs(log_x) < 1e-3
        # series: e^l - 1 - l = l^2/2 + l^3/6 + l^4/24 + ...; (e^l - 1)^2 = l^2 (1 + l/2 + l^2/6)^2
        l = np.where(small, log_x, 0.0)
        series = (1 + l / 2 + l**2 / 6) ** 2 / (0.5 + l / 6 + l**2 / 24)
        out = np.where(small, series, u * (u / np.where(small, 1.0, den)))  # u*(u/den): no overflow
        out = np.where(np.isposinf(u), np.inf, out)
    return out


def kappa(x):
    """kappa(x) = (x - 1)^2 / (x - 1 - log x) for x > 0 (Lemma 3.1); kappa(1) = 2 by continuity.

    Increasing on [1, inf) and kappa(x) = O(x). Returns a float for scalar input.
    """
    x_arr = np.asarray(x, dtype=float)
    if np.any(~(x_arr > 0)):
        raise ValueError(f"kappa is defined for x > 0, got {x!r}")
    out = _kappa_from_log(np.log(x_arr))
    return float(out) if out.ndim == 0 else out


def lemma31_bound(gap, R, beta):
    """Lemma 3.1: Cov^{pi*|pi} <= 1 + kappa(e^{2R/beta}) * gap / beta.

    Holds for pi in conv(Pi) or induced by a source reward in [0, R]; ``gap`` is
    J_beta(pi*) - J_beta(pi) >= 0. Returns inf where e^{2R/beta} overflows.
    """
    beta = _check_beta(beta)
    R = float(R)
    if not np.isfinite(R) or R < 0:
        raise ValueError(f"R must be finite and >= 0, got {R!r}")
    gap_arr = np.asarray(gap, dtype=float)
    if np.any(~np.isfinite(gap_arr)) or np.any(gap_arr < -1e-12):
        raise ValueError(f"gap must be finite and >= 0, got {gap!r}")
    gap_arr = np.clip(gap_arr, 0.0, None)
    k = float(_kappa_from_log(2.0 * R / beta))
    with np.errstate(invalid="ignore"):
        out = np.where(gap_arr == 0, 1.0, 1.0 + k * gap_arr / beta)
    return float(out) if out.ndim == 0 else out


def lemma51_gamma(p_win):
    """The maximiser gamma* of Lemma 5.1's bound: gamma(1 + gamma) = 2p, gamma* = (sqrt(1 + 8p) - 1)/2.

    Setting d/dgamma [gamma + 2p log((1+gamma)/gamma)] = 1 - 2p / (gamma(1+gamma)) = 0; the
    objective is convex in gamma, so this stationary point is the global minimiser.
    """
    p = _check_prob(p_win)
    return 4.0 * p / (1.0 + np.sqrt(1.0 + 8.0 * p))  # = (sqrt(1+8p) - 1)/2 without cancellation


def _check_prob(p_win) -> np.ndarray:
    p = np.asarray(p_win, dtype=float)
    if np.any(~np.isfinite(p)) or np.any(p < 0) or np.any(p > 1):
        raise ValueError(f"p_win must be a probability in [0, 1], got {p_win!r}")
    return p


def lemma51_bound(p_win):
    """Lemma 5.1 (poster Eq. 3): Cov^{pi*|pi} >= max_{gamma>0} 1/sqrt(gamma + 2 p log((1+gamma)/gamma)),

    with p = P_{r*}(pi ≻ pi*). The maximum is taken in closed form at ``lemma51_gamma(p)``;
    for p = 0 the supremum is +inf (not attained).
    """
    p = _check_prob(p_win)
    g = lemma51_gamma(p)
    with np.errstate(divide="ignore"):
        val = g + 2.0 * p * (np.log1p(g) - np.log(np.where(p > 0, g, 1.0)))
        out = np.where(p > 0, 1.0 / np.sqrt(val), np.inf)
    return float(out) if out.ndim == 0 else out


# --------------------------------------------------------------------------- helpers
def policy_to_reward(pi, pi_ref, beta) -> np.ndarray:
    """r = beta log(pi / pi_ref): any (LLM) policy as a reward whose KL-optimal policy is pi (§2.2).

    Defined up to a per-prompt constant; this returns the representative with that constant 0.
    """
    beta = _check_beta(beta)
    pi = _check_policy(pi, "pi")
    pi_ref = _check_policy(pi_ref, "pi_ref")
    _check_same_shape(pi=pi, pi_ref=pi_ref)
    if np.any(pi <= 0) or np.any(pi_ref <= 0):
        raise ValueError("policy_to_reward needs pi > 0 and pi_ref > 0 everywhere (log ratio)")
    return beta * (np.log(pi) - np.log(pi_ref))


def mixture(policies, weights) -> np.ndarray:
    """Convex combination sum_i w_i pi_i of policies (a member of conv(Pi))."""
    policies = [_check_policy(p, f"policies[{i}]") for i, p in enumerate(policies)]
    if not policies:
        raise ValueError("mixture needs at least one policy")
    _check_same_shape(**{f"policies[{i}]": p for i, p in enumerate(policies)})
    w = np.asarray(weights, dtype=float)
    if w.shape != (len(policies),) or np.any(w < 0) or abs(w.sum() - 1) > _ROW_TOL:
        raise ValueError(f"weights must be {len(policies)} non-negative numbers summing to 1")
    return np.tensordot(w, np.stack(policies), axes=1)


def random_reward(rng: np.random.Generator, n_states: int, n_actions: int, R: float) -> np.ndarray:
    """A reward with i.i.d. Uniform[0, R] entries, drawn from ``rng``."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError("rng must be a numpy.random.Generator")
    if n_states < 1 or n_actions < 1:
        raise ValueError("n_states and n_actions must be >= 1")
    return rng.uniform(0.0, float(R), size=(n_states, n_actions))
