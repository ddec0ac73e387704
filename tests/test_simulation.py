"""Tests of the tabular TPO simulation (tpo_core.theory.simulation)."""

import numpy as np
import pandas as pd
import pytest

from tpo_core.theory import simulation as sim
from tpo_core.theory.exact import kl_divergence, optimal_policy, value_gap

SMALL = dict(n_prompts=4, n_responses=6, T=600, N=50)


def _data_from(inst, pi, n, seed=0):
    data = sim.Preferences(*inst.pi_ref.shape)
    sim._collect(np.random.default_rng(seed), inst, pi, n, data)
    return data


# --------------------------------------------------------------------------- learners
def test_mle_recovers_reward_up_to_per_prompt_shift():
    inst = sim.make_instance(n_prompts=3, n_responses=5, seed=1)
    data = _data_from(inst, inst.pi_ref, 200_000)
    r_hat = sim.mle_reward(data, inst.pi_ref, inst.beta, inst.R)
    centred = lambda r: r - r.mean(axis=1, keepdims=True)  # noqa: E731
    assert np.all((r_hat >= 0) & (r_hat <= inst.R))
    np.testing.assert_allclose(centred(r_hat), centred(inst.r_star), atol=0.05)


def test_mle_is_shift_invariant_and_no_data_returns_start():
    inst = sim.make_instance(n_prompts=2, n_responses=4, seed=0)
    empty = sim.Preferences(2, 4)
    np.testing.assert_array_equal(sim.mle_reward(empty, inst.pi_ref, 1.0, 1.0), np.full((2, 4), 0.5))


def test_xpo_is_optimistic_and_rpo_pessimistic_relative_to_mle():
    """XPO lowers the likelihood of pi_ref samples (optimism), RPO raises that of chosen responses (SFT)."""
    inst = sim.make_instance(n_prompts=4, n_responses=6, seed=2)
    data = _data_from(inst, inst.pi_ref, 400)
    args = (data, inst.pi_ref, inst.beta, inst.R)
    r_mle, r_xpo, r_rpo = sim.mle_reward(*args), sim.xpo_reward(*args, c=5.0), sim.rpo_reward(*args, c=50.0)
    log_pi = lambda r: np.log(inst.policy(r))  # noqa: E731
    assert (data.second * log_pi(r_xpo)).sum() < (data.second * log_pi(r_mle)).sum()
    assert (data.chosen * log_pi(r_rpo)).sum() > (data.chosen * log_pi(r_mle)).sum()
    # optimism = implied value over pi_ref, beta E_rho KL(pi_ref || pi_r), is larger for XPO
    kl = lambda r: inst.rho @ kl_divergence(inst.pi_ref, inst.policy(r))  # noqa: E731
    assert kl(r_xpo) > kl(r_mle)


def test_confidence_radii_self_is_uniform_over_class():
    z_src, z_self = sim.confidence_radii(10, 20, 3, delta=0.1)
    assert 1.5 < z_src < 2.5
    assert z_self > 3 * z_src  # chi-square radius with S(A-1) = 190 degrees of freedom


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_rpo_pessimistic_value_is_a_lower_bound(seed):
    df = sim.simulate("tpo", source_mix=(0.9, 1.0), T=2000, seed=seed + 100)
    ok = df.dropna(subset=["self_lcb"])
    assert len(ok) > 0
    assert np.all(ok.self_lcb <= ok.self_value + 1e-12)


def test_value_bounds_cover_fixed_policies_with_lots_of_data():
    inst = sim.make_instance(n_prompts=3, n_responses=5, seed=4)
    data = _data_from(inst, inst.pi_ref, 20_000)
    r_hat = sim.mle_reward(data, inst.pi_ref, inst.beta, inst.R)
    pols = np.stack([inst.policy(r) for r in inst.sources] + [inst.policy(inst.r_star)])
    est, up, down = sim.value_bounds(r_hat, data, inst, pols, z=4.0)
    true = np.array([inst.value(p) for p in pols]) - inst.value(inst.pi_ref)
    assert np.all(est - down <= true) and np.all(true <= est + up)
    assert np.all(up < 0.05)


# --------------------------------------------------------------------------- simulate
@pytest.mark.parametrize("method", ["online", "tpo", "exploit-0", "exploit-1", "oracle-best"])
def test_frame_shape_and_monotone_regret(method):
    df = sim.simulate(method, source_mix=(0.1, 1.0), seed=3, **SMALL)
    assert list(df.columns[:5]) == ["t", "regret", "cum_regret", "policy", "value"]
    assert len(df) == SMALL["T"] and df.t.tolist() == list(range(1, SMALL["T"] + 1))
    assert np.all(df.regret >= 0)
    assert np.all(np.diff(df.cum_regret.to_numpy()) >= 0)
    assert set(df.policy.unique()) <= {"online", "self", "source-0", "source-1"}


def test_determinism_for_a_seed():
    a = sim.simulate("tpo", seed=5, **SMALL)
    b = sim.simulate("tpo", seed=5, **SMALL)
    pd.testing.assert_frame_equal(a, b)
    c = sim.simulate("tpo", seed=6, **SMALL)
    assert not np.allclose(a.cum_regret, c.cum_regret)


def test_instances_are_paired_across_methods():
    kw = dict(n_prompts=4, n_responses=6, source_mix=(0.1, 0.5, 1.0), R=1.0, seed=7)
    inst = sim.make_instance(**kw)
    again = sim.make_instance(**kw, beta=0.3)  # beta does not change the draws
    for f in ("r_star", "pi_ref", "rho", "sources"):
        np.testing.assert_array_equal(getattr(inst, f), getattr(again, f))
    # source 0 does not depend on the other sources
    np.testing.assert_array_equal(sim.make_instance(**{**kw, "source_mix": (0.1,)}).sources[0], inst.sources[0])
    # every method starts on the same instance: online's first step is pi_ref, exploit-w is pi*_{r_w}
    sim_kw = {k: v for k, v in kw.items() if k != "R"}
    on = sim.simulate("online", T=10, **sim_kw)
    tpo = sim.simulate("tpo", T=10, **sim_kw)
    assert on.value.iloc[0] == pytest.approx(inst.value(inst.pi_ref))
    assert tpo.value.iloc[0] == pytest.approx(inst.value(inst.pi_ref))
    gaps = [sim.simulate(f"exploit-{w}", T=10, **sim_kw).regret.iloc[0] for w in range(3)]
    assert sim.simulate("oracle-best", T=10, **sim_kw).regret.iloc[0] == pytest.approx(min(gaps))


@pytest.mark.parametrize("w", [0, 1, 2])
def test_exploit_regret_is_exact_gap_of_source_policy(w):
    kw = dict(n_prompts=5, n_responses=7, source_mix=(0.1, 0.5, 1.0), R=2.0, seed=8)
    inst = sim.make_instance(**kw, beta=0.5)
    gap = value_gap(optimal_policy(inst.pi_ref, inst.sources[w], 0.5), inst.pi_ref, inst.r_star, 0.5, inst.rho)
    df = sim.simulate(f"exploit-{w}", T=300, beta=0.5, **kw)
    np.testing.assert_allclose(df.regret, gap, rtol=0, atol=1e-15)
    np.testing.assert_allclose(df.cum_regret.iloc[-1], 300 * gap, rtol=1e-12)
    assert (df.policy == f"source-{w}").all()


def test_tpo_with_alpha_one_is_online():
    a = sim.simulate("tpo", alpha=1.0, seed=9, **SMALL)
    b = sim.simulate("online", seed=9, **SMALL)
    np.testing.assert_allclose(a.cum_regret, b.cum_regret)


def test_tpo_block_structure_and_no_sources():
    df = sim.simulate("tpo", source_mix=(), seed=10, **SMALL)  # W = 0: Corollary 4.5
    assert set(df.policy.unique()) == {"online", "self"}
    n_online = int(np.ceil(np.exp(-1.0) * SMALL["N"]))
    block = df.policy.iloc[: SMALL["N"]].tolist()
    assert block == ["online"] * n_online + ["self"] * (SMALL["N"] - n_online)


@pytest.mark.parametrize(
    "method, kw, match",
    [
        ("nope", {}, "unknown method"),
        ("exploit-3", {}, "out of range"),
        ("exploit-x", {}, "integer"),
        ("oracle-best", {"source_mix": ()}, "at least one source"),
        ("online", {"T": 0}, "T must"),
        ("online", {"beta": 0.0}, "beta"),
        ("online", {"beta": -1.0}, "beta"),
        ("online", {"source_mix": (0.1, 1.5)}, r"\[0, 1\]"),
        ("online", {"source_mix": (-0.1,)}, r"\[0, 1\]"),
        ("online", {"R": 0.0}, "R must"),
        ("online", {"n_prompts": 0}, "n_prompts"),
        ("online", {"n_responses": 1}, "n_responses"),
        ("tpo", {"alpha": 0.0}, "alpha"),
        ("tpo", {"N": 0}, "block length"),
        ("tpo", {"delta": 1.0}, "delta"),
    ],
)
def test_bad_arguments_raise(method, kw, match):
    with pytest.raises(ValueError, match=match):
        sim.simulate(method, **{"T": 10, **kw})


def test_online_ignores_the_sources():
    """One online run per seed serves every source setting (the chapter relies on it)."""
    a = sim.simulate("online", source_mix=(0.1, 0.5, 1.0), seed=11, **SMALL)
    b = sim.simulate("online", source_mix=(), seed=11, **SMALL)
    pd.testing.assert_frame_equal(a[["t", "regret", "value"]], b[["t", "regret", "value"]])


def test_loglog_slope_recovers_known_exponents():
    from tpo_core.theory.simulation import curve_steps, loglog_slope

    t = curve_steps(1000)
    assert t[0] == 1 and t[-1] == 1000 and np.all(np.diff(t) > 0)
    curves = np.stack([3.0 * t ** 0.5, 0.2 * t, 5.0 * np.ones_like(t, dtype=float)])
    np.testing.assert_allclose(loglog_slope(curves, t, 500, 1000), [0.5, 1.0, 0.0], atol=1e-12)


def test_summarize_run_splits_regret_and_counts_shares():
    from tpo_core.theory.simulation import simulate, summarize_run

    df = simulate("tpo", n_prompts=3, n_responses=4, source_mix=(0.1, 1.0), T=250, N=50, seed=2)
    out = summarize_run(df, N=50, n_sources=2)
    assert out["final"] == pytest.approx(df.regret.sum())
    assert out["part_online"] + out["part_source"] + out["part_self"] == pytest.approx(out["final"])
    assert out["late_online"] + out["late_transfer"] == pytest.approx(out["late"])
    total = sum(out["shares"].values())
    np.testing.assert_allclose(total, 1.0)  # every step of every block went to one policy
    assert len(out["window_t"]) == 5 and out["curve"][-1] == pytest.approx(out["final"])
    assert 0 <= out["lcb_ok"] <= out["lcb_n"]
