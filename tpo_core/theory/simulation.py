"""Theoretical TPO (paper §4, Algorithms 1-2) simulated on the exact finite problem.

Everything is tabular: ``S`` prompts, ``A`` responses; rewards and policies are ``(S, A)`` arrays and all
values and gaps are exact (``tpo_core.theory.exact``). Only the learners see samples. Readings where the paper
is silent:

* **Policy class.** ``Pi = {pi*_r : r in [0, R]^{S x A}}`` (paper §2, our reading: see the book page "The paper as we read it"), parameterised by the reward table.
  Every learner is a (penalised) Bradley-Terry MLE over that box, solved by L-BFGS-B from a warm start,
  and outputs ``pi*_{r_hat}``.
* **XPO** (Xie et al. 2024, Alg. 1), the paper's ``Alg_OL``: minimise
  ``alpha sum_{a~ in D_opt} log pi(a~) - sum_{D_pref} log sigma(beta log pi/pi_ref(a+) - beta log pi/pi_ref(a-))``
  with ``a~ ~ pi_ref``. As ``beta log pi_r/pi_ref = r - V_r`` with ``V_r(s) = beta log E_{pi_ref} e^{r/beta}``,
  this is ``NLL(r) + alpha sum_i [r(s_i, a~_i) - V_r(s_i)]``: reward MLE plus optimism
  (``E_ref[V_r - r] = beta KL(pi_ref || pi_r) >= 0``). Anytime schedule ``alpha_n = xpo_c / sqrt(n)``
  (XPO's ``alpha`` times ``beta``; its theory tunes ``alpha ~ 1/sqrt(T)`` for a known horizon).
* **Pairs.** Every step compares the deployed policy's response with one from ``pi_ref`` (XPO's choice,
  kept for transfer steps too), labelled by Bradley-Terry under ``r*``.
* **RPO** (Liu et al. 2024) distils ``pi_Dstl`` from all data (Theorem 3.2): its maximin objective is DPO
  plus an SFT term on preferred responses, ``NLL(r) - eta sum_i [r(s_i, a+_i) - V_r(s_i)]`` with
  ``eta_n = rpo_c / sqrt(n)``: the mirror image of XPO (pessimism towards the data).
* **Transfer Policy Selection** (Alg. 2; Lemmas 4.2-4.3). The likelihood-ratio confidence set is replaced by
  its Laplace form ``(r - r_hat)^T H (r - r_hat) <= z^2`` (``H``: Fisher information at the MLE), intersected
  with the box. ``max/min_{r in CS} J(pi; r)`` is then closed form (``value_bounds``). Values are of
  ``J(pi) - J(pi_ref)``, the part preferences identify (BT is blind to per-prompt shifts). Sources get the
  upper bound with a pointwise radius; ``pi_Dstl``, chosen from the data, gets the lower bound with a radius
  valid uniformly over the class (``confidence_radii``). ``rho`` is treated as known (prompts are free).
"""

from __future__ import annotations

from dataclasses import dataclass
import math

import numpy as np
import pandas as pd
from scipy.optimize import Bounds, minimize
from scipy.special import expit, logsumexp, ndtri
from scipy.stats import chi2

from tpo_core.plumbing.streams import simulation_learning, simulation_problem
from tpo_core.theory.exact import kl_objective, optimal_policy, random_reward, value_gap

__all__ = [
    "Instance",
    "Preferences",
    "make_instance",
    "fit_reward",
    "mle_reward",
    "xpo_reward",
    "rpo_reward",
    "value_bounds",
    "confidence_radii",
    "transfer_policy_selection",
    "simulate",
    "curve_steps",
    "summarize_run",
    "loglog_slope",
]


# --------------------------------------------------------------------------- instance
@dataclass(frozen=True)
class Instance:
    """A finite KL-regularised contextual bandit with W source rewards (paper §2)."""

    r_star: np.ndarray  # (S, A) true reward in [0, R]
    pi_ref: np.ndarray  # (S, A)
    rho: np.ndarray  # (S,)
    sources: np.ndarray  # (W, S, A) source rewards r_w in [0, R]
    beta: float
    R: float

    @property
    def n_sources(self) -> int:
        return self.sources.shape[0]

    def policy(self, r) -> np.ndarray:
        """pi*_r, the KL-optimal policy of reward r (poster Eq. 2)."""
        return optimal_policy(self.pi_ref, r, self.beta)

    def value(self, pi) -> float:
        """J_beta(pi) = J_beta(pi; r*)."""
        return kl_objective(pi, self.pi_ref, self.r_star, self.beta, self.rho)

    def gap(self, pi) -> float:
        """J_beta(pi*) - J_beta(pi), exact."""
        return value_gap(pi, self.pi_ref, self.r_star, self.beta, self.rho)


def _check_args(n_prompts, n_responses, source_mix, R, beta=1.0) -> tuple[float, ...]:
    for name, v in (("n_prompts", n_prompts), ("n_responses", n_responses)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if n_responses < 2:
        raise ValueError(f"n_responses must be >= 2 (preferences compare two responses), got {n_responses}")
    mix = tuple(float(x) for x in np.atleast_1d(np.asarray(source_mix, dtype=float)))
    if any(not (0.0 <= x <= 1.0) for x in mix):
        raise ValueError(f"every source_mix entry must lie in [0, 1], got {source_mix!r}")
    if not (np.isfinite(R) and R > 0):
        raise ValueError(f"R must be a finite number > 0, got {R!r}")
    if not (np.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
    return mix


def make_instance(n_prompts=10, n_responses=20, source_mix=(0.1, 0.5, 1.0), R=1.0, seed=0, beta=1.0) -> Instance:
    """Draw (r*, pi_ref, rho, sources) from :func:`tpo_core.plumbing.streams.simulation_problem`.

    ``r* ~ U[0, R]``, ``pi_ref = softmax(N(0, 1))``, ``rho ~ Dirichlet(5)``, and source
    ``r_w = (1 - lambda_w) r* + lambda_w u_w`` with ``u_w ~ U[0, R]`` drawn in order, so source w is the
    same whatever the other entries of ``source_mix`` are. ``beta`` does not change the draws.
    """
    mix = _check_args(n_prompts, n_responses, source_mix, R, beta)
    rng = simulation_problem(seed)
    S, A = int(n_prompts), int(n_responses)
    r_star = random_reward(rng, S, A, R)
    logits = rng.normal(size=(S, A))
    pi_ref = np.exp(logits - logsumexp(logits, axis=1, keepdims=True))
    rho = rng.dirichlet(np.full(S, 5.0))
    u = np.stack([random_reward(rng, S, A, R) for _ in mix]) if mix else np.zeros((0, S, A))
    lam = np.asarray(mix).reshape(-1, 1, 1)
    return Instance(r_star, pi_ref, rho, (1 - lam) * r_star + lam * u, float(beta), float(R))


# --------------------------------------------------------------------------- data
class Preferences:
    """Sufficient statistics of preference data D = {(s, a, a~, y)} in a tabular problem."""

    def __init__(self, n_prompts: int, n_responses: int):
        self.wins = np.zeros((n_prompts, n_responses, n_responses))  # wins[s, a, b]: a preferred to b
        self.second = np.zeros((n_prompts, n_responses))  # second responses a~ ~ pi_ref (XPO's D_opt)
        self.chosen = np.zeros((n_prompts, n_responses))  # preferred responses (RPO's SFT data)
        self.n = 0

    def add(self, s, a, b, y) -> None:
        """Add pairs (s, a, b) with label y = 1 iff a is preferred to b."""
        s, a, b, y = (np.asarray(x, dtype=int) for x in (s, a, b, y))
        win, lose = np.where(y == 1, a, b), np.where(y == 1, b, a)
        np.add.at(self.wins, (s, win, lose), 1.0)
        np.add.at(self.second, (s, b), 1.0)
        np.add.at(self.chosen, (s, win), 1.0)
        self.n += s.size


def _sample(rng: np.random.Generator, pi: np.ndarray, s: np.ndarray) -> np.ndarray:
    """One response per prompt in ``s`` from policy ``pi`` (inverse CDF)."""
    cdf = np.cumsum(pi[s], axis=1)
    return np.minimum((rng.random(s.size)[:, None] > cdf).sum(axis=1), pi.shape[1] - 1)


def _collect(rng, inst: Instance, pi: np.ndarray, n: int, data: Preferences) -> None:
    """n steps: s ~ rho, a ~ pi, a~ ~ pi_ref, y ~ Bernoulli(sigma(r*(s,a) - r*(s,a~))) (Bradley-Terry)."""
    s = rng.choice(inst.rho.size, size=n, p=inst.rho)
    a, b = _sample(rng, pi, s), _sample(rng, inst.pi_ref, s)
    y = rng.random(n) < expit(inst.r_star[s, a] - inst.r_star[s, b])
    data.add(s, a, b, y)


# --------------------------------------------------------------------------- learners
def fit_reward(data: Preferences, pi_ref, beta, R, *, coef=0.0, anchor=None, r0=None) -> np.ndarray:
    """argmin_{r in [0,R]^{SxA}} NLL(r) + coef * sum_{s,a} anchor[s,a] (r(s,a) - V_r(s)).

    ``NLL`` is the Bradley-Terry negative log-likelihood of ``data``; ``r - V_r = beta log pi_r/pi_ref``.
    ``coef = 0``: MLE; ``coef > 0`` with ``anchor = data.second``: XPO; ``coef < 0`` with
    ``anchor = data.chosen``: RPO. L-BFGS-B from ``r0`` (default ``R/2``), objective scaled by 1/n.
    """
    S, A = pi_ref.shape
    r0 = np.full((S, A), R / 2) if r0 is None else np.clip(r0, 0.0, R)
    if data.n == 0:
        return r0.copy()
    wins = data.wins / data.n
    M = np.zeros((S, A)) if anchor is None else coef * anchor / data.n
    m = M.sum(axis=1)
    log_ref = np.log(pi_ref)

    def f(x):
        r = x.reshape(S, A)
        D = r[:, :, None] - r[:, None, :]
        E = np.exp(-np.abs(D))
        nll = np.log1p(E) + np.maximum(-D, 0.0)  # -log sigma(D), stable
        sig_neg = np.where(D >= 0, E, 1.0) / (1.0 + E)  # sigma(-D)
        z = log_ref + r / beta
        zmax = z.max(axis=1, keepdims=True)
        ez = np.exp(z - zmax)
        tot = ez.sum(axis=1, keepdims=True)
        lse = (zmax + np.log(tot))[:, 0]
        val = (wins * nll).sum() + (M * r).sum() - beta * (m * lse).sum()
        G = wins * sig_neg
        grad = G.sum(axis=1) - G.sum(axis=2) + M - m[:, None] * (ez / tot)
        return val, grad.ravel()

    res = minimize(f, r0.ravel(), jac=True, method="L-BFGS-B", bounds=Bounds(0.0, R),
                   options={"maxiter": 500, "ftol": 1e-10, "gtol": 1e-7})
    return res.x.reshape(S, A)


def mle_reward(data, pi_ref, beta, R, r0=None) -> np.ndarray:
    """Bradley-Terry MLE r_hat over the policy class (Alg. 2, line 1)."""
    return fit_reward(data, pi_ref, beta, R, r0=r0)


def xpo_reward(data, pi_ref, beta, R, c=1.0, r0=None) -> np.ndarray:
    """XPO's optimistic objective (Xie et al. 2024, Alg. 1) with alpha_n = c / sqrt(n)."""
    return fit_reward(data, pi_ref, beta, R, coef=c / math.sqrt(max(data.n, 1)), anchor=data.second, r0=r0)


def rpo_reward(data, pi_ref, beta, R, c=1.0, r0=None) -> np.ndarray:
    """RPO's pessimistic (SFT-regularised) objective (Liu et al. 2024) with eta_n = c / sqrt(n)."""
    return fit_reward(data, pi_ref, beta, R, coef=-c / math.sqrt(max(data.n, 1)), anchor=data.chosen, r0=r0)


def value_bounds(r_hat, data: Preferences, inst: Instance, policies, z, ridge=1e-3):
    """Estimates and confidence half-widths of J(pi) - J(pi_ref) for each policy (Lemmas 4.2-4.3).

    With ``g = rho (pi - pi_ref)`` (zero-sum per prompt, so shift invariant), ``H`` the Fisher information of
    the BT likelihood at ``r_hat`` (block diagonal over prompts: a weighted graph Laplacian, plus ``ridge``),
    the bounds are ``max/min <g, r>`` over ``{(r - r_hat)^T H (r - r_hat) <= z^2}`` intersected with ``[0, R]``,
    relaxed to the smaller of the two sets' values. Returns ``(estimate, width_up, width_down)``, arrays of
    shape ``(len(policies),)``.
    """
    policies = np.asarray(policies)
    A = inst.pi_ref.shape[1]
    D = r_hat[:, :, None] - r_hat[:, None, :]
    C = (data.wins + data.wins.transpose(0, 2, 1)) * expit(D) * expit(-D)
    H = np.eye(A) * (C.sum(axis=2)[:, :, None] + ridge) - C
    G = (policies - inst.pi_ref) * inst.rho[None, :, None]  # (K, S, A)
    sol = np.linalg.solve(H[None], G[..., None])[..., 0]
    ellipse = z * np.sqrt(np.maximum((G * sol).sum(axis=(1, 2)), 0.0))
    g_r = (G * r_hat).sum(axis=(1, 2))
    box_up = inst.R * np.clip(G, 0, None).sum(axis=(1, 2)) - g_r  # max_{r in [0,R]} <g, r - r_hat>
    box_down = g_r - inst.R * np.clip(G, None, 0).sum(axis=(1, 2))  # max_{r in [0,R]} <g, r_hat - r>
    est_ref = kl_objective(inst.pi_ref, inst.pi_ref, r_hat, inst.beta, inst.rho)
    est = np.array([kl_objective(p, inst.pi_ref, r_hat, inst.beta, inst.rho) - est_ref for p in policies])
    return est, np.minimum(ellipse, box_up), np.minimum(ellipse, box_down)


def confidence_radii(n_prompts, n_responses, n_sources, delta=0.1) -> tuple[float, float]:
    """Radii ``(z_src, z_self)`` of the confidence sets used by TPS (Alg. 2).

    Source policies are fixed before any data: a union bound over the ``W + 1`` candidates gives the
    normal quantile ``z_src`` (the paper's ``log(W/delta)``). ``pi_Dstl`` is chosen *from* the data, so its
    lower bound must hold for every policy of the class at once: ``z_self^2`` is the chi-square quantile
    with ``S (A - 1)`` degrees of freedom (the Laplace form of a ``log|Pi|``-sized likelihood-ratio set).
    """
    level = 1 - delta / (n_sources + 1)
    return float(ndtri(level)), float(np.sqrt(chi2.ppf(level, n_prompts * (n_responses - 1))))


def transfer_policy_selection(r_hat, data, inst: Instance, source_policies, pi_dstl, z_src, z_self):
    """Alg. 2: argmax of {UCB of each source policy} and {LCB of the self-transfer policy pi_Dstl}.

    Returns ``(index, scores)``; index ``W`` means self-transfer. Scores estimate J(pi) - J(pi_ref).
    """
    est, up, _ = value_bounds(r_hat, data, inst, source_policies, z_src)
    est_self, _, down = value_bounds(r_hat, data, inst, pi_dstl[None], z_self)
    scores = np.concatenate([est + up, est_self - down])
    return int(np.argmax(scores)), scores


# --------------------------------------------------------------------------- driver
def _check_method(method: str, W: int) -> None:
    if not isinstance(method, str):
        raise ValueError(f"method must be a string, got {method!r}")
    if method in ("online", "tpo"):
        return
    if method == "oracle-best":
        if W == 0:
            raise ValueError("method 'oracle-best' needs at least one source in source_mix")
        return
    if method.startswith("exploit-"):
        idx = method[len("exploit-"):]
        if not idx.isdigit():
            raise ValueError(f"method {method!r}: expected 'exploit-<w>' with an integer w")
        if int(idx) >= W:
            raise ValueError(f"method {method!r}: source index out of range, there are {W} sources (0..{W - 1})")
        return
    raise ValueError(f"unknown method {method!r}; expected 'online', 'tpo', 'exploit-<w>' or 'oracle-best'")


def simulate(method, *, n_prompts=10, n_responses=20, source_mix=(0.1, 0.5, 1.0), beta=1.0, R=1.0, T=5000,
             seed=0, N=100, alpha=None, xpo_c=0.1, rpo_c=10.0, delta=0.1) -> pd.DataFrame:
    """Run one method for T steps on the instance ``make_instance(..., seed)``; one row per step.

    Methods: ``"online"`` (XPO alone), ``"tpo"`` (Alg. 1), ``"exploit-w"`` (always ``pi*_{r_w}``) and
    ``"oracle-best"`` (always the source with the smallest exact gap). Learners refit once per block of
    ``N`` steps. TPO: in each block the first ``ceil(alpha * N)`` steps deploy XPO's policy, then TPS (Alg. 2)
    runs on all data and its choice is deployed for the rest of the block. ``alpha`` defaults to
    ``exp(-R/beta)`` (the paper's corollary choice). XPO inside TPO is fit on all of D (any data is valid for
    its MLE). Learning randomness: :func:`tpo_core.plumbing.streams.simulation_learning`.

    Columns: ``t`` (1..T), ``regret`` (exact J(pi*) - J(pi_t)), ``cum_regret``, ``policy`` (``"online"``,
    ``"source-w"`` or ``"self"``), ``value`` (J_beta(pi_t)), and for TPO ``self_value`` / ``self_lcb``: the true
    value of the latest pi_Dstl and TPS's pessimistic estimate of it, both on the J scale (the estimate of
    J - J(pi_ref) plus the exact J(pi_ref)); NaN for other methods and before the first TPS call.
    Defaults (chosen on seeds >= 1000, not on the chapter's seeds): ``N = 100``, ``alpha = e^{-R/beta}``,
    ``xpo_c = 0.1``, ``rpo_c = 10``, ``delta = 0.1``.
    """
    mix = _check_args(n_prompts, n_responses, source_mix, R, beta)
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
        raise ValueError(f"T must be an integer >= 1, got {T!r}")
    if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 1:
        raise ValueError(f"N (block length) must be an integer >= 1, got {N!r}")
    alpha = math.exp(-R / beta) if alpha is None else float(alpha)
    if not (0.0 < alpha <= 1.0):
        raise ValueError(f"alpha must lie in (0, 1], got {alpha!r}")
    if not (0.0 < delta < 1.0):
        raise ValueError(f"delta must lie in (0, 1), got {delta!r}")
    if xpo_c < 0 or rpo_c < 0:
        raise ValueError("xpo_c and rpo_c must be >= 0")
    W = len(mix)
    _check_method(method, W)

    inst = make_instance(n_prompts, n_responses, mix, R, seed, beta)
    src_pi = np.stack([inst.policy(r) for r in inst.sources]) if W else np.zeros((0, *inst.pi_ref.shape))
    src_gap = np.array([inst.gap(p) for p in src_pi])
    src_val = np.array([inst.value(p) for p in src_pi])
    names = ["online", "self"] + [f"source-{w}" for w in range(W)]
    regret, value, code = np.zeros(T), np.zeros(T), np.zeros(T, dtype=int)
    self_value, self_lcb = np.full(T, np.nan), np.full(T, np.nan)

    if method.startswith("exploit-") or method == "oracle-best":
        w = int(np.argmin(src_gap)) if method == "oracle-best" else int(method.split("-")[1])
        regret[:], value[:], code[:] = src_gap[w], src_val[w], 2 + w
    else:
        rng = simulation_learning(seed)
        S, A = inst.pi_ref.shape
        data = Preferences(S, A)
        z_src, z_self = confidence_radii(S, A, W, delta)
        r_ol = r_mle = r_rpo = None
        pi_ol = inst.pi_ref
        j_ref = inst.value(inst.pi_ref)
        for start in range(0, T, N):
            end = min(T, start + N)
            n_on = end - start if method == "online" else min(end - start, math.ceil(alpha * N))
            regret[start:start + n_on], value[start:start + n_on] = inst.gap(pi_ol), inst.value(pi_ol)
            _collect(rng, inst, pi_ol, n_on, data)
            if start + n_on < end:  # TPO: Transfer Policy Selection on all data so far
                r_mle = mle_reward(data, inst.pi_ref, beta, R, r0=r_mle)
                r_rpo = rpo_reward(data, inst.pi_ref, beta, R, c=rpo_c, r0=r_rpo)
                pi_dstl = inst.policy(r_rpo)
                k, scores = transfer_policy_selection(r_mle, data, inst, src_pi, pi_dstl, z_src, z_self)
                pi_tr = src_pi[k] if k < W else pi_dstl
                seg = slice(start + n_on, end)
                regret[seg], value[seg], code[seg] = inst.gap(pi_tr), inst.value(pi_tr), (2 + k if k < W else 1)
                self_value[seg], self_lcb[seg] = inst.value(pi_dstl), scores[W] + j_ref
                _collect(rng, inst, pi_tr, end - seg.start, data)
            r_ol = xpo_reward(data, inst.pi_ref, beta, R, c=xpo_c, r0=r_ol)
            pi_ol = inst.policy(r_ol)

    df = pd.DataFrame({
        "t": np.arange(1, T + 1),
        "regret": regret,
        "cum_regret": np.cumsum(regret),
        "policy": pd.Categorical.from_codes(code, categories=names),
        "value": value,
        "self_value": self_value,
        "self_lcb": self_lcb,
    })
    df[["self_value", "self_lcb"]] = df[["self_value", "self_lcb"]].ffill()
    return df


# --------------------------------------------------------------------------- summaries of a run
def curve_steps(horizon: int) -> np.ndarray:
    """Steps at which a run's curves are kept: 150 log- and 150 linearly spaced in ``[1, horizon]`` (unique,
    sorted int64)."""
    g = np.r_[np.geomspace(1, horizon, 150), np.linspace(1, horizon, 150)]
    return np.unique(np.round(g).astype(int))


def summarize_run(df: pd.DataFrame, *, N: int, n_sources: int) -> dict:
    """One :func:`simulate` run (``df``, ``T`` rows) in numbers small enough to ship from a worker process.

    ``curve``: cumulative regret at :func:`curve_steps`; ``final``: total regret; ``late``: regret after
    ``T // 2``, split into ``late_online`` / ``late_transfer`` steps; ``part_online`` / ``part_source`` /
    ``part_self``: total regret of each kind of step, with ``n_source`` / ``n_self`` steps; ``lcb_n`` /
    ``lcb_ok``: TPS selections of the self-transfer policy made, and those whose pessimistic value was a true
    lower bound (Lemma 4.3); ``shares``: per block of ``N`` steps, the share of steps each policy
    (``online``, ``self``, ``source-w``) was deployed, at block midpoints ``window_t``.
    """
    horizon = len(df)
    regret, t = df.regret.to_numpy(), df.t.to_numpy()
    policy = df.policy.astype(str).to_numpy()
    online, self_ = policy == "online", policy == "self"
    late = t > horizon // 2
    tps = df.loc[df.self_lcb.notna() & (policy != "online"), ["self_lcb", "self_value"]].drop_duplicates()
    n_win = math.ceil(horizon / N)  # one window per block
    window = (t - 1) // N
    shares = {name: np.bincount(window[policy == name], minlength=n_win) / np.bincount(window, minlength=n_win)
              for name in ("online", "self") + tuple(f"source-{w}" for w in range(n_sources))}
    return dict(
        curve=df.cum_regret.to_numpy()[curve_steps(horizon) - 1], final=regret.sum(),
        late=regret[late].sum(), late_online=regret[late & online].sum(),
        late_transfer=regret[late & ~online].sum(),
        part_online=regret[online].sum(), part_source=regret[~online & ~self_].sum(),
        part_self=regret[self_].sum(), n_source=int((~online & ~self_).sum()), n_self=int(self_.sum()),
        lcb_n=len(tps), lcb_ok=int((tps.self_lcb <= tps.self_value + 1e-12).sum()),
        shares=shares, window_t=np.minimum((np.arange(n_win) + 0.5) * N, horizon),
    )


def loglog_slope(curves, t, lo: float, hi: float) -> np.ndarray:
    """Least-squares slope of ``log curve`` against ``log t`` over ``lo <= t <= hi``, one per row.

    ``curves``: ``(n_runs, len(t))`` cumulative regrets (floored at 1e-12 before the log). Linear regret has
    slope 1, ``sqrt(T)`` regret slope 1/2. Returns ``(n_runs,)`` (``scipy.stats.linregress`` per row)."""
    from scipy.stats import linregress

    t = np.asarray(t)
    sel = (t >= lo) & (t <= hi)
    x = np.log(t[sel])
    return np.array([linregress(x, np.log(np.maximum(row[sel], 1e-12))).slope for row in np.atleast_2d(curves)])
