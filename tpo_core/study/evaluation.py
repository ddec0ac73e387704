"""Win-rate evaluation with honest statistics (the paper's Table 1 protocol, made explicit).

Protocol (our reading of paper §6; the authors released no evaluation script):
one sampled response per held-out prompt per policy, both judged by the gold reward r*; policy A
*wins* a prompt if its response scores higher, a tie counts 1/2. Runs are paired by seed (TPO seed i
against baseline seed i). The paper reports mean ± 95% CI over 3 seeds; here every estimate comes
with three views of its uncertainty:

* a t-interval across seeds (`t_interval`), the paper's "± 95% CI";
* a stratified bootstrap (`bootstrap_ci`): prompts are resampled within each seed (the strata, as
  rliable resamples runs within tasks), and optionally the seeds themselves;
* the probability of improvement (`probability_of_improvement`, rliable's P(X > Y)): the chance that
  a random run of A has a higher mean gold reward than a random run of B (Mann-Whitney U / nm).

Outcome arrays have shape (n_seeds, n_prompts) with entries in {0, 1/2, 1}.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["MIN_SEEDS_FOR_INTERVAL", "pairwise_outcomes", "t_interval", "bootstrap_ci", "probability_of_improvement",
           "summarize_win_rate", "side_of", "as_frame", "normal_band", "ratio_of_means_ci", "PAPER_TABLE1"]

#: The paper's Table 1 (DPO; win rate % of empirical TPO, mean and 95% CI half-width over 3 seeds;
#: paper §6.1), for display next to ours. Baselines named as in :data:`tpo_core.tpo.empirical.METHODS`:
#: the paper's worst source is ROUGE-Lsum, its best T5-Large.
PAPER_TABLE1 = pd.DataFrame(
    [("no-transfer", 1, 52.1, 1.2), ("no-transfer", 2, 53.3, 1.6), ("no-transfer", 3, 54.0, 1.2),
     ("exploit-worst", 1, 53.1, 1.1), ("exploit-worst", 2, 54.5, 1.3), ("exploit-worst", 3, 53.3, 1.5),
     ("exploit-best", 1, 49.5, 0.9), ("exploit-best", 2, 49.1, 0.4), ("exploit-best", 3, 50.6, 0.3)],
    columns=["baseline", "iteration", "paper_win_rate", "paper_ci_halfwidth"])


def _as_gold(x, name: str) -> np.ndarray:
    """Gold rewards as ``(n_seeds, n_prompts, n_samples)``: from (n_prompts,), (n_seeds, n_prompts) or
    (n_seeds, n_prompts, n_samples) (several sampled responses per prompt)."""
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3 or x.size == 0:
        raise ValueError(f"{name} must be a non-empty array of shape (n_seeds, n_prompts[, n_samples]), "
                         f"got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _as_2d(x, name: str) -> np.ndarray:
    """Gold rewards per seed and prompt, ``(n_seeds, n_prompts)``: the mean over a prompt's samples."""
    return _as_gold(x, name).mean(axis=2)


def pairwise_outcomes(gold_a, gold_b) -> np.ndarray:
    """1 where A's response has the higher gold reward, 0 where B's does, 1/2 on ties; shape (n_seeds, n_prompts).

    ``gold_a`` and ``gold_b`` have shape (n_prompts,), (n_seeds, n_prompts) or (n_seeds, n_prompts,
    n_samples) and are paired by seed and prompt. With several sampled responses per prompt, every response
    of A is compared with every response of B and the prompt's outcome is the mean over the
    ``n_samples_a × n_samples_b`` pairs (ties ½).
    """
    a, b = _as_gold(gold_a, "gold_a"), _as_gold(gold_b, "gold_b")
    if a.shape[:2] != b.shape[:2]:
        raise ValueError(f"gold_a and gold_b must be paired: shapes {a.shape[:2]} and {b.shape[:2]} differ")
    return (0.5 * (1.0 + np.sign(a[:, :, :, None] - b[:, :, None, :]))).mean(axis=(2, 3))


#: Fewest seeds for which :func:`t_interval` reports an interval. With 2 the t-interval rests on a single
#: degree of freedom (its 95% half-width is 12.7 standard errors) and its variance estimate is too unstable
#: to mean anything; below this the interval is NaN: "no interval", not a certain one.
MIN_SEEDS_FOR_INTERVAL = 3


def t_interval(values, confidence: float = 0.95, bounds: tuple[float, float] | None = None
               ) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval across seeds.

    No interval, ``(mean, nan, nan)``, for fewer than :data:`MIN_SEEDS_FOR_INTERVAL` values or zero spread:
    identical seeds say nothing about seed-to-seed variation, so they must not read as certainty. ``bounds``
    (e.g. ``(0, 1)`` for a win rate) clips the interval to the possible range.
    """
    _check_confidence(confidence)
    v = np.asarray(values, dtype=float).ravel()
    if v.size == 0 or not np.all(np.isfinite(v)):
        raise ValueError("t_interval needs at least one finite value")
    mean = float(v.mean())
    sem = stats.sem(v) if v.size > 1 else 0.0
    if v.size < MIN_SEEDS_FOR_INTERVAL or sem == 0:
        return mean, float("nan"), float("nan")
    lo, hi = stats.t.interval(confidence, v.size - 1, loc=mean, scale=sem)
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return mean, float(lo), float(hi)


def bootstrap_ci(outcomes, rng: np.random.Generator, *, n_boot: int = 2000,
                 confidence: float = 0.95, resample_seeds: bool = True) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean win rate.

    Each replicate resamples prompts with replacement *within* each seed (stratified by seed), and,
    with ``resample_seeds``, also draws the seeds with replacement (a two-level bootstrap that
    accounts for seed-to-seed variation as well as prompt sampling).
    """
    _check_confidence(confidence)
    if not isinstance(rng, np.random.Generator):
        raise ValueError("rng must be a numpy.random.Generator")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    x = _as_2d(outcomes, "outcomes")
    n_seeds, n_prompts = x.shape
    replicates = np.empty(n_boot)
    chunk = max(1, 2_000_000 // (n_seeds * n_prompts))  # bound memory for large evaluations
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        seed_idx = (rng.integers(n_seeds, size=(m, n_seeds)) if resample_seeds
                    else np.broadcast_to(np.arange(n_seeds), (m, n_seeds)))
        prompt_idx = rng.integers(n_prompts, size=(m, n_seeds, n_prompts))
        replicates[start:start + m] = x[seed_idx[:, :, None], prompt_idx].mean(axis=(1, 2))
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(replicates, [alpha, 1 - alpha])
    return float(lo), float(hi)


def probability_of_improvement(scores_a, scores_b) -> float:
    """P(X > Y) + P(X = Y)/2 for X a random run of A and Y one of B (rliable; = Mann-Whitney U / nm).

    ``scores_a`` and ``scores_b`` are per-run scores, e.g. each seed's mean gold reward on the test
    prompts; runs need not be paired.
    """
    a = np.asarray(scores_a, dtype=float).ravel()
    b = np.asarray(scores_b, dtype=float).ravel()
    if a.size == 0 or b.size == 0 or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("probability_of_improvement needs non-empty finite scores for both methods")
    return float((0.5 * (1.0 + np.sign(a[:, None] - b[None, :]))).mean())


def summarize_win_rate(gold_a, gold_b, rng: np.random.Generator, *, confidence: float = 0.95,
                       n_boot: int = 2000) -> dict:
    """Everything Table 1 reports for A against B, win rates in percent.

    ``gold_a`` and ``gold_b``: gold rewards of shape (n_seeds, n_prompts) or (n_seeds, n_prompts, n_samples),
    paired by seed and prompt (:func:`pairwise_outcomes`).
    """
    out = pairwise_outcomes(gold_a, gold_b)
    a, b = _as_2d(gold_a, "gold_a"), _as_2d(gold_b, "gold_b")
    per_seed = out.mean(axis=1)
    mean, lo, hi = t_interval(per_seed, confidence, bounds=(0.0, 1.0))
    b_lo, b_hi = bootstrap_ci(out, rng, n_boot=n_boot, confidence=confidence)
    return {
        "win_rate_mean": 100 * mean, "ci_low": 100 * lo, "ci_high": 100 * hi,
        "boot_low": 100 * b_lo, "boot_high": 100 * b_hi, "n_seeds": int(out.shape[0]),
        "n_prompts": int(out.shape[1]),
        "p_improve": probability_of_improvement(a.mean(axis=1), b.mean(axis=1)),
        "per_seed": [100 * float(v) for v in per_seed],
    }


def side_of(ci_low: float, ci_high: float, value: float = 50.0) -> str:
    """Where an interval lies relative to ``value`` (50% for a win rate): ``"above"`` when ``ci_low > value``,
    ``"below"`` when ``ci_high < value``, ``"contains"`` otherwise (no detectable difference), and
    ``"no interval"`` when a bound is NaN (too few seeds, or zero spread: see :func:`t_interval`)."""
    if np.isnan(ci_low) or np.isnan(ci_high):
        return "no interval"
    return "above" if ci_low > value else "below" if ci_high < value else "contains"


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")


def as_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows from `summarize_win_rate` (plus identifying keys) as a DataFrame without the per-seed lists."""
    return pd.DataFrame([{k: v for k, v in r.items() if k != "per_seed"} for r in rows])


def normal_band(x, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """Mean over runs (axis 0) of ``x`` ``(n_runs, ...)`` and the half-width ``z · sd / sqrt(n)`` of a normal
    interval (95% for ``z = 1.96``); zero half-width for a single run."""
    x = np.asarray(x, dtype=float)
    half = z * x.std(axis=0, ddof=1) / np.sqrt(len(x)) if len(x) > 1 else np.zeros_like(x[0])
    return x.mean(axis=0), half


def ratio_of_means_ci(a, b, rng: np.random.Generator, *, n_boot: int = 2000, confidence: float = 0.95
                      ) -> tuple[float, float, float]:
    """``mean(a) / mean(b)`` and its paired percentile-bootstrap interval over runs (``a[i]``, ``b[i]``:
    the same seed), by ``scipy.stats.bootstrap``. ``a``, ``b``: ``(n_runs,)``. Returns (ratio, low, high)."""
    _check_confidence(confidence)
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"a and b must be paired 1-D arrays of at least 2 runs, got {a.shape} and {b.shape}")
    res = stats.bootstrap((a, b), lambda x, y, axis=-1: x.mean(axis=axis) / y.mean(axis=axis), paired=True,
                          vectorized=True, n_resamples=n_boot, confidence_level=confidence, method="percentile",
                          rng=rng)
    return float(a.mean() / b.mean()), float(res.confidence_interval.low), float(res.confidence_interval.high)
