"""Benchmark of the online loop (``nox -s bench``): its parts against their peers, and one whole iteration.

``python -m tpo_core.commands.bench_loop --out results/bench_loop.csv [--preset embedded]``. Each row is measured in
this one process, the system and its peer alternating round by round on the same inputs, so that their
ratio holds on a shared machine (other jobs only slow a run down: the fastest round is the headline, the
median is kept too):

* ``sampler``: :meth:`tpo_core.world.policy.Policy.sample` against ``transformers``'
  ``generate(do_sample=True, top_k=0, top_p=1.0)`` on the same π_0, prompts and number of samples
  (``n_candidates`` per prompt, ``max_new_tokens`` of the preset): responses per second;
* ``human``: :class:`tpo_core.world.oracle.GoldReward` (the preset's arithmetic) against
  ``sentence_transformers.SentenceTransformer.encode`` + cosine (fp32) on the same responses and references:
  texts per second, and the largest score difference between the two;
* ``bertscore``: the BERTScore source against ``bert_score.score`` on the same pairs: pairs per second;
* ``iteration:<method>``: one iteration of the method from π_0 (:func:`tpo_core.tpo.empirical.collect_iteration`
  and one :meth:`~tpo_core.tpo.trainer.PreferenceTrainer.train_iteration`), labelled prompts per second, with
  the seconds split into sampling, each source, the human, training and the rest.

Every row records the CPU's flags that decide the arithmetic (avx2, avx512f, avx512_bf16, amx_tile,
avx512_vnni, avx_vnni), so that numbers from different machines can be read side by side.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tpo_core.study.report import cpu_flags
from tpo_core.plumbing.streams import iteration_prompts, iteration_seed

__all__ = ["main", "generate_inputs", "bench_sampler", "bench_iteration"]


class _Clock:
    """Seconds spent in the wrapped methods, by part."""

    def __init__(self):
        self.seconds = defaultdict(float)

    def wrap(self, obj, method: str, part: str):
        clock, inner = self, getattr(obj, method)

        @functools.wraps(inner)  # keeps the signature (collect_iteration inspects it for ``progress``)
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                clock.seconds[part] += time.perf_counter() - t0

        class Proxy:
            def __getattr__(self, name):
                return getattr(obj, name)

        proxy = Proxy()
        setattr(proxy, method, timed)
        return proxy


def _rounds(systems: dict, rounds: int) -> dict[str, list[float]]:
    """Seconds of each system's callable, ``rounds`` times, alternating which goes first."""
    times = {k: [] for k in systems}
    names = list(systems)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            systems[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def _pair_rows(part, ours, peer, times, items, unit, **extra) -> list[dict]:
    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    return [{"part": part, "system": name, "seconds": best[key], "median_seconds": med[key],
             "items": items, "unit": unit, "items_per_s": items / best[key],
             "ratio_vs_peer": best[peer] / best[key], "median_ratio_vs_peer": med[peer] / med[key],
             "round_seconds": " ".join(f"{x:.3f}" for x in times[key]), **extra}
            for key, name in ((ours, ours), (peer, peer))]


def generate_inputs(pol, docs) -> tuple[dict, dict]:
    """The tensors and keywords with which ``generate`` answers ``docs`` as :meth:`Policy.sample` does: a seq2seq
    policy's documents truncated to ``max_source_tokens`` and its decoder started from the pad token; a causal
    policy's prompts left-padded, keeping their last ``max_source_tokens`` tokens. Tensors on the policy's device."""
    tok = pol.tokenizer
    if pol.is_encoder_decoder:
        enc = tok(docs, truncation=True, max_length=pol.config.max_source_tokens, padding=True, return_tensors="pt")
        extra = {"decoder_start_token_id": tok.pad_token_id}
    else:
        rows = [r[-pol.config.max_source_tokens:] for r in tok(docs)["input_ids"]]
        width = max(len(r) for r in rows)
        enc = {"input_ids": torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows]),
               "attention_mask": torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])}
        extra = {"pad_token_id": tok.pad_token_id}
    return {k: v.to(pol.device) for k, v in dict(enc).items()}, extra


def bench_sampler(study, docs, rounds: int) -> list[dict]:
    """Policy.sample against generate on the same π_0, prompts and number of samples."""
    p = study.preset
    pol = study.new_pi0()
    n = p.n_candidates
    enc, extra = generate_inputs(pol, docs)

    def ours():
        pol.sample(docs, n, temperature=p.temperature, max_new_tokens=p.max_new_tokens,
                   generator=torch.Generator().manual_seed(0))

    def peer():
        with torch.no_grad():
            torch.manual_seed(0)
            pol.model.generate(**enc, do_sample=True, top_k=0, top_p=1.0, temperature=p.temperature,
                               num_return_sequences=n, max_new_tokens=p.max_new_tokens, **extra).cpu()  # synced

    times = _rounds({"tpo_core Policy.sample": ours, "transformers generate": peer}, rounds)
    return _pair_rows("sampler", "tpo_core Policy.sample", "transformers generate", times, len(docs) * n,
                      "responses")


def bench_human(study, responses, references, rounds: int) -> list[dict]:
    """GoldReward against SentenceTransformer.encode + cosine on the same texts; also their largest gap."""
    from sentence_transformers import SentenceTransformer

    from tpo_core.plumbing.common import quiet_loading

    gold = study.gold
    with quiet_loading():
        st = SentenceTransformer(str(gold.model_path), device="cpu", local_files_only=True)
    prompts = [""] * len(responses)
    uniq_refs = list(dict.fromkeys(references))

    def ours():
        gold.clear_cache()  # the references are encoded too, as the peer does
        return gold.score(prompts, responses, references, progress=False)

    def peer():
        r = st.encode(responses, batch_size=gold.batch_size, normalize_embeddings=True)
        f = st.encode(uniq_refs, batch_size=gold.batch_size, normalize_embeddings=True)
        pos = {t: i for i, t in enumerate(uniq_refs)}
        return np.einsum("nd,nd->n", r.astype(np.float64), f[[pos[t] for t in references]].astype(np.float64))

    times = _rounds({"tpo_core GoldReward": ours, "sentence-transformers encode": peer}, rounds)
    a, b = ours(), peer()
    keep = [i for i, t in enumerate(responses) if t.strip()]  # empty responses get empty_score by design
    from scipy import stats

    return _pair_rows("human", "tpo_core GoldReward", "sentence-transformers encode", times, len(responses), "texts",
                      max_abs_diff_vs_peer=float(np.abs(a[keep] - b[keep]).max()),
                      spearman_vs_peer=float(stats.spearmanr(a[keep], b[keep]).statistic),
                      arithmetic=f"bf16 autocast={gold.autocast_bf16}")


def bench_bertscore(study, responses, references, rounds: int) -> list[dict]:
    """The BERTScore source against bert_score.score (same encoder folder and layer) on the same pairs."""
    import bert_score

    from tpo_core.world.sources import BERTScore

    src = study.sources.get("bertscore") or BERTScore(progress=False)
    keep = [i for i, t in enumerate(responses) if t.strip()]
    cands, refs = [responses[i] for i in keep], [references[i] for i in keep]

    def ours():
        return src.score([""] * len(cands), cands, refs, progress=False)

    from tpo_core.plumbing.common import quiet_loading

    def peer():
        with quiet_loading():
            return bert_score.score(cands, refs, model_type=str(src.model_path), num_layers=src.num_layers,
                                    batch_size=src.batch_size, device="cpu")[2]

    times = _rounds({"tpo_core BERTScore": ours, "bert_score.score": peer}, rounds)
    return _pair_rows("bertscore", "tpo_core BERTScore", "bert_score.score", times, len(cands), "pairs",
                      max_abs_diff_vs_peer=float(np.abs(np.asarray(ours()) - peer().numpy()).max()))


def bench_iteration(study, method: str, seed: int, policy=None) -> dict:
    """One iteration of ``method`` from π_0 (or ``policy``, trained in place) on the preset's prompts per
    iteration: seconds by part, and the iteration's preference ``pairs``."""
    from tpo_core.tpo import empirical
    from tpo_core.world.data import sample_prompts
    from tpo_core.study.pipeline import RUNS, preference_config, choose_worst_best
    from tpo_core.tpo.trainer import PreferenceTrainer

    p = study.preset
    try:
        worst, best = choose_worst_best(study)
    except FileNotFoundError:  # no sources.csv yet: the preset's arms in their listed order
        worst, best = study.arm_names[0], study.arm_names[-1]
    clock = _Clock()
    pol = study.new_pi0() if policy is None else policy
    timed_pol = clock.wrap(pol, "sample", "sampling")
    sources = {a: clock.wrap(s, "score", f"source {a}") for a, s in study.arms.items()}
    gold = clock.wrap(study.gold, "score", "human")
    selector = empirical.make_selector(method, study.arms, p, worst=worst, best=best, seed=seed)
    prompts = sample_prompts(study.online, p.prompts_per_iteration, iteration_prompts(seed, 1))
    docs = p.prompts(prompts.document)
    trainer = PreferenceTrainer(pol.model, pol.encode, preference_config(p, RUNS[method], seed))
    t0 = time.perf_counter()
    pairs, _ = empirical.collect_iteration(
        timed_pol, docs, list(prompts.summary), selector=selector, sources=sources, gold=gold,
        n_candidates=p.n_candidates, pool_size=p.pool_size, top_k=p.top_k, seed=iteration_seed(seed, 1),
        temperature=p.temperature, max_new_tokens=p.max_new_tokens, progress=False)
    t1 = time.perf_counter()
    trainer.train_iteration(pairs, 1)
    total = time.perf_counter() - t0
    clock.seconds["training"] = time.perf_counter() - t1
    parts = dict(clock.seconds)
    parts["other"] = total - sum(parts.values())
    return {"part": f"iteration:{method}", "system": "tpo_core", "seconds": total, "items": len(docs),
            "unit": "labelled prompts", "items_per_s": len(docs) / total,
            "split": "; ".join(f"{k} {v:.2f}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])),
            **{f"seconds_{k.replace(' ', '_')}": v for k, v in parts.items()}, "pairs": pairs}


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="results/bench_loop.csv")
    ap.add_argument("--preset", default="embedded", help="embedded (default) or smoke (a quick check)")
    ap.add_argument("--results-root", default="results", help="where the study's results (sources.csv) are")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of each system and its peer")
    ap.add_argument("--methods", nargs="*", default=None, help="methods of the iteration rows (default: all four)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.rounds < 1:
        ap.error("--rounds must be >= 1")
    from tpo_core.study import pipeline as S
    from tpo_core.tpo.empirical import METHODS

    methods = list(METHODS if a.methods is None else a.methods)
    unknown = set(methods) - set(METHODS)
    if unknown:
        ap.error(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    st = S.load_study(a.preset, results_root=a.results_root, sources="arms")
    p = st.preset
    prompts = st.online.iloc[:p.prompts_per_iteration]
    docs = p.prompts(prompts.document)
    responses = [r for rs in st.new_pi0().sample(docs, p.n_candidates, temperature=p.temperature,
                                                 max_new_tokens=p.max_new_tokens,
                                                 generator=torch.Generator().manual_seed(a.seed)) for r in rs]
    refs = [r for r in prompts.summary for _ in range(p.n_candidates)]
    load = os.getloadavg()[0]
    rows = bench_sampler(st, docs, a.rounds) + bench_human(st, responses, refs, a.rounds)
    if any(spec["kind"] == "bertscore" for spec in p.sources.values()):
        rows += bench_bertscore(st, responses, refs, a.rounds)
    rows += [{k: v for k, v in bench_iteration(st, m, a.seed).items() if k != "pairs"} for m in methods]
    out = pd.DataFrame(rows).assign(preset=p.name, cpu_flags=cpu_flags(), threads=torch.get_num_threads(),
                                    torch=torch.__version__, load_1min_at_start=load,
                                    load_1min_at_end=os.getloadavg()[0])
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(a.out, index=False)
    print(f"CPU flags: {cpu_flags()}; {torch.get_num_threads()} threads; preset {p.name}")
    with pd.option_context("display.width", 220, "display.max_columns", 12, "display.max_colwidth", 90):
        print(out[[c for c in ("part", "system", "seconds", "items_per_s", "ratio_vs_peer", "max_abs_diff_vs_peer",
                               "split") if c in out]].to_string())
    return out


if __name__ == "__main__":
    main()
