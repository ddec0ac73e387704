"""Empirical TPO (paper §5, Alg. 3): the per-prompt steps of one online iteration.

For each prompt the selector picks an arm. The null arm (the authors' ``null``, named
:data:`~tpo_core.presets.NULL_ARM` ``"online"`` here) keeps the ``n_candidates`` online responses. A
source arm re-ranks a pool of extra on-policy samples with its reward and its top ``k`` replace the
first ``k`` online responses (the authors' ``replace_num = 4``, responses 0..3). The simulated
human scores the candidates; best vs worst is the preference pair, and the arm's *win* is 1 if the
best candidate is a transferred one (the authors' code: a best-of-group proxy of
P(π̃ ≻ π_OL), 1/2 in expectation when both groups come from the same policy).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from tpo_core.data import sample_prompts
from tpo_core.oracle import label_best_worst
from tpo_core.presets import NULL_ARM
from tpo_core.provenance import write_atomic
from tpo_core.selection import TransferSelector
from tpo_core.sources import best_of_n

__all__ = ["METHODS", "build_candidates", "transfer_win", "collect_iteration", "make_selector", "run_method"]

#: The methods of Table 1: empirical TPO and its three baselines (paper §6.1).
METHODS = ("tpo", "no-transfer", "exploit-worst", "exploit-best")


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


def collect_iteration(policy, documents, references, *, selector, sources: dict, gold,
                      n_candidates: int, pool_size: int, top_k: int, seed: int,
                      temperature: float = 1.0, max_new_tokens: int | None = None,
                      progress: bool = True) -> tuple[list[dict], pd.DataFrame]:
    """Generate, select, transfer and label one iteration's prompts (Alg. 3, steps 1-5).

    Prompts are processed in chunks of ``selector.update_every``: arms are selected for the whole chunk
    (the selector's statistics are a frozen snapshot within it anyway), then each source arm samples
    its Best-of-N pool and scores it -- *only* the prompts that chose it (the paper's protocol: each
    arm scores only what it uses) -- the human scores the candidates, and the selector is updated with
    the wins. This is exactly the authors' batched bandit, with vectorised model calls.

    ``policy.sample(docs, n, temperature=, max_new_tokens=, generator=)`` draws responses;
    ``sources[arm].score(prompts, responses, references)`` and ``gold.score(...)`` score them.
    Returns the preference pairs ``{prompt, chosen, rejected}`` (tied best/worst dropped) and one
    record per prompt: ``prompt_idx, arm, win, gold_best, gold_worst, kept``.
    """
    documents, references = _check_inputs(documents, references, selector, sources)
    gen = torch.Generator().manual_seed(int(seed))
    sample = dict(temperature=temperature, max_new_tokens=max_new_tokens, generator=gen)
    online = policy.sample(documents, n_candidates, **sample)
    pairs, records = [], []
    chunk = max(1, int(getattr(selector, "update_every", 1)))
    bar = tqdm(total=len(documents), desc="prompts", disable=not progress, leave=False)
    for start in range(0, len(documents), chunk):
        idx = list(range(start, min(start + chunk, len(documents))))
        arms = [selector.select() for _ in idx]
        cands, masks = {}, {}
        for arm in dict.fromkeys(arms):  # each arm in order of first use
            mine = [i for i, a in zip(idx, arms) if a == arm]
            if arm == selector.null_arm:
                for i in mine:
                    cands[i], masks[i] = build_candidates(online[i], None, None, top_k)
                continue
            pools = policy.sample([documents[i] for i in mine], pool_size, **sample)
            flat = [r for pool in pools for r in pool]
            rep = lambda xs: [xs[i] for i in mine for _ in range(pool_size)]  # noqa: E731
            scores = np.asarray(_score(sources[arm], rep(documents), flat, rep(references), progress))
            for j, i in enumerate(mine):
                cands[i], masks[i] = build_candidates(online[i], pools[j],
                                                      scores[j * pool_size:(j + 1) * pool_size], top_k)
        flat = [c for i in idx for c in cands[i]]
        rep = lambda xs: [xs[i] for i in idx for _ in range(n_candidates)]  # noqa: E731
        g = np.asarray(_score(gold, rep(documents), flat, rep(references), progress))
        g = g.reshape(len(idx), n_candidates)
        chosen, rejected, keep = label_best_worst(g)
        for row, (i, arm) in enumerate(zip(idx, arms)):
            win = transfer_win(g[row], masks[i])
            selector.update(arm, win)
            if keep[row]:
                pairs.append({"prompt": documents[i], "chosen": cands[i][chosen[row]],
                              "rejected": cands[i][rejected[row]]})
            records.append({"prompt_idx": i, "arm": arm, "win": win, "gold_best": g[row].max(),
                            "gold_worst": g[row].min(), "kept": bool(keep[row])})
        bar.update(len(idx))
    bar.close()
    return pairs, pd.DataFrame(records)


def make_selector(method: str, arms, preset, *, worst: str | None = None, best: str | None = None,
                  policy: str = "paper-ucb", seed: int = 0) -> TransferSelector:
    """The arm selector of ``method``: the bandit for ``tpo``, a fixed arm for the baselines."""
    arms = list(arms) + [NULL_ARM]
    fixed = {"no-transfer": NULL_ARM, "exploit-worst": worst, "exploit-best": best}
    if method == "tpo":
        return TransferSelector(arms, policy=policy, bonus=preset.bonus, null_value=preset.null_value,
                                null_arm=NULL_ARM, update_every=preset.update_every, warmup=preset.warmup,
                                seed=seed)
    if method not in fixed:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    if fixed[method] not in arms:
        raise ValueError(f"{method} needs a source arm among {arms[:-1]}, got {fixed[method]!r}")
    return TransferSelector(arms, policy=f"fixed:{fixed[method]}", null_arm=NULL_ARM,
                            update_every=preset.update_every, seed=seed)


def write_csv(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` to ``path`` atomically (a temporary file renamed into place), creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_text(df.to_csv(index=False), path)
    return path


def _write_text(text: str, path: Path) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file beside it, renamed into place).

    In a sharded run (:mod:`tpo_core.distributed`) only the main process writes, then all wait."""
    from tpo_core.distributed import on_main

    on_main(write_atomic, path, text)


def run_method(method: str, policy, trainer, *, preset, prompts_df, sources: dict, gold, seed: int,
               out_dir, worst: str | None = None, best: str | None = None,
               selector_policy: str = "paper-ucb", carry_stats: bool = False,
               progress: bool = True) -> dict[str, pd.DataFrame]:
    """``preset.n_iterations`` iterations of one method for one seed (Alg. 3), resumable.

    Iteration k samples ``preset.prompts_per_iteration`` prompts with ``default_rng([seed, k])``,
    collects and labels them (:func:`collect_iteration`; in a sharded run, :mod:`tpo_core.distributed`'s
    ``collect_iteration_sharded``, with the files written once by the main process), and trains with ``trainer``
    (a :class:`tpo_core.trainer.PreferenceTrainer` wrapping ``policy.model``), which checkpoints to
    ``out_dir/iter_k``. The per-prompt records are written (atomically) before training; an iteration
    whose checkpoint and records exist is loaded, not redone, and the selector's state after it
    (``selector_state_iter_k.json``: statistics and random-number state) is restored, so a resumed run
    continues exactly as an uninterrupted one. The selector's statistics restart every iteration (the
    authors) unless ``carry_stats``.
    Returns ``arms`` (method, seed, iteration, arm, pulls, wins), ``records`` and ``logs`` frames.
    """
    from tpo_core.distributed import current

    sharding = current()  # None: one process, the single random stream of collect_iteration
    collect = collect_iteration if sharding is None else sharding.collect_iteration
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    selector = make_selector(method, sources, preset, worst=worst, best=best, policy=selector_policy,
                             seed=seed)
    state_path = out_dir / "selector_state.json"
    all_records, all_logs = [], []
    for k in range(1, preset.n_iterations + 1):
        records_path, ckpt = out_dir / f"records_iter_{k}.csv", out_dir / f"iter_{k}"
        if ckpt.is_dir() and records_path.exists():
            trainer.load_weights(ckpt)
            records = pd.read_csv(records_path, dtype={"arm": str})
            logs = pd.read_csv(ckpt / "logs.csv")
            state_k = out_dir / f"selector_state_iter_{k}.json"
            if state_k.exists():  # statistics (used if carried) and random state, as after iteration k
                selector.load_state_dict(json.loads(state_k.read_text()))
        else:
            if not carry_stats:
                selector.reset()
            prompts = sample_prompts(prompts_df, preset.prompts_per_iteration, np.random.default_rng([seed, k]))
            docs = [preset.prompt_prefix + d for d in prompts.document]
            pairs, records = collect(
                policy, docs, list(prompts.summary), selector=selector, sources=sources, gold=gold,
                n_candidates=preset.n_candidates, pool_size=preset.pool_size, top_k=preset.top_k,
                seed=1000 * seed + k, temperature=preset.temperature, max_new_tokens=preset.max_new_tokens,
                progress=progress)
            records.insert(0, "iteration", k)
            write_csv(records, records_path)
            state = json.dumps(selector.state_dict())
            _write_text(state, out_dir / f"selector_state_iter_{k}.json")
            _write_text(state, state_path)
            logs = trainer.train_iteration(pairs, out_dir, k)
        all_records.append(records)
        all_logs.append(logs)
    records = pd.concat(all_records, ignore_index=True)
    arms = (records.groupby(["iteration", "arm"]).agg(pulls=("win", "size"), wins=("win", "sum"))
            .reset_index())
    arms.insert(0, "seed", seed)
    arms.insert(0, "method", method)
    return {"arms": arms, "records": records, "logs": pd.concat(all_logs, ignore_index=True)}
