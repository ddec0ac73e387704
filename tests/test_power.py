"""tpo_core.study.power: the MDE against the noncentral t distribution, the variance split on simulated seeds with
known training and evaluation noise, Holm against its definition."""

import math

import numpy as np
import pytest
from scipy import stats

from tpo_core.study import power as P


def _power_at(effect_sd_units, n, alpha):
    """Power of the two-sided one-sample t-test by statsmodels (the peer), where it is finite."""
    from statsmodels.stats.power import TTestPower

    return TTestPower().power(effect_size=effect_sd_units, nobs=n, alpha=alpha, alternative="two-sided")


def test_power_equals_statsmodels_and_simulation():
    for e, n, a in [(0.5, 10, 0.05), (1.2, 5, 0.05 / 9), (0.3, 40, 0.01), (2.0, 3, 0.05)]:
        assert P.power_of_t_test(e, n, a) == pytest.approx(_power_at(e, n, a), abs=1e-9)
    rng = np.random.default_rng(1)  # Monte Carlo: 20,000 experiments of 6 seeds, effect 1 sd
    x = rng.normal(1.0, 1.0, (20_000, 6))
    p = stats.ttest_1samp(x, 0.0, axis=1).pvalue
    assert (p < 0.05).mean() == pytest.approx(P.power_of_t_test(1.0, 6, 0.05), abs=0.01)
    assert np.isfinite(P.power_of_t_test(4.0, 5, 0.05 / 9))  # where statsmodels gives NaN


@pytest.mark.parametrize("n, n_tests", [(3, 1), (5, 9), (10, 9), (30, 1)])
def test_mde_has_exactly_the_requested_power(n, n_tests):
    sd = 6.5
    m = P.mde(sd, n, alpha=0.05, power=0.8, n_tests=n_tests)
    assert P.power_of_t_test(m / sd, n, 0.05 / n_tests) == pytest.approx(0.8, abs=1e-6)
    assert P.power_of_t_test(0.9 * m / sd, n, 0.05 / n_tests) < 0.8  # a smaller effect is detected less often


def test_mde_approaches_the_normal_formula_and_shrinks_with_seeds():
    big = P.mde(1.0, 10_000)
    assert big == pytest.approx((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) / 100, rel=1e-3)
    assert P.mde(1.0, 5) > P.mde(1.0, 10) > P.mde(1.0, 20)
    assert P.mde(1.0, 10, n_tests=9) > P.mde(1.0, 10)  # Holm's first step is Bonferroni
    assert math.isnan(P.mde(1.0, 1))


def test_seeds_needed_inverts_mde():
    for sd, eff, m in [(6.0, 2.5, 9), (3.0, 1.0, 1), (10.0, 4.0, 9)]:
        n = P.seeds_needed(sd, eff, n_tests=m)
        assert P.mde(sd, n, n_tests=m) <= eff < P.mde(sd, n - 1, n_tests=m)


def test_variance_split_recovers_known_noise():
    """Seeds whose true win rates differ with sd 0.05 (training noise), each judged on 400 Bernoulli prompts
    (evaluation noise sqrt(w(1-w)/400) ~ 0.025): the split recovers both."""
    rng = np.random.default_rng(0)
    n_seeds, n_prompts, sd_t = 400, 400, 0.05
    w = rng.normal(0.5, sd_t, n_seeds)
    x = (rng.random((n_seeds, n_prompts)) < w[:, None]).astype(float)
    out = P.variance_split(x)
    assert out["sd_eval"] == pytest.approx(math.sqrt(0.25 / n_prompts), rel=0.02)
    assert out["sd_train"] == pytest.approx(sd_t, rel=0.15)
    assert out["sd_between"] ** 2 == pytest.approx(out["sd_eval"] ** 2 + out["sd_train"] ** 2)
    # no training noise: the training share is (close to) zero
    x0 = (rng.random((n_seeds, n_prompts)) < 0.5).astype(float)
    assert P.variance_split(x0)["sd_train"] < 0.01


def test_projected_sd_scales_only_the_evaluation_share():
    assert P.projected_sd(3.0, 4.0, n_prompts=200, new_n_prompts=200) == pytest.approx(5.0)
    assert P.projected_sd(3.0, 4.0, n_prompts=200, new_n_prompts=800) == pytest.approx(math.sqrt(9 + 4))
    assert P.projected_sd(3.0, 4.0, n_prompts=200, new_n_prompts=200, new_samples=4) == pytest.approx(math.sqrt(13))
    with pytest.raises(ValueError, match="new_n_prompts"):
        P.projected_sd(1.0, 1.0, n_prompts=10, new_n_prompts=0)


def test_t_test_matches_scipy_and_refuses_degenerate_cells():
    v = [0.52, 0.55, 0.49, 0.58]
    assert P.t_test_vs(v, 0.5) == pytest.approx(stats.ttest_1samp(v, 0.5).pvalue)
    assert math.isnan(P.t_test_vs([0.6, 0.6, 0.6], 0.5)) and math.isnan(P.t_test_vs([0.6, 0.7], 0.5))


def test_holm_matches_its_definition():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    reject, adj = P.holm(p, 0.05)
    m = 4  # the NaN cell is not a test
    order = np.argsort(p[:4])
    expected = np.maximum.accumulate(np.minimum(1, (m - np.arange(m)) * p[:4][order]))
    np.testing.assert_allclose(adj[:4][order], expected)
    assert list(reject) == [True, False, False, True, False] and np.isnan(adj[4])


def test_cell_statistics_against_direct_computation():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.3, 0.1, (5, 40)), rng.normal(0.28, 0.1, (5, 40))
    out = P.cell_statistics(a, b)
    per_seed = (0.5 * (1 + np.sign(a - b))).mean(axis=1)
    assert out["p_value"] == pytest.approx(stats.ttest_1samp(per_seed, 0.5).pvalue)
    assert out["sd_between"] == pytest.approx(100 * per_seed.std(ddof=1))
    diff = (a - b).mean(axis=1)
    lo, hi = stats.t.interval(0.95, 4, loc=diff.mean(), scale=stats.sem(diff))
    assert (out["gold_diff_mean"], out["gold_diff_low"], out["gold_diff_high"]) == pytest.approx((diff.mean(), lo, hi))


def test_holm_verdicts_and_mde_columns():
    import pandas as pd

    t = pd.DataFrame({"win_rate_mean": [58.0, 43.0, 51.0, 60.0], "p_value": [0.001, 0.004, 0.5, np.nan],
                      "sd_between": [5.0, 5.0, 5.0, 0.0], "n_seeds": [10, 10, 10, 2]})
    out = P.add_holm(t)
    assert list(out.verdict) == ["TPO wins", "TPO loses", "no detectable difference", "no test"]
    assert out.p_holm[0] == pytest.approx(0.003) and out.p_holm[1] == pytest.approx(0.008)
    assert out.mde[0] == pytest.approx(P.mde(5.0, 10, n_tests=4)) and "verdict" not in t
    assert np.isnan(out.mde[3])  # 2 seeds, no spread: no MDE either


def test_half_width_is_the_t_interval_of_a_sample_with_that_sd():
    from tpo_core.study.evaluation import t_interval

    v = np.array([48.0, 51.0, 55.0, 47.0, 52.0, 50.5])
    mean, lo, hi = t_interval(v)
    assert P.half_width(float(v.std(ddof=1)), len(v)) == pytest.approx((hi - lo) / 2, rel=1e-12)
    assert np.isnan(P.half_width(3.0, 1))


def test_design_table_costs_and_noise():
    t = P.design_table(5.0, 3.5, n_prompts=200, samples=1, seeds_grid=[5, 10, 20], prompts_grid=[200, 800],
                       samples_grid=[1, 2], seconds_fixed=600, seconds_training_per_seed=300, seconds_per_response=0.02,
                       checkpoints_per_seed=13, n_tests=9)
    assert len(t) == 12
    base = t[(t.n_seeds == 5) & (t.n_test_prompts == 200) & (t.eval_samples == 1)].iloc[0]
    assert base.sd_between == pytest.approx(np.hypot(5.0, 3.5))  # the measured design reproduces its own sd
    assert base.minutes == pytest.approx((600 + 5 * (300 + 13 * 200 * 0.02)) / 60)
    # 4x the responses judged: evaluation variance / 4, training variance unchanged
    four = t[(t.n_seeds == 5) & (t.n_test_prompts == 800) & (t.eval_samples == 1)].iloc[0]
    assert four.sd_between == pytest.approx(np.sqrt(25 + 3.5 ** 2 / 4))
    two = t[(t.n_seeds == 5) & (t.n_test_prompts == 200) & (t.eval_samples == 2)].iloc[0]
    assert two.sd_between == pytest.approx(np.sqrt(25 + 3.5 ** 2 / 2))
    # more seeds: a narrower interval and a smaller MDE, at a cost linear in the seeds
    for (n, m), d in t.groupby(["n_test_prompts", "eval_samples"]):
        d = d.sort_values("n_seeds")
        assert (np.diff(d.half_width) < 0).all() and (np.diff(d.mde) < 0).all()
        assert np.allclose(np.diff(d.minutes) / np.diff(d.n_seeds), (d.minutes.iloc[1] - d.minutes.iloc[0]) / 5)
    assert t.mde.iloc[0] == pytest.approx(P.mde(np.hypot(5.0, 3.5), 5, n_tests=9))
    # checkpoints judged whatever the seeds: a cost that grows with the responses judged, not with the seeds
    f = P.design_table(5.0, 3.5, n_prompts=200, samples=1, seeds_grid=[5, 10], prompts_grid=[200, 800],
                       samples_grid=[1], seconds_fixed=600, seconds_training_per_seed=300, seconds_per_response=0.02,
                       checkpoints_per_seed=13, checkpoints_fixed=7, n_tests=9)
    plain = t[t.eval_samples == 1].reset_index(drop=True)
    extra = 7 * f.n_test_prompts * 0.02 / 60
    np.testing.assert_allclose(f.minutes - plain[plain.n_seeds <= 10].minutes.to_numpy(), extra)
    noise = ["sd_between", "half_width", "mde"]
    assert (f[noise].to_numpy() == plain[plain.n_seeds <= 10][noise].to_numpy()).all()  # the noise is unchanged
    with pytest.raises(ValueError):
        P.design_table(5.0, 3.5, n_prompts=200, samples=1, seeds_grid=[5], prompts_grid=[200], samples_grid=[1],
                       seconds_fixed=-1, seconds_training_per_seed=1, seconds_per_response=1, checkpoints_per_seed=1)
    with pytest.raises(ValueError, match="checkpoints_fixed"):
        P.design_table(5.0, 3.5, n_prompts=200, samples=1, seeds_grid=[5], prompts_grid=[200], samples_grid=[1],
                       seconds_fixed=0, seconds_training_per_seed=1, seconds_per_response=1, checkpoints_per_seed=1,
                       checkpoints_fixed=-1)


def test_variance_split_of_crossed_prompts_counts_the_shared_prompt_effect_apart():
    """Every seed judged on the same prompts: a prompt main effect (sd 0.3 on the outcome scale) is common to all
    seeds, so it must not count as noise between seeds. The split recovers the seed, prompt and residual parts."""
    rng = np.random.default_rng(5)
    n_seeds, n_prompts, sd_seed, sd_prompt, sd_resid = 300, 300, 0.03, 0.3, 0.2
    x = (0.5 + rng.normal(0, sd_seed, (n_seeds, 1)) + rng.normal(0, sd_prompt, (1, n_prompts))
         + rng.normal(0, sd_resid, (n_seeds, n_prompts)))
    out = P.variance_split(x)
    assert out["sd_eval"] == pytest.approx(sd_resid / math.sqrt(n_prompts), rel=0.03)
    assert out["sd_train"] == pytest.approx(sd_seed, rel=0.15)
    assert out["sd_prompt"] == pytest.approx(sd_prompt / math.sqrt(n_prompts), rel=0.15)
    assert out["sd_between"] == pytest.approx(x.mean(axis=1).std(ddof=1))  # the sd of the per-seed means
    # the within-seed (nested) estimate would have called the prompt effect noise: sqrt(0.3² + 0.2²) / sqrt(P)
    nested = math.sqrt((x.var(axis=1, ddof=1) / n_prompts).mean())
    assert nested > 1.5 * out["sd_eval"]


def test_floored_t_never_narrower_than_the_evaluation_noise():
    from tpo_core.study.evaluation import t_interval

    spread = np.array([0.52, 0.55, 0.49, 0.58, 0.51])
    out = P.floored_t(spread, sd_eval=0.01)  # the seeds vary more than their evaluation noise: the plain t
    mean, lo, hi = t_interval(spread, bounds=(0, 1))
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((lo, hi)) and not out["floored"]
    assert out["p_value"] == pytest.approx(stats.ttest_1samp(spread, 0.5).pvalue)
    # five seeds far closer together than 200 binary outcomes each allow (the IPO cell of an earlier build)
    tight = np.array([0.500, 0.495, 0.505, 0.495, 0.510])
    sd_eval = math.sqrt(0.25 / 200)
    out = P.floored_t(tight, sd_eval)
    half = stats.t.ppf(0.975, 4) * sd_eval / math.sqrt(5)
    assert out["floored"] and out["sd"] == sd_eval
    assert (out["ci_high"] - out["ci_low"]) / 2 == pytest.approx(half)
    assert (out["ci_high"] - out["ci_low"]) / 2 > 3 * (stats.t.ppf(0.975, 4) * tight.std(ddof=1) / math.sqrt(5))
    assert math.isnan(P.floored_t([0.5, 0.6], 0.01)["ci_low"])  # too few seeds: no interval


def test_floored_t_covers_at_least_its_level_when_seeds_do_not_vary():
    """No training noise, 5 seeds x 200 fair coin prompts: the floored interval covers 50% at least 95% of the
    time (the plain t-interval, built from five noisy sds, also does on average, but it has no floor)."""
    rng = np.random.default_rng(11)
    per_seed = (rng.random((4000, 5, 200)) < 0.5).mean(axis=2)
    cover = np.mean([(lambda o: o["ci_low"] <= 0.5 <= o["ci_high"])(P.floored_t(v, math.sqrt(0.25 / 200)))
                     for v in per_seed])
    assert cover >= 0.95


def test_crossed_interval_covers_the_mean_over_new_seeds_and_new_prompts():
    from tpo_core.study.evaluation import t_interval

    rng = np.random.default_rng(7)
    hits, hits_seeds_only = [], []
    for _ in range(600):
        x = 0.5 + rng.normal(0, 0.04, (8, 1)) + rng.normal(0, 0.25, (1, 60)) + rng.normal(0, 0.3, (8, 60))
        lo, hi = P.crossed_interval(x)
        hits.append(lo <= 0.5 <= hi)
        _, tlo, thi = t_interval(x.mean(axis=1))
        hits_seeds_only.append(tlo <= 0.5 <= thi)
    assert 0.92 <= np.mean(hits) <= 0.99
    assert np.mean(hits_seeds_only) < 0.85  # the interval across seeds alone misses the prompt main effect
    assert all(math.isnan(v) for v in P.crossed_interval(np.ones((2, 5)) * 0.5 + np.eye(2, 5)))


def test_tie_rate_counts_equal_gold_pairs():
    a = np.array([[[0.1, 0.2], [0.3, 0.3]]])  # 1 seed, 2 prompts, 2 samples
    b = np.array([[[0.1, 0.5], [0.3, 0.0]]])
    # prompt 0: pairs (0.1,0.1) tie, (0.1,0.5), (0.2,0.1), (0.2,0.5): 1 of 4; prompt 1: (0.3,0.3) twice: 2 of 4
    assert P.tie_rate(a, b) == pytest.approx(3 / 8)
    assert P.tie_rate(a[..., 0], b[..., 0]) == 1.0 and P.tie_rate(a[..., 1], b[..., 1]) == 0.0
