"""tpo_core.study.evaluation: closed forms, scipy as an oracle, and interval coverage."""

import numpy as np
import pytest
from scipy import stats

from tpo_core.study import evaluation as ev


def test_pairwise_outcomes_ties_count_half():
    out = ev.pairwise_outcomes([1.0, 0.2, 0.5], [0.5, 0.7, 0.5])
    np.testing.assert_array_equal(out, [[1.0, 0.0, 0.5]])


def test_win_rates_of_swapped_policies_sum_to_one():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 50)), rng.normal(size=(3, 50))
    a[:, :5] = b[:, :5]  # some ties
    total = ev.pairwise_outcomes(a, b) + ev.pairwise_outcomes(b, a)
    np.testing.assert_array_equal(total, np.ones_like(total))


def test_t_interval_matches_scipy():
    v = np.array([0.52, 0.55, 0.49, 0.58, 0.51])
    mean, lo, hi = ev.t_interval(v, 0.95)
    exp_lo, exp_hi = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    assert mean == pytest.approx(v.mean()) and lo == pytest.approx(exp_lo) and hi == pytest.approx(exp_hi)
    # the half-width is t_{0.975, n-1} * s / sqrt(n)
    assert hi - mean == pytest.approx(stats.t.ppf(0.975, 4) * v.std(ddof=1) / np.sqrt(5))


def test_t_interval_degenerate_cases():
    """One or two seeds, or zero spread, give no interval (NaN bounds), never a certain one."""
    for v in ([0.5], [0.5, 0.7], [0.625, 0.625, 0.625]):
        mean, lo, hi = ev.t_interval(v)
        assert mean == pytest.approx(np.mean(v)) and np.isnan(lo) and np.isnan(hi)
    assert ev.side_of(*ev.t_interval([0.625] * 3)[1:], value=0.5) == "no interval"


def test_t_interval_is_clipped_to_the_possible_range():
    v = [0.0, 0.05, 0.3]  # wide: the unclipped interval runs below 0, not above 1
    _, lo, hi = ev.t_interval(v)
    _, clo, chi = ev.t_interval(v, bounds=(0.0, 1.0))
    assert lo < 0 and clo == 0.0 and chi == pytest.approx(hi) and hi < 1
    out = ev.summarize_win_rate(np.array([[1.0], [0.0], [1.0]]), np.zeros((3, 1)), np.random.default_rng(0),
                                n_boot=20)
    assert 0.0 <= out["ci_low"] <= out["win_rate_mean"] <= out["ci_high"] <= 100.0


def test_bootstrap_without_seed_resampling_agrees_with_scipy_for_one_seed():
    rng = np.random.default_rng(1)
    x = (rng.random(400) < 0.6).astype(float)
    lo, hi = ev.bootstrap_ci(x, np.random.default_rng(2), n_boot=4000, resample_seeds=False)
    ref = stats.bootstrap((x,), np.mean, n_resamples=4000, method="percentile",
                          rng=np.random.default_rng(3)).confidence_interval
    assert lo == pytest.approx(ref.low, abs=0.01) and hi == pytest.approx(ref.high, abs=0.01)


def test_bootstrap_is_deterministic_for_a_seed_and_brackets_the_mean():
    rng = np.random.default_rng(4)
    x = (rng.random((5, 200)) < 0.55).astype(float)
    a = ev.bootstrap_ci(x, np.random.default_rng(9), n_boot=500)
    b = ev.bootstrap_ci(x, np.random.default_rng(9), n_boot=500)
    assert a == b and a[0] < x.mean() < a[1]


def test_seed_resampling_widens_the_interval_when_seeds_differ():
    rng = np.random.default_rng(5)
    p = np.array([0.4, 0.5, 0.6, 0.45, 0.65])[:, None]  # strong seed-to-seed variation
    x = (rng.random((5, 300)) < p).astype(float)
    lo1, hi1 = ev.bootstrap_ci(x, np.random.default_rng(0), resample_seeds=False)
    lo2, hi2 = ev.bootstrap_ci(x, np.random.default_rng(0), resample_seeds=True)
    assert hi2 - lo2 > 1.5 * (hi1 - lo1)


def test_bootstrap_interval_covers_the_true_win_rate():
    """Coverage of the nominal 90% interval over repeated experiments (seeded, so exact)."""
    rng = np.random.default_rng(6)
    covered = 0
    reps = 200
    for _ in range(reps):
        x = (rng.random((3, 150)) < 0.55).astype(float)
        lo, hi = ev.bootstrap_ci(x, rng, n_boot=400, confidence=0.9, resample_seeds=False)
        covered += lo <= 0.55 <= hi
    assert 0.83 <= covered / reps <= 0.97


def test_probability_of_improvement_is_mann_whitney_u_over_nm():
    a = np.array([0.31, 0.35, 0.29, 0.40, 0.35])
    b = np.array([0.30, 0.28, 0.35, 0.27])
    u = stats.mannwhitneyu(a, b, alternative="two-sided").statistic
    assert ev.probability_of_improvement(a, b) == pytest.approx(u / (len(a) * len(b)))
    assert ev.probability_of_improvement(a, a) == pytest.approx(0.5)
    assert ev.probability_of_improvement([2.0], [1.0]) == 1.0


def test_summarize_win_rate_fields():
    rng = np.random.default_rng(7)
    a = rng.normal(0.1, 1, size=(4, 100))
    b = rng.normal(0.0, 1, size=(4, 100))
    row = ev.summarize_win_rate(a, b, np.random.default_rng(0), n_boot=300)
    per_seed = 100 * ev.pairwise_outcomes(a, b).mean(axis=1)
    assert row["win_rate_mean"] == pytest.approx(per_seed.mean())
    assert row["ci_low"] < row["win_rate_mean"] < row["ci_high"]
    assert row["boot_low"] < row["win_rate_mean"] < row["boot_high"]
    assert row["n_seeds"] == 4 and row["n_prompts"] == 100 and 0 <= row["p_improve"] <= 1
    frame = ev.as_frame([{"baseline": "x", **row}])
    assert "per_seed" not in frame.columns and frame.loc[0, "baseline"] == "x"


@pytest.mark.parametrize("call, match", [
    (lambda: ev.pairwise_outcomes(np.zeros((2, 3)), np.zeros((3, 2))), "paired"),
    (lambda: ev.pairwise_outcomes([], []), "non-empty"),
    (lambda: ev.pairwise_outcomes([np.nan], [1.0]), "NaN"),
    (lambda: ev.t_interval([]), "at least one"),
    (lambda: ev.t_interval([1.0, 2.0], confidence=1.5), "confidence"),
    (lambda: ev.bootstrap_ci([1.0, 0.0], rng=None), "Generator"),
    (lambda: ev.bootstrap_ci([1.0, 0.0], np.random.default_rng(0), n_boot=0), "n_boot"),
    (lambda: ev.probability_of_improvement([], [1.0]), "non-empty"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_side_of_an_interval():
    from tpo_core.study.evaluation import side_of
    assert side_of(50.1, 60) == "above" and side_of(40, 49.9) == "below"
    assert side_of(50, 60) == "contains" and side_of(40, 50) == "contains"  # touching 50: not excluded
    assert side_of(float("nan"), float("nan")) == "no interval" and side_of(float("nan"), 60) == "no interval"
    assert side_of(0.6, 0.9, value=0.5) == "above"


def test_ratio_of_means_ci_is_paired_and_brackets_the_ratio():
    from tpo_core.study.evaluation import normal_band, ratio_of_means_ci

    rng = np.random.default_rng(0)
    b = rng.uniform(10, 20, size=12)
    a = 0.5 * b * (1 + 0.01 * rng.standard_normal(12))  # a tracks b seed by seed
    ratio, lo, hi = ratio_of_means_ci(a, b, np.random.default_rng(1))
    assert ratio == pytest.approx(a.mean() / b.mean()) and lo < ratio < hi
    assert hi - lo < 0.02  # paired: the seed-to-seed spread of b cancels
    a_shuffled = rng.permutation(a)
    _, lo_u, hi_u = ratio_of_means_ci(a_shuffled, b, np.random.default_rng(1))
    assert hi_u - lo_u > 5 * (hi - lo)  # unpaired, the spread shows
    with pytest.raises(ValueError):
        ratio_of_means_ci(a[:1], b[:1], rng)
    m, h = normal_band(np.array([[1.0, 2.0], [3.0, 4.0]]))
    np.testing.assert_allclose(m, [2.0, 3.0])
    np.testing.assert_allclose(h, 1.96 * np.sqrt(2.0) / np.sqrt(2))


def test_several_samples_per_prompt_compare_all_pairs():
    """With m responses per prompt, a prompt's outcome is the mean over all m_a × m_b comparisons (ties ½),
    checked against a brute-force count; one sample per prompt is the plain comparison."""
    rng = np.random.default_rng(4)
    a = rng.integers(0, 4, size=(2, 5, 3)).astype(float)  # small integers: many ties
    b = rng.integers(0, 4, size=(2, 5, 2)).astype(float)
    out = ev.pairwise_outcomes(a, b)
    brute = np.array([[np.mean([1.0 if x > y else 0.5 if x == y else 0.0 for x in a[s, p] for y in b[s, p]])
                       for p in range(5)] for s in range(2)])
    np.testing.assert_array_equal(out, brute)
    np.testing.assert_array_equal(ev.pairwise_outcomes(a[:, :, :1], b[:, :, :1]),
                                  ev.pairwise_outcomes(a[:, :, 0], b[:, :, 0]))
    r = ev.summarize_win_rate(a, b, np.random.default_rng(0), n_boot=100)
    assert r["n_prompts"] == 5 and r["win_rate_mean"] == pytest.approx(100 * brute.mean())
