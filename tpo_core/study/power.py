"""Statistical power of a Table 1 cell: what the comparison could have detected, and what budget would do.

A cell compares method A with baseline B over ``S`` seeds, paired by seed: seed ``s`` gives a win rate
``w_s``, the mean over ``P`` test prompts of the outcomes ``o_{s,p}`` in {0, 1/2, 1}
(:func:`tpo_core.study.evaluation.pairwise_outcomes`). The t-interval and t-test across seeds rest on the
between-seed variance ``σ_b² = Var(w_s)``, which splits into

* **evaluation noise** ``σ_e²``: the variance of a seed's mean over its prompts given the trained policies,
  estimated within each seed as ``Var_p(o_{s,p}) / P`` and averaged over seeds. More test prompts, or more
  sampled responses per prompt, shrink it;
* **training noise** ``σ_t² = σ_b² − σ_e²`` (clipped at 0): the policies themselves differ from seed to
  seed. Only more seeds, or less noisy training, shrink its share of the interval.

The **minimum detectable effect** (MDE) is the smallest true distance of the win rate from 50% that a
two-sided one-sample t-test on the ``S`` per-seed win rates detects with the given power at level
``α / m``; with Holm's procedure over ``m`` cells (:func:`holm`) the first cell tested faces exactly that
level (later ones a laxer one), so this MDE is the conservative one. Power comes from the noncentral t
distribution (``scipy.stats.nct``, equal to statsmodels' ``TTestPower`` where that is finite, tested) and
Holm from statsmodels' ``multipletests``; effect sizes are in units of ``σ_b``.

Arrays: ``outcomes`` has shape ``(n_seeds, n_prompts)``; per-seed values have shape ``(n_seeds,)``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

__all__ = ["variance_split", "floored_t", "crossed_interval", "tie_rate", "power_of_t_test", "mde", "seeds_needed",
           "projected_sd", "half_width", "design_table", "t_test_vs", "holm", "cell_statistics", "add_holm"]


def _outcomes(outcomes) -> np.ndarray:
    x = np.asarray(outcomes, dtype=float)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2 or not np.all(np.isfinite(x)):
        raise ValueError(f"outcomes must be a finite array (n_seeds >= 2, n_prompts >= 2), got shape {x.shape}")
    return x


def variance_split(outcomes) -> dict:
    """Variance components of a cell whose test prompts are *crossed* with its seeds (every seed is judged on the
    same prompts), from the two-way random-effects ANOVA of ``o[s, p] = μ + a_s + b_p + e_sp``:

    * ``sd_eval``: what the evaluation adds to each seed's mean, ``sqrt(MS_resid / P)`` (the seed×prompt
      interaction with the sampling noise; it differs from seed to seed);
    * ``sd_train``: the seeds' own spread, ``sqrt(max(0, (MS_seed − MS_resid) / P))``;
    * ``sd_between``: the sd of the per-seed means, ``sqrt(MS_seed / P)`` (``sd_eval² + sd_train²`` unless clipped);
    * ``sd_prompt``: the prompt main effect's share of the grand mean, ``sqrt(max(0, (MS_prompt − MS_resid) / S) / P)``.
      It is common to every seed: more seeds do not shrink it, and an interval across seeds does not contain it
      (it is the uncertainty of generalising to other prompts, :func:`crossed_interval`).

    With prompts *nested* in seeds (each seed its own prompts) ``Var_p(o_sp) / P`` would be the evaluation
    noise; crossed, the prompt main effect is shared and must not be counted as noise between seeds.
    All in the units of ``outcomes``; also ``n_seeds``, ``n_prompts`` and the mean squares.
    """
    x = _outcomes(outcomes)
    n_seeds, n_prompts = x.shape
    ms = _mean_squares(x)
    return {"sd_between": math.sqrt(ms["seed"] / n_prompts), "sd_eval": math.sqrt(ms["resid"] / n_prompts),
            "sd_train": math.sqrt(max(0.0, ms["seed"] - ms["resid"]) / n_prompts),
            "sd_prompt": math.sqrt(max(0.0, ms["prompt"] - ms["resid"]) / n_seeds / n_prompts),
            "n_seeds": n_seeds, "n_prompts": n_prompts, "ms_seed": ms["seed"], "ms_prompt": ms["prompt"],
            "ms_resid": ms["resid"]}


def _mean_squares(x: np.ndarray) -> dict:
    """Mean squares of the two-way layout without replication: seeds (rows), prompts (columns), residual."""
    n_seeds, n_prompts = x.shape
    grand, rows, cols = x.mean(), x.mean(axis=1), x.mean(axis=0)
    resid = x - rows[:, None] - cols[None, :] + grand
    return {"seed": n_prompts * float(((rows - grand) ** 2).sum()) / (n_seeds - 1),
            "prompt": n_seeds * float(((cols - grand) ** 2).sum()) / (n_prompts - 1),
            "resid": float((resid ** 2).sum()) / ((n_seeds - 1) * (n_prompts - 1))}


def floored_t(per_seed, sd_eval: float, *, null: float = 0.5, confidence: float = 0.95) -> dict:
    """The t-interval and t-test across seeds of ``per_seed`` (shape ``(n_seeds,)``), with the sd across seeds
    never below ``sd_eval``, the evaluation noise each seed's value carries (:func:`variance_split`): seeds that
    agree more closely than their own evaluation noise allows are chance, and must not read as certainty.
    Returns ``mean, ci_low, ci_high, p_value, sd`` (the sd used) and ``floored`` (whether the floor acted).
    No interval (NaN) for fewer than 3 seeds, as :func:`tpo_core.study.evaluation.t_interval`."""
    v = np.asarray(per_seed, dtype=float).ravel()
    n, mean = v.size, float(v.mean())
    sd_obs = float(v.std(ddof=1)) if n > 1 else float("nan")
    sd = max(sd_obs, float(sd_eval)) if n > 1 else float("nan")
    if n < 3 or not sd > 0:
        return {"mean": mean, "ci_low": float("nan"), "ci_high": float("nan"), "p_value": float("nan"),
                "sd": sd, "floored": False}
    se = sd / math.sqrt(n)
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * se
    p = float(2 * stats.t.sf(abs(mean - null) / se, n - 1))
    return {"mean": mean, "ci_low": max(0.0, mean - half), "ci_high": min(1.0, mean + half), "p_value": p, "sd": sd,
            "floored": bool(sd_eval > sd_obs)}


def crossed_interval(outcomes, *, confidence: float = 0.95) -> tuple[float, float]:
    """Interval of the grand mean of ``outcomes`` (shape ``(n_seeds, n_prompts)``) for new seeds *and* new
    prompts: ``Var = (MS_seed + MS_prompt − MS_resid) / (S·P)`` from the crossed random-effects ANOVA
    (:func:`variance_split`), clipped below at the larger of ``MS_seed`` and ``MS_prompt`` over ``S·P``, with
    Satterthwaite's degrees of freedom. It is wider than the interval across seeds by the prompt main effect.
    NaN below :data:`tpo_core.study.evaluation.MIN_SEEDS_FOR_INTERVAL` seeds or without spread."""
    from tpo_core.study.evaluation import MIN_SEEDS_FOR_INTERVAL

    x = _outcomes(outcomes)
    n_seeds, n_prompts = x.shape
    if n_seeds < MIN_SEEDS_FOR_INTERVAL:  # as the t-interval: no interval from fewer seeds
        return float("nan"), float("nan")
    ms = _mean_squares(x)
    combo = ms["seed"] + ms["prompt"] - ms["resid"]
    terms = [(ms["seed"], n_seeds - 1), (ms["prompt"], n_prompts - 1), (ms["resid"], (n_seeds - 1) * (n_prompts - 1))]
    var = max(combo, ms["seed"], ms["prompt"]) / (n_seeds * n_prompts)
    if var <= 0:
        return float("nan"), float("nan")
    dof = (combo ** 2 / sum(m ** 2 / d for m, d in terms)) if combo > max(ms["seed"], ms["prompt"]) else (
        n_seeds - 1 if ms["seed"] >= ms["prompt"] else n_prompts - 1)
    half = float(stats.t.ppf((1 + confidence) / 2, max(dof, 1.0))) * math.sqrt(var)
    mean = float(x.mean())
    return max(0.0, mean - half), min(1.0, mean + half)


def _check(alpha: float, power: float, n_tests: int) -> None:
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"alpha and power must lie in (0, 1), got {alpha}, {power}")
    if isinstance(n_tests, bool) or not isinstance(n_tests, int) or n_tests < 1:
        raise ValueError(f"n_tests must be a positive integer, got {n_tests!r}")


def power_of_t_test(effect_sd_units: float, n_seeds: int, level: float) -> float:
    """Power of the two-sided one-sample t-test with ``n_seeds`` values at ``level`` against a true effect of
    ``effect_sd_units`` standard deviations: ``P(|T| > t_crit)`` for ``T`` noncentral t with ``n − 1`` degrees
    of freedom and noncentrality ``effect·√n`` (``scipy.stats.nct``; both tails as survival functions, which
    stay finite where statsmodels' ``TTestPower.power`` returns NaN, e.g. effect 4 with 5 seeds)."""
    df, nc = n_seeds - 1, effect_sd_units * math.sqrt(n_seeds)
    crit = stats.t.ppf(1 - level / 2, df)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.sf(crit, df, -nc))


def mde(sd: float, n_seeds: int, *, alpha: float = 0.05, power: float = 0.8, n_tests: int = 1) -> float:
    """Smallest true effect (in the units of ``sd``) that a two-sided one-sample t-test on ``n_seeds`` values
    with standard deviation ``sd`` detects with probability ``power`` at level ``alpha / n_tests``.
    NaN for fewer than 2 seeds or a non-finite ``sd``. (:func:`power_of_t_test` solved for the effect with
    ``scipy.optimize.brentq``; statsmodels' ``solve_power`` can return the negative root.)"""
    from scipy.optimize import brentq

    _check(alpha, power, n_tests)
    if n_seeds < 2 or not math.isfinite(sd):
        return float("nan")
    level = alpha / n_tests
    hi = 1.0
    while power_of_t_test(hi, n_seeds, level) < power:
        hi *= 2
    d = brentq(lambda e: power_of_t_test(e, n_seeds, level) - power, 0.0, hi, xtol=1e-12)
    return d * float(sd)


def seeds_needed(sd: float, effect: float, *, alpha: float = 0.05, power: float = 0.8, n_tests: int = 1,
                 max_seeds: int = 100_000) -> int:
    """Fewest seeds for which :func:`mde` is at most ``effect`` (``sd`` and ``effect`` in the same units)."""
    _check(alpha, power, n_tests)
    if not (effect > 0 and sd >= 0 and math.isfinite(sd)):
        raise ValueError(f"effect must be > 0 and sd finite and >= 0, got effect={effect}, sd={sd}")
    if sd == 0:
        return 2
    lo, hi = 2, 2  # power grows with the number of seeds: double, then bisect
    while power_of_t_test(effect / sd, hi, alpha / n_tests) < power:
        if hi >= max_seeds:
            return max_seeds
        lo, hi = hi, min(2 * hi, max_seeds)
    while lo < hi:
        mid = (lo + hi) // 2
        if power_of_t_test(effect / sd, mid, alpha / n_tests) >= power:
            hi = mid
        else:
            lo = mid + 1
    return hi


def projected_sd(sd_train: float, sd_eval: float, *, n_prompts: int, new_n_prompts: int,
                 samples: int = 1, new_samples: int = 1) -> float:
    """Between-seed sd after changing the evaluation budget, training unchanged: ``σ_e²`` scales as
    ``1 / (prompts × samples per prompt)`` (an approximation for samples: pairs sharing a response are not
    independent), ``σ_t²`` stays."""
    for name, v in (("n_prompts", n_prompts), ("new_n_prompts", new_n_prompts), ("samples", samples),
                    ("new_samples", new_samples)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    scale = (n_prompts * samples) / (new_n_prompts * new_samples)
    return math.sqrt(sd_train ** 2 + sd_eval ** 2 * scale)


def half_width(sd: float, n_seeds: int, confidence: float = 0.95) -> float:
    """Half-width of the Student-t interval of a mean over ``n_seeds`` values with sample sd ``sd``:
    ``t_{(1+c)/2, n−1} · sd / √n`` (what :func:`tpo_core.study.evaluation.t_interval` reports); NaN below 2 seeds."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n_seeds < 2 or not math.isfinite(sd):
        return float("nan")
    return float(stats.t.ppf((1 + confidence) / 2, n_seeds - 1) * sd / math.sqrt(n_seeds))


def design_table(sd_train: float, sd_eval: float, *, n_prompts: int, samples: int, seeds_grid, prompts_grid,
                 samples_grid, seconds_fixed: float, seconds_training_per_seed: float, seconds_per_response: float,
                 checkpoints_per_seed: int, checkpoints_fixed: int = 0, n_tests: int = 1, alpha: float = 0.05,
                 power: float = 0.8, confidence: float = 0.95):
    """What each evaluation design would cost and detect, from one measured design.

    ``sd_train``, ``sd_eval``: the noise components measured with ``n_prompts`` test prompts and ``samples``
    responses per prompt (:func:`variance_split`). For every ``(seeds, test prompts, samples)`` of the grids,
    the between-seed sd is :func:`projected_sd` (training unchanged), and the cost is
    ``seconds_fixed + seeds · seconds_training_per_seed + (seeds · checkpoints_per_seed + checkpoints_fixed) ·
    prompts · samples · seconds_per_response``: training and collection grow with the seeds; evaluation with the
    responses judged on every checkpoint, those that do not grow with the seeds (``checkpoints_fixed``) included.
    Returns a DataFrame, one row per design: ``n_seeds, n_test_prompts, eval_samples, minutes, sd_between,
    half_width`` (the 95% t half-width, :func:`half_width`) and ``mde``
    (:func:`mde` at ``alpha / n_tests``), all in the units of the sds."""
    import pandas as pd

    for name, v in (("seconds_fixed", seconds_fixed), ("seconds_training_per_seed", seconds_training_per_seed),
                    ("seconds_per_response", seconds_per_response)):
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be finite and >= 0, got {v}")
    if isinstance(checkpoints_per_seed, bool) or not isinstance(checkpoints_per_seed, int) or checkpoints_per_seed < 1:
        raise ValueError(f"checkpoints_per_seed must be a positive integer, got {checkpoints_per_seed!r}")
    if isinstance(checkpoints_fixed, bool) or not isinstance(checkpoints_fixed, int) or checkpoints_fixed < 0:
        raise ValueError(f"checkpoints_fixed must be a non-negative integer, got {checkpoints_fixed!r}")
    rows = []
    for n_seeds in seeds_grid:
        for n_test in prompts_grid:
            for m in samples_grid:
                sd = projected_sd(sd_train, sd_eval, n_prompts=n_prompts, new_n_prompts=int(n_test), samples=samples,
                                  new_samples=int(m))
                judged = (n_seeds * checkpoints_per_seed + checkpoints_fixed) * n_test * m
                seconds = seconds_fixed + n_seeds * seconds_training_per_seed + judged * seconds_per_response
                rows.append({"n_seeds": int(n_seeds), "n_test_prompts": int(n_test), "eval_samples": int(m),
                             "minutes": seconds / 60, "sd_between": sd,
                             "half_width": half_width(sd, int(n_seeds), confidence),
                             "mde": mde(sd, int(n_seeds), alpha=alpha, power=power, n_tests=n_tests)})
    return pd.DataFrame(rows)


def t_test_vs(values, null: float) -> float:
    """Two-sided p-value of the one-sample t-test of ``values`` (per seed) against ``null``; NaN for fewer
    than 3 values or zero spread (the cases :func:`tpo_core.study.evaluation.t_interval` gives no interval for)."""
    v = np.asarray(values, dtype=float).ravel()
    if v.size < 3 or not np.all(np.isfinite(v)) or np.ptp(v) == 0:
        return float("nan")
    return float(stats.ttest_1samp(v, null).pvalue)


def holm(pvalues, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down procedure over the cells (statsmodels ``multipletests``): ``(reject, p_adjusted)``.
    NaN p-values (cells without an interval) are never rejected and do not count as tests."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=float).ravel()
    reject, adjusted = np.zeros(p.size, dtype=bool), np.full(p.size, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        r, a, _, _ = multipletests(p[ok], alpha=alpha, method="holm")
        reject[ok], adjusted[ok] = r, a
    return reject, adjusted


def tie_rate(gold_a, gold_b) -> float:
    """Share of compared response pairs with equal gold reward (ties): how often common random numbers made
    the two policies draw the same response. Shapes as :func:`tpo_core.study.evaluation.pairwise_outcomes`."""
    from tpo_core.study.evaluation import pairwise_outcomes

    a, b = (np.asarray(x, dtype=float) for x in (gold_a, gold_b))
    a, b = (x[..., None] if x.ndim == 2 else x for x in (a, b))
    if a.shape[:2] != b.shape[:2]:
        pairwise_outcomes(gold_a, gold_b)  # raises with the shapes
    return float((a[:, :, :, None] == b[:, :, None, :]).mean())


def cell_statistics(gold_a, gold_b) -> dict:
    """What a Table 1 cell needs beyond its win rate, from gold rewards of shape ``(n_seeds, n_prompts)``
    paired by seed and prompt (or ``(n_seeds, n_prompts, n_samples)``, several responses per prompt): the
    crossed variance components of the per-seed win rates (:func:`variance_split`, percentage points), the
    t-interval and t-test against 50% with the sd floored at the evaluation noise (:func:`floored_t`), the
    interval for new seeds and new prompts (:func:`crossed_interval`), the tie rate (:func:`tie_rate`), and the
    paired mean difference in r* (A − B) with its 95% t-interval across seeds (a continuous statistic, with more
    power than the win rate)."""
    from tpo_core.study.evaluation import pairwise_outcomes, t_interval

    out = pairwise_outcomes(gold_a, gold_b)
    a, b = (np.asarray(x, dtype=float) for x in (gold_a, gold_b))
    a, b = (x.mean(axis=2) if x.ndim == 3 else x for x in (a, b))  # a prompt's mean over its samples
    nan = float("nan")
    ok = out.shape[0] >= 2 and out.shape[1] >= 2
    split = variance_split(out) if ok else {"sd_between": nan, "sd_eval": nan, "sd_train": nan, "sd_prompt": nan}
    ft = floored_t(out.mean(axis=1), split["sd_eval"] if ok else 0.0)
    c_lo, c_hi = crossed_interval(out) if ok else (nan, nan)
    diff = (np.atleast_2d(a) - np.atleast_2d(b)).mean(axis=1)
    d_mean, d_lo, d_hi = t_interval(diff)
    return {"sd_between": 100 * split["sd_between"], "sd_eval": 100 * split["sd_eval"],
            "sd_train": 100 * split["sd_train"], "sd_prompt": 100 * split["sd_prompt"],
            "sd_used": 100 * ft["sd"], "ci_floored": ft["floored"], "ci_low": 100 * ft["ci_low"],
            "ci_high": 100 * ft["ci_high"], "p_value": ft["p_value"], "crossed_low": 100 * c_lo,
            "crossed_high": 100 * c_hi, "tie_rate": tie_rate(gold_a, gold_b),
            "gold_diff_mean": d_mean, "gold_diff_low": d_lo, "gold_diff_high": d_hi}


def add_holm(table, *, alpha: float = 0.05, power: float = 0.8):
    """Holm-corrected verdicts and the MDE of every cell of ``table`` (a frame with ``win_rate_mean``,
    ``p_value``, ``sd_between`` or the floored ``sd_used``, ``n_seeds``, optionally ``method``), the family being
    all its rows. Adds ``p_holm``, ``verdict`` ("TPO wins" / "TPO loses", or the method's name for another
    method / "no detectable difference" / "no test": fewer than 3 seeds or no spread) and
    ``mde`` (percentage points from 50%, at level alpha / number of cells; NaN for fewer than 3 seeds or zero
    spread, where the sd estimate means nothing). Returns a new frame."""
    t = table.copy()
    reject, adjusted = holm(t["p_value"].to_numpy(), alpha)
    t["p_holm"] = adjusted
    who = [("TPO" if m == "tpo" else m) for m in t["method"]] if "method" in t else ["TPO"] * len(t)
    t["verdict"] = ["no test" if not np.isfinite(p) else
                    (f"{m} wins" if w > 50 else f"{m} loses") if r else "no detectable difference"
                    for p, r, w, m in zip(t["p_value"], reject, t["win_rate_mean"], who)]
    sds = t["sd_used"] if "sd_used" in t else t["sd_between"]  # the floored sd where the cell has one
    t["mde"] = [mde(sd, int(n), alpha=alpha, power=power, n_tests=len(t)) if n >= 3 and sd > 0 else float("nan")
                for sd, n in zip(sds, t["n_seeds"])]  # as t_interval: no estimate from < 3 seeds or no spread
    return t
