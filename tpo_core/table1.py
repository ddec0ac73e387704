"""Table 1 (notebook 04; paper §6.1): gold rewards of every checkpoint on held-out prompts
(:func:`evaluate_run`, cached per row by the checkpoint's sha256 and the evaluation key), and the win rates
of TPO against each baseline with their intervals, power and Holm verdicts (:func:`table1`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tpo_core import evaluation
from tpo_core.common import EVAL, prompt_streams
from tpo_core.empirical import METHODS, write_csv
from tpo_core.progress import track
from tpo_core.sharding import deal, gather
from tpo_core.provenance import checkpoint_id, code_identity, sha256_json

from tpo_core.loading import Study, batching_identity, check_seeds
from tpo_core.runs import check_run

__all__ = ["gold_on_test", "gold_on_prompts", "eval_key", "evaluate_pi0", "evaluate_run", "table1", "win_rates_vs_pi0"]


def gold_on_test(policy, documents, references, *, gold, seed: int, temperature: float,
                 max_new_tokens: int | None, n_samples: int = 1) -> np.ndarray:
    """Gold reward of ``n_samples`` sampled responses per test prompt, shape ``(len(documents), n_samples)``.

    Each prompt has its own random stream (:func:`tpo_core.common.stream_generator` of ``seed``, its index
    and the ``EVAL`` stream), so two policies evaluated with the same ``seed`` share their random numbers
    prompt by prompt (common random numbers: less noise in their paired comparison). Sharded
    (:mod:`tpo_core.sharding`), groups of ``group_size`` prompts are dealt round-robin, each sampled and
    scored on its own, and gathered: every process returns the whole array, the same for any number of
    processes; one process outside ``sharded`` samples and scores all prompts in one call each.
    """
    documents, references = list(documents), list(references)
    if not documents or len(documents) != len(references):
        raise ValueError("documents and references must be non-empty and of equal length")
    idx = list(range(len(documents)))
    local = []
    for group in deal(idx):
        resp = policy.sample([documents[i] for i in group], n_samples, temperature=temperature,
                             max_new_tokens=max_new_tokens, generator=prompt_streams(seed, group, EVAL))
        rep = lambda xs: [xs[i] for i in group for _ in range(n_samples)]  # noqa: E731
        scores = np.asarray(gold.score(rep(documents), [r for rs in resp for r in rs], rep(references)), dtype=float)
        local += [(i, row.tolist()) for i, row in zip(group, scores.reshape(len(group), n_samples))]
    out = dict(gather(local))
    if sorted(out) != idx:
        raise RuntimeError("gathered evaluation does not cover every test prompt once")
    return np.array([out[i] for i in idx], dtype=float).reshape(len(idx), n_samples)


def gold_on_prompts(study: Study, policy, seed: int, prompts: pd.DataFrame | None = None,
                    n_samples: int | None = None) -> np.ndarray:
    """:func:`gold_on_test` on ``prompts`` (default: the study's test prompts; a frame with ``document`` and
    ``summary``) at the preset's prompt prefix and sampling settings, ``n_samples`` per prompt (default the
    preset's ``eval_samples``), with evaluation stream ``seed``. Shape ``(len(prompts), n_samples)``."""
    p, prompts = study.preset, study.test if prompts is None else prompts
    return gold_on_test(policy, [p.prompt_prefix + d for d in prompts.document], list(prompts.summary),
                        gold=study.gold, seed=int(seed), temperature=p.temperature, max_new_tokens=p.max_new_tokens,
                        n_samples=p.eval_samples if n_samples is None else n_samples)


def _eval_path(study: Study, name: str, seed: int) -> Path:
    return study.root / "eval" / name / f"seed_{seed}.csv"


def eval_key(study: Study, seed: int) -> str:
    """Key of the evaluation settings for ``seed``: test prompts, sampling, human and code (16 hex digits)."""
    p = study.preset
    return sha256_json({"test": study.data_identity.get("test"), "temperature": p.temperature,
                        "max_new_tokens": p.max_new_tokens, "samples": p.eval_samples, "seed": int(seed),
                        "gold": study.gold_identity,
                        "streams": batching_identity(), "code": code_identity("table1")})[:16]


def _read_eval(path: Path) -> pd.DataFrame | None:
    """A cached evaluation file, or None when missing."""
    return pd.read_csv(path) if path.is_file() else None


def _cached_rows(old: pd.DataFrame | None, iteration: int, checkpoint: str | None, key: str,
                 n: int) -> pd.DataFrame | None:
    """The cached evaluation rows of ``iteration`` in ``old`` if they judged exactly ``checkpoint`` under
    ``key`` (and are complete), else None."""
    if checkpoint is None or old is None or not {"checkpoint", "eval_key"} <= set(old.columns):
        return None
    rows = old[(old.iteration == iteration) & (old.checkpoint == checkpoint) & (old.eval_key == key)]
    return rows.reset_index(drop=True) if len(rows) == n else None


def _evaluate(study: Study, policy, seed: int, iteration: int, checkpoint: str, key: str) -> pd.DataFrame:
    g = gold_on_prompts(study, policy, 10_000 + int(seed))  # (n_prompts, n_samples)
    n, m = g.shape
    return pd.DataFrame({"seed": seed, "iteration": iteration, "prompt": np.repeat(np.arange(n), m),
                         "sample": np.tile(np.arange(m), n), "gold": g.ravel(), "checkpoint": checkpoint,
                         "eval_key": key})


def evaluate_pi0(study: Study, seeds) -> pd.DataFrame:
    """π_0's test gold rewards for each evaluation seed, cached (columns seed, iteration 0, prompt, sample, gold,
    checkpoint, eval_key); recomputed when π_0 or the evaluation settings change."""
    frames, ck = [], sha256_json(study.pi0_identity)[:16]
    for s in seeds:
        path, key = _eval_path(study, "pi_0", s), eval_key(study, s)
        rows = _cached_rows(_read_eval(path), 0, ck, key, len(study.test) * study.preset.eval_samples)
        if rows is None:
            rows = _evaluate(study, study.new_pi0(), s, 0, ck, key)
            write_csv(rows, path)
        frames.append(rows)
    return pd.concat(frames, ignore_index=True)


def evaluate_run(study: Study, name: str, seeds=None, *, progress: bool = False) -> pd.DataFrame:
    """Test gold rewards of every finished iteration of run ``name`` (columns seed, iteration, prompt, sample, gold,
    checkpoint, eval_key).

    The run must have been trained from this study's settings (:func:`check_run`). Cached per seed in
    ``eval/<run>/seed_<s>.csv``: an iteration's rows are reused only when they judged the very checkpoint
    now on disk (the sha256 of its weights) under the same evaluation settings (:func:`eval_key`), else it
    is evaluated again (weights verified before loading). A checkpoint identical to TPO's (the shared first
    iteration of some ablations) reuses TPO's rows: the weights' hash decides, not the run's name.
    """
    seeds = check_seeds(study, seeds)
    frames = []
    for s in track(seeds, f"evaluate {name}", disable=not progress, unit="seed"):
        out_dir, path, key = study.run_dir(name, s), _eval_path(study, name, s), eval_key(study, s)
        done = sorted(int(d.name.split("_")[1]) for d in out_dir.glob("iter_*") if d.is_dir()
                      and d.name.split("_")[1].isdigit())
        if not done:
            continue
        check_run(study, name, s)
        old = _read_eval(path)
        tpo = _read_eval(_eval_path(study, "tpo", s)) if name != "tpo" else None
        rows, pol = [], None
        for k in done:
            ck = checkpoint_id(out_dir / f"iter_{k}")
            got = _cached_rows(old, k, ck, key, len(study.test) * study.preset.eval_samples)
            if got is None:
                got = _cached_rows(tpo, k, ck, key, len(study.test) * study.preset.eval_samples)
            if got is None:
                from tpo_core.trainer import load_checkpoint

                pol = pol or study.new_pi0()
                load_checkpoint(pol.model, out_dir / f"iter_{k}",
                                rebuild=f"Delete {out_dir} and rerun run {name!r} seed {s} to retrain it.")
                got = _evaluate(study, pol, s, k, ck, key)
            rows.append(got)
        new = pd.concat(rows, ignore_index=True)
        if old is None or not old.equals(new):
            write_csv(new, path)
        frames.append(new)
    if not frames:
        raise FileNotFoundError(f"run {name!r} has no finished iteration for seeds {seeds}: train it first")
    return pd.concat(frames, ignore_index=True)


def _matrix(df: pd.DataFrame, iteration: int, seeds) -> np.ndarray:
    """Gold rewards of one iteration as (n_seeds, n_prompts, n_samples), seeds in ``seeds`` order."""
    sub = df[df.iteration == iteration]
    rows = []
    for s in seeds:
        d = sub[sub.seed == s].sort_values(["prompt", "sample"] if "sample" in sub else "prompt")
        if d.empty:
            raise ValueError(f"no evaluation for seed {s} at iteration {iteration}: run that seed first")
        rows.append(d.gold.to_numpy().reshape(d.prompt.nunique(), -1))
    return np.stack(rows)


def table1(study: Study, evals: dict[str, pd.DataFrame], *, method: str = "tpo", baselines=None,
           seeds=None, rng: np.random.Generator | None = None, n_boot: int = 2000) -> pd.DataFrame:
    """Win rate (%) of ``method`` against each baseline at each iteration: Table 1, paired by seed.

    ``evals``: run name -> :func:`evaluate_run` frame. Columns ``baseline, iteration, win_rate_mean, ci_low,
    ci_high, n_seeds, p_improve`` (t-interval across seeds, probability of improvement of the seeds' mean
    gold) plus the stratified-bootstrap interval ``boot_low, boot_high``, ``n_prompts``, and the power
    columns of :mod:`tpo_core.power`: ``sd_between, sd_eval, sd_train`` (points), ``p_value``, ``p_holm``,
    ``verdict`` (Holm over all the cells), ``mde`` (points from 50% at 80% power), and the paired mean
    difference in r* ``gold_diff_mean, gold_diff_low, gold_diff_high``.
    """
    from tpo_core import power
    rng = rng if rng is not None else np.random.default_rng(0)
    seeds = list(study.preset.seeds if seeds is None else seeds)
    baselines = [b for b in (baselines or [m for m in METHODS if m != method]) if b in evals]
    rows = []
    for b in baselines:
        for k in range(1, study.preset.n_iterations + 1):
            a_k, b_k = _matrix(evals[method], k, seeds), _matrix(evals[b], k, seeds)
            r = evaluation.summarize_win_rate(a_k, b_k, rng, n_boot=n_boot)
            rows.append({"baseline": b, "iteration": k, **r, **power.cell_statistics(a_k, b_k)})
    cols = ["baseline", "iteration", "win_rate_mean", "ci_low", "ci_high", "n_seeds", "p_improve",
            "boot_low", "boot_high", "n_prompts", "sd_between", "sd_eval", "sd_train", "p_value", "p_holm",
            "verdict", "mde", "gold_diff_mean", "gold_diff_low", "gold_diff_high"]
    return power.add_holm(evaluation.as_frame(rows))[cols]


def win_rates_vs_pi0(study: Study, evals: dict[str, pd.DataFrame], pi0: pd.DataFrame, *, seeds=None,
                     rng: np.random.Generator | None = None, n_boot: int = 1000) -> pd.DataFrame:
    """Win rate (%) of every run at every iteration against π_0 (same prompts and sampling seeds)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    rows = []
    for name, df in evals.items():
        s = [x for x in (study.preset.seeds if seeds is None else seeds) if x in set(df.seed)]
        base = _matrix(pi0, 0, s)
        for k in sorted(set(df.iteration)):
            r = evaluation.summarize_win_rate(_matrix(df, k, s), base, rng, n_boot=n_boot)
            rows.append({"method": name, "iteration": int(k), **r})
    return evaluation.as_frame(rows)
