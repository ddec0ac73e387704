"""How good each imperfect source is (notebook 01; paper §6): π_0's quality against a lead baseline, each
source's per-prompt Spearman with r*, the value under r* of its Best-of-N policy and that policy's win rate
against π_0 and its scoring speed (:func:`measure_sources`, cached in ``sources.csv``, from which
:func:`tpo_core.study.runs.choose_worst_best` picks the exploit baselines' sources)."""

from __future__ import annotations

import io
import numbers
import time

import numpy as np
import pandas as pd
import torch
from scipy import stats

from tpo_core.study import evaluation
from tpo_core.world.data import lead_baseline, sample_prompts
from tpo_core.plumbing.progress import track
from tpo_core.plumbing.provenance import code_identity, sha256_json, write_csv
from tpo_core.study.report import cpu_flags
from tpo_core.tpo.preferences import best_of_n
from tpo_core.plumbing.streams import source_prompts, source_seed

from tpo_core.study.loading import Study
from tpo_core.world.sources import source_identity

__all__ = ["pi0_quality", "measure_sources"]


def pi0_quality(study: Study, *, n_docs: int | None = None, seed: int = 0) -> pd.DataFrame:
    """ROUGE-L F1 (rouge-score, stemmed) and r* of π_0 (greedy and sampled) and the lead-8 baseline.

    On the first ``n_docs`` test prompts (default all of ``study.test``): is π_0 writing
    document-specific synopses, and how far is it from the trivial lead-8-words baseline?
    """
    from rouge_score import rouge_scorer

    p = study.preset
    test = study.test if n_docs is None else study.test.iloc[:n_docs]
    docs, refs = p.prompts(test.document), list(test.summary)
    pol = study.new_pi0()
    systems = {
        "pi_0 greedy": pol.greedy(docs, max_new_tokens=p.max_new_tokens),
        "pi_0 sampled": [r[0] for r in pol.sample(docs, 1, temperature=p.temperature, max_new_tokens=p.max_new_tokens,
                                                  generator=torch.Generator().manual_seed(seed))],
        "lead-8": [lead_baseline(d) for d in test.document],
    }
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rows = []
    for name, outs in systems.items():
        rouge = [scorer.score(r, o)["rougeL"].fmeasure for r, o in zip(refs, outs)]
        gold = study.gold.score(docs, outs, refs)
        rows.append({"system": name, "rouge_l": float(np.mean(rouge)), "gold": float(np.mean(gold)),
                     "distinct": len(set(outs)) / len(outs), "n_docs": len(outs), "example": outs[0]})
    return pd.DataFrame(rows)


def _mean_spearman(source: np.ndarray, gold: np.ndarray) -> tuple[float, int]:
    """Mean over prompts of the Spearman correlation between a source and r* (constant prompts skipped)."""
    rhos = []
    for s, g in zip(source, gold):
        if np.ptp(s) > 0 and np.ptp(g) > 0:
            rhos.append(stats.spearmanr(s, g).statistic)
    return (float(np.mean(rhos)) if rhos else float("nan")), len(rhos)


def _publish_current(root, df: pd.DataFrame, detail: pd.DataFrame) -> None:
    """Copy the measurement the study uses now to ``sources.csv`` and ``source_prompts.csv`` of ``root`` (what
    the runs read to pick the exploited arms), rewriting them only when they differ."""
    for frame, name in ((df, "sources.csv"), (detail, "source_prompts.csv")):
        old = root / name
        if not (old.is_file() and pd.read_csv(old).equals(pd.read_csv(io.StringIO(frame.to_csv(index=False))))):
            write_csv(frame, old)


def measure_sources(study: Study, *, n_prompts: int = 64, seed: int = 0, progress: bool = False
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each source's quality, measured as the paper ranks them (notebook 01); cached in ``sources/<key>/``
    (the key of what made it; other settings measure beside it) and copied to ``sources.csv``, which the runs read.

    On ``n_prompts`` online prompts, π_0 draws a pool of ``preset.pool_size`` responses and one more
    response (the π_0 competitor). Per source: the mean per-prompt Spearman correlation with r* over the
    pool; the value under r* of its Best-of-N policy (the mean r* of its top-1 response); and that policy's
    win rate against π_0 (ties 1/2); and its scoring speed (``score_seconds`` for the ``n_prompts * pool_size``
    pool responses, ``candidates_per_s``, measured on the CPU named in ``cpu_flags``). π_0's own value
    (``value_gold`` of the row ``pi_0``) and an oracle Best-of-N under r* itself (``gold-best-of-n``, an upper
    bound; its speed is the simulated human's) are added for reference. Returns (sources frame, per-prompt frame).
    """
    p = study.preset
    if not isinstance(n_prompts, numbers.Integral) or isinstance(n_prompts, bool) or not 2 <= n_prompts <= len(study.online):
        raise ValueError(f"n_prompts must be an integer in [2, {len(study.online)}], got {n_prompts!r}")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    key = sha256_json({"n_prompts": n_prompts, "seed": seed, "sources": {a: source_identity(p.sources[a]) for a in study.sources},
                       **{f: getattr(p, f) for f in ("pool_size", "temperature", "max_new_tokens", "prompt_prefix", "prompt_suffix")},
                       "pi0": study.pi0_identity, "data": study.data_identity, "gold": study.gold_identity,
                       "code": code_identity("study.source_measurement")})[:16]
    keyed = study.root / "sources" / key  # one folder a measurement: other settings measure beside it
    path, detail_path = keyed / "sources.csv", keyed / "source_prompts.csv"
    if path.exists() and detail_path.exists():
        df, detail = pd.read_csv(path), pd.read_csv(detail_path)
        if "key" in df and (df["key"] == key).all() and "key" in detail and (detail["key"] == key).all():
            _publish_current(study.root, df, detail)
            return df.drop(columns="key"), detail.drop(columns="key")
    prompts = sample_prompts(study.online, n_prompts, source_prompts(seed))
    docs = p.prompts(prompts.document)
    refs = list(prompts.summary)
    pol = study.new_pi0()
    gen = torch.Generator().manual_seed(source_seed(seed))
    pools = pol.sample(docs, p.pool_size, temperature=p.temperature, max_new_tokens=p.max_new_tokens, generator=gen)
    rivals = [r[0] for r in pol.sample(docs, 1, temperature=p.temperature, max_new_tokens=p.max_new_tokens,
                                       generator=gen)]
    rep = lambda xs: [x for x in xs for _ in range(p.pool_size)]  # noqa: E731
    flat = [r for pool in pools for r in pool]
    t0 = time.perf_counter()
    gold = study.gold.score(rep(docs), flat, rep(refs)).reshape(n_prompts, p.pool_size)
    seconds = {"gold-best-of-n": time.perf_counter() - t0}
    gold_rival = study.gold.score(docs, rivals, refs)
    rows, detail = [], {"prompt": list(prompts.index), "pi0_gold": gold_rival}
    candidates = dict(study.sources)
    for name in track([*candidates, "gold-best-of-n"], "sources", disable=not progress, unit="source"):
        t0 = time.perf_counter()
        scores = gold if name == "gold-best-of-n" else np.asarray(
            candidates[name].score(rep(docs), flat, rep(refs))).reshape(n_prompts, p.pool_size)
        seconds.setdefault(name, time.perf_counter() - t0)
        top = best_of_n(scores, 1)[:, 0]
        value = gold[np.arange(n_prompts), top]
        rho, n_ok = _mean_spearman(scores, gold)
        rows.append({"source": name, "spearman_gold": rho, "value_gold": float(value.mean()),
                     "win_rate_vs_pi0": float(evaluation.pairwise_outcomes(value, gold_rival).mean()),
                     "n_prompts": n_prompts, "n_prompts_spearman": n_ok, "score_seconds": seconds[name],
                     "candidates_per_s": len(flat) / seconds[name] if seconds[name] > 0 else float("nan")})
        detail[f"{name}_gold"] = value
    lead = study.gold.score(docs, [lead_baseline(d) for d in prompts.document], refs)
    detail["lead8_gold"] = lead
    rows.append({"source": "pi_0", "spearman_gold": float("nan"), "value_gold": float(gold_rival.mean()),
                 "win_rate_vs_pi0": 0.5, "n_prompts": n_prompts, "n_prompts_spearman": 0})
    rows.append({"source": "lead-8", "spearman_gold": float("nan"), "value_gold": float(lead.mean()),
                 "win_rate_vs_pi0": float(evaluation.pairwise_outcomes(lead, gold_rival).mean()),
                 "n_prompts": n_prompts, "n_prompts_spearman": 0})
    df = pd.DataFrame(rows).assign(cpu_flags=cpu_flags())
    detail = pd.DataFrame(detail).assign(key=key)
    write_csv(detail, detail_path, study.sharding)
    write_csv(df.assign(key=key), path, study.sharding)
    _publish_current(study.root, df.assign(key=key), detail)
    return df, detail.drop(columns="key")
