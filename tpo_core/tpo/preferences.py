"""The preference step of empirical TPO (paper §5, Alg. 3): which responses a source transfers and which pair the
human labels.

* :func:`best_of_n`: the Best-of-N transfer policy ``π*_{r_w}``: the ``k`` best of ``N`` pool responses under a
  source reward (the authors: Best-of-32, top 4).
* :func:`label_best_worst`: the authors' deterministic labels: the human's best candidate is chosen, its worst
  rejected, fully tied groups dropped.
* :func:`label_bradley_terry` (with :func:`bt_probability`): the stochastic mode of the authors' later code,
  ``y ~ Bernoulli(sigmoid(scale * (r*(a) - r*(b))))``.
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy.special import expit

__all__ = ["best_of_n", "label_best_worst", "label_bradley_terry", "bt_probability"]


def best_of_n(scores, k: int) -> np.ndarray:
    """Indices of the ``k`` best of ``N`` candidates per prompt under a source: the Best-of-N transfer policy.

    ``scores``: array ``(n_prompts, N)`` (a 1-D array is one prompt). Returns int64 ``(n_prompts, k)``, best
    first; ties are broken stably, the lower candidate index first. ``-inf`` ranks last; NaN is rejected.
    Raises ``ValueError`` unless ``1 <= k <= N`` (or for NaN scores / more than 2 dimensions).
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:
        s = s[None, :]
    if s.ndim != 2:
        raise ValueError(f"scores must be 2-D (n_prompts, N), got shape {s.shape}")
    n = s.shape[1]
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= n:
        raise ValueError(f"k must be an integer in [1, N={n}], got {k!r}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return np.argsort(-s, axis=1, kind="stable")[:, :int(k)].astype(np.int64)


def label_best_worst(gold_scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The paper's deterministic labels: per prompt, the gold-best candidate is chosen, the gold-worst rejected.

    ``gold_scores``: ``(n_prompts, n_candidates)``, ``n_candidates >= 2``. Returns ``(chosen_idx,
    rejected_idx, keep_mask)``: int64 arg-max and arg-min per row (first occurrence on ties) and a bool mask
    that is False where the best and worst scores are equal (all candidates tied: no preference, the pair is
    dropped, as in the authors' code). Raises ``ValueError`` for a wrong shape or NaN.
    """
    g = np.asarray(gold_scores, dtype=np.float64)
    if g.ndim != 2 or g.shape[1] < 2:
        raise ValueError(f"gold_scores must have shape (n_prompts, n_candidates >= 2), got {g.shape}")
    if np.isnan(g).any():
        raise ValueError("gold_scores contain NaN")
    chosen = np.argmax(g, axis=1).astype(np.int64)
    rejected = np.argmin(g, axis=1).astype(np.int64)
    keep = g.max(axis=1) > g.min(axis=1)
    return chosen, rejected, keep


def _check_scale(scale) -> float:
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not (0 <= scale < np.inf):
        raise ValueError(f"scale must be a finite number >= 0, got {scale!r}")
    return float(scale)


def bt_probability(gold_a, gold_b, scale: float = 1.0) -> np.ndarray:
    """Bradley-Terry probability that ``a`` is preferred: ``sigmoid(scale * (gold_a - gold_b))``."""
    a, b = np.asarray(gold_a, dtype=np.float64), np.asarray(gold_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"gold_a and gold_b must have the same shape, got {a.shape} and {b.shape}")
    d = a - b
    if np.isnan(d).any():
        raise ValueError("gold score differences contain NaN")
    return expit(_check_scale(scale) * d)


def label_bradley_terry(gold_a, gold_b, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """Stochastic labels: ``y ~ Bernoulli(sigmoid(scale * (gold_a - gold_b)))``, True = ``a`` preferred.

    One ``rng.random(shape)`` draw per pair; the same generator state gives the same labels. ``scale`` is the
    authors' ``reward_scale`` (0 = coin flips; large = the deterministic better-of-two). Raises
    ``TypeError`` unless ``rng`` is a ``numpy.random.Generator``; ``ValueError`` for unequal shapes, NaN or a
    negative / non-finite scale.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    p = bt_probability(gold_a, gold_b, scale)
    return rng.random(p.shape) < p
