"""Table 1 (notebook 04; paper §6.1): gold rewards of every checkpoint on held-out prompts
(:func:`evaluate_run`: :mod:`tpo_core.study.judging`, cached per row by the checkpoint's sha256 and the evaluation
key), and the win rates
of TPO against each baseline with their intervals, power and Holm verdicts (:func:`table1`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tpo_core.study import evaluation
from tpo_core.study.judging import eval_key, eval_settings_key, gold_on_prompts
from tpo_core.plumbing.streams import bootstrap, evaluation_seed
from tpo_core.tpo.empirical import CONTROL, METHODS
from tpo_core.plumbing.progress import track
from tpo_core.plumbing.provenance import checkpoint_id, sha256_json, write_csv

from tpo_core.study.loading import Study, check_seeds
from tpo_core.world.presets import seeds_of
from tpo_core.study.runs import check_run, run_dir, run_key, run_seeds

__all__ = ["PRIMARY", "ROLES", "eval_path", "write_table1", "price_primary", "evaluate_pi0", "evaluate_run",
           "early_seeds", "evaluate_design", "judged_checkpoints", "fixed_checkpoints", "seconds_per_response",
           "upstream_seconds", "table1", "declared_table", "win_rates_vs_pi0"]

#: The primary contrast, declared before any data: TPO against no-transfer at the last iteration, one two-sided
#: t-test at 5% across the seeds (no multiplicity correction: it is the only primary test).
PRIMARY = ("tpo", "no-transfer")

#: The roles of the rows of :func:`declared_table`, each its own Holm family: the primary contrast, the
#: positive control (exploit-oracle against no-transfer, every iteration) and the secondary cells (every other
#: cell of the paper's Table 1).
ROLES = ("primary", "control", "secondary")


def eval_path(study: Study, name: str, seed: int) -> Path:
    """``results/<preset>/eval/<run>/<run_key>/<eval_settings_key>/seed_<s>.csv``: the judgments of run ``name``'s
    checkpoints for ``seed`` under this study's evaluation settings; other run or evaluation settings are judged
    into folders beside it."""
    return study.root / "eval" / name / run_key(study, name) / eval_settings_key(study) / f"seed_{int(seed)}.csv"


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
    g = gold_on_prompts(study, policy, evaluation_seed(seed))  # (n_prompts, n_samples)
    n, m = g.shape
    return pd.DataFrame({"seed": seed, "iteration": iteration, "prompt": np.repeat(np.arange(n), m),
                         "sample": np.tile(np.arange(m), n), "gold": g.ravel(), "checkpoint": checkpoint,
                         "eval_key": key})


def evaluate_pi0(study: Study, seeds) -> pd.DataFrame:
    """π_0's test gold rewards (columns seed, iteration 0, prompt, sample, gold, checkpoint, eval_key), one row set
    per seed of ``seeds``: π_0 is the same policy for every seed, so it is judged once, with the evaluation stream
    of the preset's first seed, and that judgement stands for every seed (it is then shared by every comparison
    with π_0: its noise is common to all seeds, as the crossed interval of :func:`win_rates_vs_pi0` accounts).
    Cached; recomputed when π_0 or the evaluation settings change."""
    seeds = check_seeds(study, seeds)
    first = int(study.preset.seeds[0])
    ck, key = sha256_json(study.pi0_identity)[:16], eval_key(study, first)
    path = study.root / "eval" / "pi_0" / ck / eval_settings_key(study) / "once.csv"
    rows = _cached_rows(_read_eval(path), 0, ck, key, len(study.test) * study.preset.eval_samples)
    if rows is None:
        rows = _evaluate(study, study.new_pi0(), first, 0, ck, key)
        write_csv(rows, path, study.sharding)
    return pd.concat([rows.assign(seed=s) for s in seeds], ignore_index=True)


def evaluate_run(study: Study, name: str, seeds=None, *, iterations=None, progress: bool = False) -> pd.DataFrame:
    """Test gold rewards of every finished iteration of run ``name`` (columns seed, iteration, prompt, sample, gold,
    checkpoint, eval_key), on ``seeds`` (default: the run's :func:`tpo_core.study.runs.run_seeds`); ``iterations``: only
    these of the finished iterations (default: all).

    The run must have been trained from this study's settings (:func:`check_run`). Cached per seed in
    :func:`eval_path`: an iteration's rows are reused only when they judged the very checkpoint
    now on disk (the sha256 of its weights) under the same evaluation settings (:func:`eval_key`), else it
    is evaluated again (weights verified before loading). A checkpoint identical to TPO's (the shared first
    iteration of some ablations) reuses TPO's rows: the weights' hash decides, not the run's name.
    """
    seeds = check_seeds(study, run_seeds(study, name) if seeds is None else seeds)
    frames = []
    for s in track(seeds, f"evaluate {name}", disable=not progress, unit="seed"):
        out_dir, path, key = run_dir(study, name, s), eval_path(study, name, s), eval_key(study, s)
        done = sorted(k for k in (int(d.name.split("_")[1]) for d in out_dir.glob("iter_*") if d.is_dir()
                                  and d.name.split("_")[1].isdigit()) if iterations is None or k in iterations)
        if not done:
            if not out_dir.exists() and any(out_dir.parent.parent.glob(f"*/seed_{s}/identity.json")):
                check_run(study, name, s)  # trained from other settings only: say which
            continue
        check_run(study, name, s)
        old = _read_eval(path)
        tpo = _read_eval(eval_path(study, "tpo", s)) if name != "tpo" else None
        rows, pol = [], None
        for k in done:
            ck = checkpoint_id(out_dir / f"iter_{k}")
            got = _cached_rows(old, k, ck, key, len(study.test) * study.preset.eval_samples)
            if got is None:
                got = _cached_rows(tpo, k, ck, key, len(study.test) * study.preset.eval_samples)
            if got is None:
                from tpo_core.study.checkpoints import load_checkpoint

                pol = pol or study.new_pi0()
                load_checkpoint(pol.model, out_dir / f"iter_{k}",
                                rebuild=f"Delete {out_dir} and rerun run {name!r} seed {s} to retrain it.")
                got = _evaluate(study, pol, s, k, ck, key)
            rows.append(got)
        new = pd.concat(rows, ignore_index=True)
        # the cached rows of iterations not asked for this time stay in the file (nothing finished is dropped)
        kept = old[~old.iteration.isin(done)] if old is not None and iterations is not None else None
        stored = new if kept is None or kept.empty else pd.concat([kept, new], ignore_index=True).sort_values(
            ["iteration", "prompt", "sample"], kind="stable").reset_index(drop=True)
        if old is None or not old.equals(stored):
            write_csv(stored, path, study.sharding)
        frames.append(new)
    if not frames:
        raise FileNotFoundError(f"run {name!r} has no finished iteration for seeds {seeds}: train it first")
    return pd.concat(frames, ignore_index=True)


def early_seeds(study: Study) -> list[int]:
    """The seeds on which every iteration is judged (the first ``secondary_seeds``): the cells before the last
    iteration are secondary, so only the last iteration is judged on every seed (:func:`evaluate_design`)."""
    return list(seeds_of(study.preset, "exploit-best"))


def evaluate_design(study: Study, names, *, progress: bool = False) -> dict[str, pd.DataFrame]:
    """:func:`evaluate_run` as the declared analysis needs it (:func:`declared_table`): each run's last iteration
    on every seed the run has (:func:`tpo_core.study.runs.run_seeds`), and every iteration on :func:`early_seeds`.
    Returns run name -> frame."""
    last = study.preset.n_iterations
    out = {}
    for name in names:
        few, rest = _design_seeds(study, name)
        frames = [evaluate_run(study, name, few, progress=progress)] if few else []
        if rest:
            frames.append(evaluate_run(study, name, rest, iterations=[last], progress=progress))
        out[name] = pd.concat(frames, ignore_index=True)
    return out


def _design_seeds(study: Study, name: str) -> tuple[list[int], list[int]]:
    """Run ``name``'s seeds as :func:`evaluate_design` judges them: (every iteration, the last iteration only)."""
    seeds, early = run_seeds(study, name), set(early_seeds(study))
    return [s for s in seeds if s in early], [s for s in seeds if s not in early]


def judged_checkpoints(study: Study, names) -> dict[str, int]:
    """How many checkpoints :func:`evaluate_design` judges for each run of ``names``: every iteration on the
    seeds of :func:`early_seeds`, the last on the run's other seeds. Returns run name -> count."""
    out = {}
    for name in names:
        few, rest = _design_seeds(study, name)
        out[name] = len(few) * study.preset.n_iterations + len(rest)
    return out


def fixed_checkpoints(study: Study) -> int:
    """The checkpoints a run judges whatever the number of seeds of the primary pair: every checkpoint of
    :func:`judged_checkpoints` (the control's, the exploit baselines' and the early iterations' included) but the
    primary pair's last ones, which grow with its seeds, and π₀, judged once."""
    return sum(judged_checkpoints(study, [*METHODS, CONTROL]).values()) - len(PRIMARY) * len(study.preset.seeds) + 1


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


_COLUMNS = ["baseline", "iteration", "win_rate_mean", "ci_low", "ci_high", "n_seeds", "p_improve", "boot_low",
            "boot_high", "crossed_low", "crossed_high", "n_prompts", "sd_between", "sd_eval", "sd_train", "sd_prompt",
            "sd_used", "ci_floored", "tie_rate", "p_value", "p_holm", "verdict", "mde", "gold_diff_mean",
            "gold_diff_low", "gold_diff_high"]


def _cell(study: Study, evals, method: str, baseline: str, k: int, seeds, rng, n_boot: int) -> dict:
    from tpo_core.study import power

    a_k, b_k = _matrix(evals[method], k, seeds), _matrix(evals[baseline], k, seeds)
    r = evaluation.summarize_win_rate(a_k, b_k, rng, n_boot=n_boot)
    return {"method": method, "baseline": baseline, "iteration": k, **r, **power.cell_statistics(a_k, b_k)}


def declared_table(study: Study, evals: dict[str, pd.DataFrame], *, rng: np.random.Generator | None = None,
                   n_boot: int = 2000) -> pd.DataFrame:
    """Table 1 as the study declares it before the data (:data:`PRIMARY`, :data:`ROLES`): one row per cell, with
    ``method``, ``role`` and the columns of :func:`table1`; Holm and the MDE within each role's family.

    * **primary**: TPO vs no-transfer at the last iteration, on every seed of the preset;
    * **control**: exploit-oracle vs no-transfer at every iteration (the largest effect transfer can have here;
      skipped when ``evals`` has no ``exploit-oracle``): the last on the control's seeds (``control_seeds``), the
      earlier on those of them in :func:`early_seeds`;
    * **secondary**: TPO vs no-transfer at the earlier iterations, and TPO vs exploit-worst and exploit-best at
      every iteration, on :func:`early_seeds` (the seeds the exploit baselines ran on,
      :func:`tpo_core.world.presets.seeds_of`).
    ``evals``: run name -> :func:`evaluate_run` frame (:func:`evaluate_design`)."""
    from tpo_core.study import power

    rng = rng if rng is not None else bootstrap(0)
    p, last = study.preset, study.preset.n_iterations
    method, base = PRIMARY
    every, early, control = list(p.seeds), early_seeds(study), list(seeds_of(p, CONTROL))
    rows = [{**_cell(study, evals, method, base, last, every, rng, n_boot), "role": "primary"}]
    if CONTROL in evals:
        rows += [{**_cell(study, evals, CONTROL, base, k, control if k == last else [s for s in early if s in control],
                          rng, n_boot), "role": "control"} for k in range(1, last + 1)]
    rows += [{**_cell(study, evals, method, base, k, early, rng, n_boot), "role": "secondary"}
             for k in range(1, last)]
    for b in (m for m in METHODS if m not in PRIMARY and m in evals):
        rows += [{**_cell(study, evals, method, b, k, early, rng, n_boot), "role": "secondary"}
                 for k in range(1, last + 1)]
    frame = evaluation.as_frame(rows)
    parts = [power.add_holm(frame[frame.role == r].reset_index(drop=True)) for r in ROLES if (frame.role == r).any()]
    return pd.concat(parts, ignore_index=True)[["role", "method", *_COLUMNS]]


def write_table1(study: Study, evals: dict[str, pd.DataFrame], *, rng: np.random.Generator | None = None,
                 n_boot: int = 2000) -> pd.DataFrame:
    """:func:`declared_table`, written to ``results/<preset>/table1.csv`` (rewritten only when it changes)."""
    table = declared_table(study, evals, rng=rng, n_boot=n_boot)
    write_csv(table, study.root / "table1.csv", study.sharding)
    return table


def seconds_per_response(study: Study, prompts: pd.DataFrame | None = None, n_samples: int | None = None) -> float:
    """Seconds to judge one response (a sample from π₀ and the human's score), timed on π₀ judged as a checkpoint
    is: on ``prompts`` (default: the test prompts), ``n_samples`` each (default: the preset's ``eval_samples``).
    A response costs less in larger batches, so a smaller probe would overprice the evaluation; loading the
    policy is not timed."""
    import time

    prompts = study.test if prompts is None else prompts
    n_samples = study.preset.eval_samples if n_samples is None else int(n_samples)
    policy = study.new_pi0()
    t0 = time.perf_counter()
    gold_on_prompts(study, policy, 0, prompts, n_samples=n_samples)
    return (time.perf_counter() - t0) / (len(prompts) * n_samples)


def upstream_seconds(results_dir) -> dict[str, float]:
    """Seconds each chapter that every design runs once took in ``results_dir`` (the theory chapters and notebook
    01, from their manifests; NaN where none is on record): notebook name -> seconds."""
    from tpo_core.study.report import notebook_seconds

    return {n: notebook_seconds(results_dir, n) for n in ("00_theory", "05_theory_tpo", "01_source_rms")}


def price_primary(study: Study, primary: pd.Series, *, results_dir, target_half_width: float = 2.5) -> tuple[pd.DataFrame, dict[str, str]]:
    """What other designs of the primary contrast would cost and resolve on this machine (notebook 04).

    The cost of a seed is the measured training of one seed of TPO and no-transfer (each run keeps its seconds,
    :func:`tpo_core.study.runs.run_seconds`) plus judging their last checkpoints (:func:`seconds_per_response`);
    the rest of the run is a fixed cost (:func:`upstream_seconds`, and the control's and the exploit baselines'
    training); every other checkpoint that :func:`evaluate_design` judges (:func:`fixed_checkpoints`) is judged at
    each design's prompts and samples. The noise is the primary row's (``sd_train``, ``sd_eval``). Returns
    :func:`tpo_core.study.power.design_table` (empty when a timing is missing) and the sentences the chapter glues: ``reach`` (the cheapest design whose half-width is at most
    ``target_half_width``), ``line`` (the ``--set`` line of the seeds alone that reach it), ``unpriced``,
    ``seconds_per_seed`` and ``seeds_2pt`` (seeds to detect 2 points with 80% power)."""
    from tpo_core.study import power
    from tpo_core.study.runs import run_seconds

    p, runs = study.preset, list(PRIMARY)
    per_response = seconds_per_response(study)
    training = sum(run_seconds(study, n, s) for n in runs for s in p.seeds) / len(p.seeds)
    control = list(seeds_of(p, CONTROL))
    secondary = (sum(run_seconds(study, n, s) for n in ("exploit-worst", "exploit-best")
                     for s in run_seeds(study, "exploit-best"))
                 + sum(run_seconds(study, CONTROL, s) for s in control))
    fixed = upstream_seconds(results_dir)
    unpriced = [n for n, v in fixed.items() if not np.isfinite(v)]
    texts = {"unpriced": f" (without {', '.join(unpriced)}: no timing on record)" if unpriced else " (every part timed)",
             "seconds_per_seed": f"{training:.0f}",
             "seeds_2pt": str(power.seeds_needed(primary.sd_used, 2.0)) if primary.sd_used > 0 else "n/a",
             "reach": "not priced: a run's timing is missing", "line": "none"}
    if not np.isfinite([per_response, training, secondary]).all():
        return pd.DataFrame(columns=["n_seeds", "n_test_prompts", "eval_samples", "minutes", "sd_between",
                                     "half_width", "mde"]), texts
    designs = power.design_table(primary.sd_train, primary.sd_eval, n_prompts=len(study.test), samples=p.eval_samples,
                                 seeds_grid=sorted({5, 10, len(p.seeds), 15, 20, 30, 40, 60}),
                                 prompts_grid=[200, 400, 800], samples_grid=[1, 2, 4],
                                 seconds_fixed=sum(v for v in fixed.values() if np.isfinite(v)) + secondary,
                                 seconds_training_per_seed=training, seconds_per_response=per_response,
                                 checkpoints_per_seed=len(runs), checkpoints_fixed=fixed_checkpoints(study),
                                 n_tests=1)
    reach = designs[designs.half_width <= target_half_width].sort_values("minutes")
    if reach.empty:
        texts["reach"] = "no design in the grid"
    else:
        r = reach.iloc[0]
        texts["reach"] = (f"{r.n_seeds:.0f} seeds, {r.n_test_prompts:.0f} test prompts and {r.eval_samples:.0f} "
                          f"sample(s) per prompt, about {r.minutes:.0f} minutes (MDE {r.mde:.1f} points)")
    # the same evaluation, more or fewer seeds: the design a `--set` of the seeds alone runs
    by_seeds = reach[(reach.n_test_prompts == len(study.test)) & (reach.eval_samples == p.eval_samples)]
    texts["line"] = "none: in the grid, seeds alone do not reach it"
    if len(by_seeds):
        n = int(by_seeds.n_seeds.iloc[0])
        line = list(p.seeds)[:n] + [int(p.seeds[-1]) + 100 * (i + 1) for i in range(max(0, n - len(p.seeds)))]
        texts["line"] = f"nox -s reproduce -- --set 'seeds={line}' (about {by_seeds.minutes.iloc[0]:.0f} minutes)"
    return designs, texts


def table1(study: Study, evals: dict[str, pd.DataFrame], *, method: str = "tpo", baselines=None,
           seeds=None, rng: np.random.Generator | None = None, n_boot: int = 2000) -> pd.DataFrame:
    """Win rate (%) of ``method`` against each baseline at each iteration: Table 1, paired by seed.

    ``evals``: run name -> :func:`evaluate_run` frame. Columns ``baseline, iteration, win_rate_mean, ci_low,
    ci_high, n_seeds, p_improve`` (t-interval across seeds, probability of improvement of the seeds' mean
    gold) plus the stratified-bootstrap interval ``boot_low, boot_high``, ``n_prompts``, and the power
    columns of :mod:`tpo_core.study.power`: ``sd_between, sd_eval, sd_train`` (points), ``p_value``, ``p_holm``,
    ``verdict`` (Holm over all the cells), ``mde`` (points from 50% at 80% power), and the paired mean
    difference in r* ``gold_diff_mean, gold_diff_low, gold_diff_high``; the t-interval's sd is floored at the
    evaluation noise (``sd_used``, ``ci_floored``), ``crossed_low, crossed_high`` also cover new prompts, and
    ``tie_rate`` is the share of equal-gold response pairs (:func:`tpo_core.study.power.cell_statistics`).
    """
    from tpo_core.study import power
    rng = rng if rng is not None else bootstrap(0)
    seeds = list(study.preset.seeds if seeds is None else seeds)
    baselines = [b for b in (baselines or [m for m in METHODS if m != method]) if b in evals]
    rows = [_cell(study, evals, method, b, k, seeds, rng, n_boot)
            for b in baselines for k in range(1, study.preset.n_iterations + 1)]
    return power.add_holm(evaluation.as_frame(rows))[_COLUMNS]


def win_rates_vs_pi0(study: Study, evals: dict[str, pd.DataFrame], pi0: pd.DataFrame, *, seeds=None,
                     rng: np.random.Generator | None = None, n_boot: int = 1000) -> pd.DataFrame:
    """Win rate (%) of every run at every iteration against π_0 (same prompts), each iteration on the seeds
    judged at it (of ``seeds``, default the preset's), with ``crossed_low,
    crossed_high`` (:func:`tpo_core.study.power.crossed_interval`): π_0 is judged once (:func:`evaluate_pi0`), so its
    sampling noise is shared by every seed and only the crossed interval contains it."""
    from tpo_core.study import power

    rng = rng if rng is not None else bootstrap(0)
    rows = []
    for name, df in evals.items():
        for k in sorted(set(df.iteration)):  # each iteration on the seeds judged at it
            judged = set(df[df.iteration == k].seed)
            s = [x for x in (study.preset.seeds if seeds is None else seeds) if x in judged]
            base, a = _matrix(pi0, 0, s), _matrix(df, k, s)
            r = evaluation.summarize_win_rate(a, base, rng, n_boot=n_boot)
            out = evaluation.pairwise_outcomes(a, base)
            lo, hi = power.crossed_interval(out) if out.shape[0] >= 2 else (float("nan"), float("nan"))
            rows.append({"method": name, "iteration": int(k), **r, "crossed_low": 100 * lo, "crossed_high": 100 * hi})
    return evaluation.as_frame(rows)
