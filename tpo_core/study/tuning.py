"""The tuning protocol: one rule picks a tuned constant (the learning rate) for every method alike, on seeds
and prompts the book does not report.

1. **Seeds**: :data:`TUNING_SEEDS`, disjoint from every preset's reported seeds.
2. **Prompts**: the first ``n_prompts`` of the test split's reserve (:attr:`tpo_core.study.loading.Study.held_out`:
   whole groups, in random order, never among the reported test prompts whatever their number).
3. **Runs**: for each value of the grid, every run of the loss being tuned (:data:`TUNED_RUNS`: DPO, the four
   methods of :data:`tpo_core.tpo.empirical.METHODS`; IPO, the mechanism chapter's TPO and no-transfer) runs the
   preset's iterations on every tuning seed, with the study's own code (:func:`tpo_core.study.runs.run`), in a
   results tree of its own (``<results>/tuning/lr_<value>/`` for DPO, ``ipo_lr_<value>/`` for IPO). The
   exploited sources are the reported study's (:func:`tpo_core.study.runs.choose_worst_best`): a property of the
   sources, not a tuned constant.
4. **Criterion**: the mean r* of one sampled response per tuning prompt from each run's final policy,
   averaged over seeds, then over runs, each run weighted equally.
5. **Pick**: the grid value with the highest criterion (:func:`pick`). Each loss gets its own rate (the paper
   too uses one rate for DPO and another for IPO, App. I.2): the preset's ``learning_rate`` and
   ``ipo_learning_rate`` (:func:`tpo_core.world.presets.learning_rate`).

``python -m tpo_core.study.tuning --preset embedded --grid 3e-4 1e-3 3e-3 [--loss ipo]`` (or ``nox -s tune``) runs
it and writes ``<results>/tuning/<preset>.csv`` (``<preset>-ipo.csv`` for IPO); runs already trained are
loaded, not retrained.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from tpo_core.tpo.empirical import METHODS
from tpo_core.study.loading import Study, load_study
from tpo_core.world.presets import LOSSES, get_preset
from tpo_core.plumbing.progress import track
from tpo_core.study.runs import RUNS, choose_worst_best, run, run_dir
from tpo_core.plumbing.streams import check_disjoint, tuning_seed
from tpo_core.study.judging import gold_on_prompts

__all__ = ["TUNING_SEEDS", "TUNED_RUNS", "final_gold", "tune", "criterion", "pick", "table_path", "main"]

#: The seeds of the tuning runs; no preset reports them (tested).
TUNING_SEEDS = (9001, 9002)

#: Per loss, the runs whose final policies judge a learning rate: every run of the study trained with it
#: (tested against :data:`tpo_core.study.runs.RUNS`), but the ablations of TPO's own settings and the positive
#: control (exploit-oracle), which measures what transfer can do *at the methods' rate*: tuning the rate on it
#: would tune the instrument, not the methods.
TUNED_RUNS = {"dpo": tuple(METHODS), "ipo": ("tpo-ipo", "no-transfer-ipo")}


def table_path(results_root: str | Path, preset: str, loss: str = "dpo") -> Path:
    """Where :func:`main` writes the tuning table of ``loss``: ``<results>/tuning/<preset>.csv`` (DPO) or
    ``<preset>-ipo.csv``."""
    return Path(results_root) / "tuning" / (f"{preset}.csv" if loss == "dpo" else f"{preset}-{loss}.csv")


def final_gold(study: Study, name: str, seed: int, prompts: pd.DataFrame) -> float:
    """Mean r* of one sampled response per prompt of ``prompts`` from the final policy of run ``name``
    (its last checkpoint, weights verified), with the evaluation stream :func:`tpo_core.plumbing.streams.tuning_seed`."""
    from tpo_core.study.checkpoints import latest_checkpoint, load_checkpoint

    last = latest_checkpoint(run_dir(study, name, seed))
    if last is None:
        raise FileNotFoundError(f"run {name!r} seed {seed} has no finished iteration in {run_dir(study, name, seed)}")
    pol = study.new_pi0()
    load_checkpoint(pol.model, last[1])
    return float(gold_on_prompts(study, pol, tuning_seed(seed), prompts, n_samples=1).mean())


def tune(preset: str, grid, *, loss: str = "dpo", results_root: str | Path = "results", seeds=TUNING_SEEDS,
         methods=None, n_prompts: int = 100, progress: bool = True) -> pd.DataFrame:
    """The protocol of the module docstring for the learning rates ``grid`` of ``loss``'s runs (``methods``:
    run names of :data:`tpo_core.study.runs.RUNS` trained with ``loss``; default :data:`TUNED_RUNS`). Returns one
    row per value, run and seed: ``learning_rate, method, seed, final_gold``."""
    grid = [float(v) for v in grid]
    if not grid or any(not (np.isfinite(v) and v > 0) for v in grid) or len(set(grid)) != len(grid):
        raise ValueError(f"grid must hold distinct positive learning rates, got {grid}")
    reported = set(get_preset(preset).seeds)
    if reported & set(seeds):
        raise ValueError(f"tuning seeds {sorted(reported & set(seeds))} are reported seeds of {preset!r}")
    p = get_preset(preset)
    check_disjoint(p.seeds, p.n_iterations, len(p.arms or p.sources) + 1, tuning=seeds)
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {LOSSES}")
    methods = list(TUNED_RUNS[loss] if methods is None else methods)
    unknown = set(methods) - set(RUNS)
    if unknown:
        raise ValueError(f"unknown runs {sorted(unknown)}; choose among {sorted(RUNS)}")
    other = [m for m in methods if RUNS[m].loss != loss]
    if other:
        raise ValueError(f"runs {other} do not train with {loss!r}: tune one loss's rate at a time")
    results_root = Path(results_root)
    worst, best = None, None
    if {"exploit-worst", "exploit-best"} & {RUNS[m].method for m in methods}:
        worst, best = choose_worst_best(load_study(preset, results_root=results_root, with_models=False))
    rows = []
    for lr in grid:
        prefix = "" if loss == "dpo" else f"{loss}_"  # the preset field and the folder of this loss's rate
        study = load_study(preset, results_root=results_root / "tuning" / f"{prefix}lr_{lr:g}", sources="arms",
                           seeds=tuple(seeds), worst_source=worst, best_source=best, **{f"{prefix}learning_rate": lr})
        if study.held_out.empty:
            raise ValueError(f"preset {preset!r} has no held-out prompts beside its test prompts")
        prompts = study.held_out.iloc[:min(n_prompts, len(study.held_out))]
        for m, s in track([(m, s) for m in methods for s in seeds], f"tuning {loss} lr={lr:g}", disable=not progress,
                          unit="run"):
            run(study, m, s)
            rows.append({"learning_rate": lr, "method": m, "seed": int(s), "final_gold": final_gold(study, m, s, prompts)})
    return pd.DataFrame(rows)


def criterion(table: pd.DataFrame) -> pd.DataFrame:
    """Per learning rate (rows): each run's mean ``final_gold`` over seeds (columns) and ``criterion``, their
    mean, each run weighted equally."""
    per_method = table.groupby(["learning_rate", "method"]).final_gold.mean().unstack()
    return per_method.assign(criterion=per_method.mean(axis=1))


def pick(table: pd.DataFrame) -> float:
    """The learning rate with the highest :func:`criterion`."""
    return float(criterion(table).criterion.idxmax())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="embedded")
    ap.add_argument("--loss", default="dpo", choices=LOSSES, help="whose learning rate: the runs of TUNED_RUNS[loss]")
    ap.add_argument("--grid", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3])
    ap.add_argument("--seeds", type=int, nargs="+", default=list(TUNING_SEEDS))
    ap.add_argument("--n-prompts", type=int, default=100)
    ap.add_argument("--results-dir", default="results")
    a = ap.parse_args(argv)
    table = tune(a.preset, a.grid, loss=a.loss, results_root=a.results_dir, seeds=a.seeds, n_prompts=a.n_prompts)
    out = table_path(a.results_dir, a.preset, a.loss)
    from tpo_core.plumbing.provenance import write_csv

    write_csv(table, out)
    print(criterion(table).to_string())
    print(f"picked {a.loss} learning rate: {pick(table):g} (written {out})")


if __name__ == "__main__":
    main()
