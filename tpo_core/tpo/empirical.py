"""Empirical TPO (paper §5, Alg. 3): the per-prompt steps of one online iteration.

For each prompt the selector picks an arm. The null arm (the authors' ``null``, named
:data:`~tpo_core.tpo.selection.NULL_ARM` ``"online"`` here) keeps the ``n_candidates`` online responses. A
source arm re-ranks a pool of extra on-policy samples with its reward and its top ``k`` replace the
first ``k`` online responses (the authors' ``replace_num = 4``, responses 0..3). The simulated
human scores the candidates; best vs worst is the preference pair, and the arm's *win* is 1 if the
best candidate is a transferred one (the authors' code: a best-of-group proxy of
P(π̃ ≻ π_OL), 1/2 in expectation when both groups come from the same policy).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tpo_core.tpo.preferences import best_of_n, label_best_worst
from tpo_core.plumbing.progress import Progress
from tpo_core.tpo.selection import NULL_ARM, ORACLE_ARM, TransferSelector
from tpo_core.plumbing.sharding import Sharding, deal, gather, resolve
from tpo_core.plumbing.streams import ONLINE, POOL, prompt_streams

__all__ = ["METHODS", "CONTROL", "OnlineBatch", "build_candidates", "transfer_win", "score_online",
           "collect_iteration", "make_selector"]

#: The methods of Table 1: empirical TPO and its three baselines (paper §6.1).
METHODS = ("tpo", "no-transfer", "exploit-worst", "exploit-best")

#: The positive control beyond the paper: always transfer from Best-of-N by the human r* itself
#: (:data:`~tpo_core.tpo.selection.ORACLE_ARM`), the largest effect transfer can have with these pools.
CONTROL = "exploit-oracle"


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


def _each(xs, indices, n: int) -> list:
    """``xs[i]`` repeated ``n`` times for each ``i`` of ``indices``, in order (one entry per response)."""
    return [xs[i] for i in indices for _ in range(n)]


def _sample_online(policy, documents, indices, n_candidates: int, seed: int, sample: dict) -> dict:
    """The online responses of the prompts ``indices`` in one sampling call, each prompt on its own ``ONLINE``
    stream of ``seed``: ``{index: n_candidates responses}``."""
    indices = list(indices)
    return dict(zip(indices, policy.sample([documents[i] for i in indices], n_candidates, **sample,
                                           generator=prompt_streams(seed, indices, ONLINE))))


@dataclass(frozen=True)
class OnlineBatch:
    """One iteration's online responses with the human's scores of every one of them, by prompt index:
    ``responses[i]``: ``n_candidates`` strings; ``scores[i]``: their ``n_candidates`` gold rewards."""

    responses: dict
    scores: dict

    def to_json(self) -> dict:
        return {"responses": {str(i): r for i, r in self.responses.items()},
                "scores": {str(i): [float(v) for v in g] for i, g in self.scores.items()}}

    @classmethod
    def from_json(cls, obj: dict) -> "OnlineBatch":
        return cls({int(i): list(r) for i, r in obj["responses"].items()},
                   {int(i): np.asarray(g, dtype=float) for i, g in obj["scores"].items()})


def score_online(policy, documents, references, *, gold, n_candidates: int, seed: int,
                 temperature: float = 1.0, max_new_tokens: int | None = None, progress: bool = True,
                 sharding: Sharding | None = None) -> OnlineBatch:
    """Sample the online responses of ``documents`` (the per-prompt ``ONLINE`` streams of ``seed``) and have
    the human score all of them: unsharded in one sampling and one scoring call, sharded per group
    (:func:`tpo_core.plumbing.sharding.deal`) and gathered, so the result depends on the batching, never on a method.

    Iteration 1 of every method samples π_0 on the same prompts with the same streams, so this batch is
    the same for all of them; computed once per seed, it is passed to :func:`collect_iteration`, which then
    asks the human only about the transferred candidates. ``sharding``: as :func:`collect_iteration`'s."""
    documents, references = list(documents), list(references)
    sharding = resolve(sharding)
    local = []
    sample = dict(temperature=temperature, max_new_tokens=max_new_tokens)
    for group in deal(sharding, range(len(documents))):
        resp = _sample_online(policy, documents, group, n_candidates, int(seed), sample)
        g = np.asarray(_score(gold, _each(documents, group, n_candidates), [r for i in group for r in resp[i]],
                              _each(references, group, n_candidates),
                              progress and (sharding is None or sharding.state.is_main_process)))
        local += [(i, resp[i], g[row * n_candidates:(row + 1) * n_candidates].tolist()) for row, i in enumerate(group)]
    rows = sorted(gather(sharding, local), key=lambda t: t[0])
    return OnlineBatch({i: list(r) for i, r, _ in rows}, {i: np.asarray(g, dtype=float) for i, _, g in rows})


def _score(scorer, prompts, responses, references, progress: bool):
    """``scorer.score(...)``, with its own progress bar switched off unless ``progress``."""
    if "progress" in inspect.signature(scorer.score).parameters:
        return scorer.score(prompts, responses, references, progress=progress)
    return scorer.score(prompts, responses, references)


def _check_inputs(documents, references, selector, sources) -> tuple[list, list]:
    """``documents`` and ``references`` as lists, checked against each other and the selector's arms."""
    documents, references = list(documents), list(references)
    if not documents or len(documents) != len(references):
        raise ValueError("documents and references must be non-empty and of equal length")
    unknown = set(selector.arms) - set(sources) - {selector.null_arm}
    if unknown:
        raise ValueError(f"selector arms {sorted(unknown)} have no source")
    return documents, references


def _collect_group(policy, documents, references, group, arms, online, *, selector, sources, gold, n_candidates,
                   pool_size, top_k, seed, sample, progress) -> list[dict]:
    """Alg. 3 steps 2-4 for the prompts ``group`` (their ``arms`` already chosen; ``online``: their online
    responses, or ``None`` to sample them here), in one set of model calls: one outcome per prompt."""
    scored = None
    if isinstance(online, OnlineBatch):  # shared, already scored online responses
        online, scored = online.responses, online.scores
    elif online is None:
        online = _sample_online(policy, documents, group, n_candidates, seed, sample)
    cands, masks = {}, {}
    for arm in dict.fromkeys(arms):  # each arm in order of first use
        mine = [i for i, a in zip(group, arms) if a == arm]
        if arm == selector.null_arm:
            for i in mine:
                cands[i], masks[i] = build_candidates(online[i], None, None, top_k)
            continue
        pools = policy.sample([documents[i] for i in mine], pool_size, **sample,
                              generator=prompt_streams(seed, mine, POOL + selector.arms.index(arm)))
        scores = np.asarray(_score(sources[arm], _each(documents, mine, pool_size), [r for p in pools for r in p],
                                   _each(references, mine, pool_size), progress))
        for j, i in enumerate(mine):
            cands[i], masks[i] = build_candidates(online[i], pools[j], scores[j * pool_size:(j + 1) * pool_size],
                                                  top_k)
    if scored is None:  # the human scores every candidate of the group in one call
        g = np.asarray(_score(gold, _each(documents, group, n_candidates), [c for i in group for c in cands[i]],
                              _each(references, group, n_candidates), progress)).reshape(len(group), n_candidates)
    else:  # only the transferred candidates are new to the human; the online ones keep their shared scores
        new = [(row, i, j) for row, i in enumerate(group) for j in np.flatnonzero(masks[i])]
        fresh = np.asarray(_score(gold, [documents[i] for _, i, _ in new], [cands[i][j] for _, i, j in new],
                                  [references[i] for _, i, _ in new], progress)) if new else []
        g = np.array([scored[i] for i in group], dtype=float)
        for (row, _, j), v in zip(new, fresh):
            g[row, j] = v
    chosen, rejected, keep = label_best_worst(g)
    out = []
    for row, (i, arm) in enumerate(zip(group, arms)):
        pair = ({"prompt": documents[i], "chosen": cands[i][chosen[row]], "rejected": cands[i][rejected[row]]}
                if keep[row] else None)
        out.append({"prompt_idx": i, "arm": arm, "win": transfer_win(g[row], masks[i]),
                    "gold_best": float(g[row].max()), "gold_worst": float(g[row].min()),
                    "kept": bool(keep[row]), "pair": pair})
    return out


def collect_iteration(policy, documents, references, *, selector, sources: dict, gold,
                      n_candidates: int, pool_size: int, top_k: int, seed: int,
                      temperature: float = 1.0, max_new_tokens: int | None = None,
                      online: OnlineBatch | None = None, progress: bool = True,
                      sharding: Sharding | None = None) -> tuple[list[dict], pd.DataFrame]:
    """Generate, select, transfer and label one iteration's prompts (Alg. 3, steps 1-5).

    Prompts are processed in chunks of ``selector.update_every``: arms are selected for the whole chunk
    (the selector's statistics are a frozen snapshot within it anyway), then each source arm samples
    its Best-of-N pool and scores it -- *only* the prompts that chose it (the paper's protocol: each
    arm scores only what it uses) -- the human scores the candidates, and the selector is updated with
    the wins. This is exactly the authors' batched bandit, with vectorised model calls.

    Random numbers are per prompt (:func:`tpo_core.plumbing.streams.stream_generator` of ``(seed, prompt index,
    stream)``; one stream for the online responses, one per arm for its pool): common random numbers, so
    two methods that hold the same policy draw the same responses for a prompt whatever arms they pick
    elsewhere, and the number of processes changes nothing.

    **Several processes** (``sharding``, a :class:`~tpo_core.plumbing.sharding.Sharding`, given or, under
    ``accelerate launch``, the default one): every process holds the same selector and selects every prompt's arm, so all
    pick the same arms; the chunk's groups of ``group_size`` prompts are dealt round-robin, each group is
    sampled and scored in its own model calls, and the outcomes are gathered and replayed into every
    selector in prompt order: the pooled pulls and wins are the sums over processes (the authors'
    all-reduce), in the single-process order, so the statistics are identical, not merely close. Model
    calls on other batches can differ in the last float bits, so the exact reference of an ``n``-process
    run is one process given a ``Sharding`` with the same ``group_size``. Without one, a single process samples
    all online responses in one call and each chunk in one set of calls.

    ``policy.sample(docs, n, temperature=, max_new_tokens=, generator=)`` draws responses;
    ``sources[arm].score(prompts, responses, references)`` and ``gold.score(...)`` score them.
    Returns (on every process) the preference pairs ``{prompt, chosen, rejected}`` (tied best/worst
    dropped) and one record per prompt: ``prompt_idx, arm, win, gold_best, gold_worst, kept``.

    ``online``: this iteration's online responses already sampled and scored (:func:`score_online`, shared
    by every method at iteration 1); the human then scores only the transferred candidates.
    """
    documents, references = _check_inputs(documents, references, selector, sources)
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    sharding = resolve(sharding)
    main = sharding is None or sharding.state.is_main_process
    sample = dict(temperature=temperature, max_new_tokens=max_new_tokens)
    n = len(documents)
    if online is not None:
        if sorted(online.responses) != list(range(n)) or any(
                len(online.responses[i]) != n_candidates or len(online.scores[i]) != n_candidates for i in range(n)):
            raise ValueError(f"online must hold {n_candidates} scored responses for each of the {n} prompts")
    elif sharding is None:  # the online responses do not depend on the arms: one call for the iteration
        online = _sample_online(policy, documents, range(n), n_candidates, seed, sample)
    kw = dict(selector=selector, sources=sources, gold=gold, n_candidates=n_candidates, pool_size=pool_size,
              top_k=top_k, seed=int(seed), sample=sample, progress=progress and main)
    pairs, records = [], []
    chunk = max(1, int(getattr(selector, "update_every", 1)))
    bar = Progress(n, "prompts", disable=not (progress and main), unit="prompt")
    for start in range(0, n, chunk):
        idx = list(range(start, min(start + chunk, n)))
        arms = dict(zip(idx, [selector.select() for _ in idx]))  # the same on every process
        local = [o for group in deal(sharding, idx)
                 for o in _collect_group(policy, documents, references, group, [arms[i] for i in group],
                                         online, **kw)]
        outcomes = sorted(gather(sharding, local), key=lambda o: o["prompt_idx"])
        if [o["prompt_idx"] for o in outcomes] != idx:
            raise RuntimeError(f"gathered outcomes cover prompts {[o['prompt_idx'] for o in outcomes]}, "
                               f"expected {idx}: processes disagree on the chunk")
        for o in outcomes:  # pooled statistics: every process's pulls and wins, in prompt order
            if o["arm"] != arms[o["prompt_idx"]]:
                raise RuntimeError(f"prompt {o['prompt_idx']}: a process chose {o['arm']!r}, this one "
                                   f"{arms[o['prompt_idx']]!r} (selectors out of sync)")
            selector.update(o["arm"], o["win"])
            if o["pair"] is not None:
                pairs.append(o["pair"])
            records.append({k: o[k] for k in ("prompt_idx", "arm", "win", "gold_best", "gold_worst", "kept")})
        bar.update(len(idx))
    bar.close()
    return pairs, pd.DataFrame(records)


def make_selector(method: str, arms, preset, *, worst: str | None = None, best: str | None = None,
                  policy: str = "paper-ucb", seed: int = 0) -> TransferSelector:
    """The arm selector of ``method``: the bandit for ``tpo``, a fixed arm for the baselines and the control
    (whose ``arms`` must then hold :data:`~tpo_core.tpo.selection.ORACLE_ARM`)."""
    arms = list(arms) + [NULL_ARM]
    fixed = {"no-transfer": NULL_ARM, "exploit-worst": worst, "exploit-best": best, CONTROL: ORACLE_ARM}
    if method == "tpo":
        return TransferSelector(arms, policy=policy, bonus=preset.bonus, null_value=preset.null_value,
                                null_arm=NULL_ARM, update_every=preset.update_every, warmup=preset.warmup,
                                seed=seed)
    if method not in fixed:
        raise ValueError(f"unknown method {method!r}; choose one of {(*METHODS, CONTROL)}")
    if fixed[method] not in arms:
        raise ValueError(f"{method} needs a source arm among {arms[:-1]}, got {fixed[method]!r}")
    return TransferSelector(arms, policy=f"fixed:{fixed[method]}", null_arm=NULL_ARM,
                            update_every=preset.update_every, seed=seed)
