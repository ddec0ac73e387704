"""Empirical TPO (paper §5, Alg. 3): the per-prompt steps of one online iteration.

For each prompt the selector picks an arm. ``null`` keeps the ``n_candidates`` online responses. A
source arm re-ranks a pool of extra on-policy samples with its reward and its top ``k`` replace the
first ``k`` online responses (the authors' ``replace_num = 4``, responses 0..3). The simulated
human scores the candidates; best vs worst is the preference pair, and the arm's *win* is 1 if the
best candidate is a transferred one (paper-spec §4.3 (5): a best-of-group proxy of
P(π̃ ≻ π_OL), 1/2 in expectation when both groups come from the same policy).
"""

from __future__ import annotations

import numpy as np

from tpo_core.sources import best_of_n

__all__ = ["build_candidates", "transfer_win"]


def build_candidates(online: list[str], pool: list[str] | None, pool_scores, k: int
                     ) -> tuple[list[str], np.ndarray]:
    """Candidate responses of one prompt and which of them came from the transfer policy.

    ``online``: the on-policy responses (length ``n_candidates``); ``pool``/``pool_scores``: the
    Best-of-N pool and its source scores, or ``None`` for the null arm. Returns the candidates
    (the ``k`` best pool responses, best first, then ``online[k:]``) and a boolean mask.
    """
    online = list(online)
    if len(online) < 2:
        raise ValueError(f"need at least 2 online responses, got {len(online)}")
    if pool is None:
        return online, np.zeros(len(online), dtype=bool)
    scores = np.asarray(pool_scores, dtype=float)
    if scores.shape != (len(pool),):
        raise ValueError(f"pool_scores must have one score per pool response ({len(pool)}), "
                         f"got shape {scores.shape}")
    if not 1 <= k < len(online):
        raise ValueError(f"k must lie in [1, {len(online) - 1}] so that online responses remain, got {k}")
    top = best_of_n(scores[None, :], k)[0]
    candidates = [pool[i] for i in top] + online[k:]
    return candidates, np.arange(len(candidates)) < k


def transfer_win(gold_scores, from_source) -> float:
    """1.0 if the candidate the human likes best came from the transfer policy, else 0.0.

    Ties for the best go to the first candidate (as ``argmax`` in the authors' code).
    """
    gold = np.asarray(gold_scores, dtype=float)
    mask = np.asarray(from_source, dtype=bool)
    if gold.shape != mask.shape or gold.ndim != 1 or gold.size == 0:
        raise ValueError(f"gold_scores and from_source must be 1-D and equal-length, got "
                         f"{gold.shape} and {mask.shape}")
    return float(mask[int(np.argmax(gold))])
