"""Alg. 3's outer loop for one run, on disk: each iteration's prompts, collection, training and checkpoint.

:func:`run_method` reads top to bottom as the paper's loop: for ``k = 1 .. K`` it draws the iteration's prompts
(:func:`iteration_prompts`), collects and labels them in memory (:func:`tpo_core.tpo.empirical.collect_iteration`),
writes the per-prompt records and preference pairs, trains (:meth:`tpo_core.tpo.trainer.PreferenceTrainer.train_iteration`)
and keeps the checkpoint (:func:`tpo_core.study.checkpoints.train_or_load`). A finished iteration is loaded, not redone.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from tpo_core.study.checkpoints import load_into, train_or_load
from tpo_core.world.data import sample_prompts
from tpo_core.tpo.empirical import collect_iteration, make_selector
from tpo_core.plumbing.progress import track
from tpo_core.plumbing.provenance import write_csv, write_text
from tpo_core.plumbing.streams import iteration_prompts as prompts_rng
from tpo_core.plumbing.streams import iteration_seed

__all__ = ["iteration_prompts", "run_method"]


def iteration_prompts(preset, prompts_df, seed: int, k: int) -> tuple[list[str], list[str]]:
    """The documents (with the preset's prompt prefix) and reference summaries of iteration ``k`` of a run
    with ``seed``: ``preset.prompts_per_iteration`` prompts drawn with :func:`tpo_core.plumbing.streams.iteration_prompts`."""
    prompts = sample_prompts(prompts_df, preset.prompts_per_iteration, prompts_rng(seed, k))
    return preset.prompts(prompts.document), list(prompts.summary)


def run_method(method: str, policy, trainer, *, preset, prompts_df, sources: dict, gold, seed: int,
               out_dir, worst: str | None = None, best: str | None = None,
               selector_policy: str = "paper-ucb", carry_stats: bool = False, first_online=None,
               progress: bool = True, sharding=None) -> dict[str, pd.DataFrame]:
    """``preset.n_iterations`` iterations of one method for one seed (Alg. 3), resumable.

    Iteration k samples ``preset.prompts_per_iteration`` prompts with :func:`tpo_core.plumbing.streams.iteration_prompts`,
    collects and labels them (:func:`collect_iteration`, sharded over the processes of a launch, with the
    files written once by the main process), and trains with ``trainer``
    (a :class:`tpo_core.tpo.trainer.PreferenceTrainer` wrapping ``policy.model``), whose result
    :func:`tpo_core.study.checkpoints.train_or_load` keeps in ``out_dir/iter_k``. The per-prompt records are written (atomically) before training; an iteration
    whose checkpoint and records exist is loaded, not redone (the iteration's preference pairs are kept in
    ``pairs_iter_k.csv``: prompt index, whether the chosen response was transferred, both texts), and the selector's state after it
    (``selector_state_iter_k.json``: statistics and random-number state) is restored, so a resumed run
    continues exactly as an uninterrupted one. The selector's statistics restart every iteration (the
    authors) unless ``carry_stats``. ``first_online``: a function of the iteration-1 documents and
    references returning their scored online responses (:class:`tpo_core.tpo.empirical.OnlineBatch`, shared across methods), or
    ``None`` to sample and score them here. Each computed iteration's wall seconds (collection and
    training) go to ``timing_iter_k.json`` once its checkpoint is written (:func:`tpo_core.study.runs.run_seconds`).
    ``sharding``: the :class:`~tpo_core.plumbing.sharding.Sharding` of a launch (the study's), or None.
    Returns ``arms`` (method, seed, iteration, arm, pulls, wins), ``records`` and ``logs`` frames.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    selector = make_selector(method, sources, preset, worst=worst, best=best, policy=selector_policy,
                             seed=seed)
    state_path = out_dir / "selector_state.json"
    all_records, all_logs = [], []
    for k in track(range(1, preset.n_iterations + 1), f"{method} seed {seed}: iterations", disable=True):
        records_path, ckpt = out_dir / f"records_iter_{k}.csv", out_dir / f"iter_{k}"
        if ckpt.is_dir() and records_path.exists():
            load_into(trainer, ckpt)
            records = pd.read_csv(records_path, dtype={"arm": str})
            logs = pd.read_csv(ckpt / "logs.csv")
            state_k = out_dir / f"selector_state_iter_{k}.json"
            if state_k.exists():  # statistics (used if carried) and random state, as after iteration k
                selector.load_state_dict(json.loads(state_k.read_text()))
        else:
            if not carry_stats:
                selector.reset()
            started = time.perf_counter()
            docs, refs = iteration_prompts(preset, prompts_df, seed, k)
            pairs, records = collect_iteration(
                policy, docs, refs, selector=selector, sources=sources, gold=gold,
                n_candidates=preset.n_candidates, pool_size=preset.pool_size, top_k=preset.top_k,
                seed=iteration_seed(seed, k), temperature=preset.temperature, max_new_tokens=preset.max_new_tokens,
                online=first_online(docs, refs) if k == 1 and first_online is not None else None,
                progress=progress, sharding=sharding)
            records.insert(0, "iteration", k)
            kept = records[records.kept]
            write_csv(pd.DataFrame({"iteration": k, "prompt_idx": kept.prompt_idx.to_numpy(),
                                    "chosen_transferred": kept.win.to_numpy().astype(bool),
                                    "chosen": [q["chosen"] for q in pairs], "rejected": [q["rejected"] for q in pairs]}),
                      out_dir / f"pairs_iter_{k}.csv", sharding)
            write_csv(records, records_path, sharding)
            state = json.dumps(selector.state_dict())
            write_text(state, out_dir / f"selector_state_iter_{k}.json", sharding)
            write_text(state, state_path, sharding)
            logs = train_or_load(trainer, pairs, out_dir, k)
            write_text(json.dumps({"seconds": time.perf_counter() - started}), out_dir / f"timing_iter_{k}.json",
                       sharding)
        all_records.append(records)
        all_logs.append(logs)
    records = pd.concat(all_records, ignore_index=True)
    arms = (records.groupby(["iteration", "arm"]).agg(pulls=("win", "size"), wins=("win", "sum"))
            .reset_index())
    arms.insert(0, "seed", seed)
    arms.insert(0, "method", method)
    return {"arms": arms, "records": records, "logs": pd.concat(all_logs, ignore_index=True)}
