"""The positive-control pilot: for each candidate setting, the effect of the positive control (exploit-oracle
against no-transfer), its noise and its cost, on seeds and prompts the book does not report; the setting that
detects its effect in the fewest minutes, and the design that detects the smallest effect within a time budget.

Settings are judged by effect over noise, never by noise alone: a setting that barely trains leaves little
training noise and also little effect to find.

1. **Seeds**: :data:`PILOT_SEEDS`, disjoint from every preset's reported seeds and from the tuning seeds.
2. **Prompts**: the first ``n_prompts`` of the test split's reserve (:attr:`tpo_core.study.loading.Study.held_out`:
   whole groups, in random order, never among the reported test prompts whatever their number).
3. **Runs**: for each *setting* (a label and preset-field overrides, e.g. ``{"prompts_per_iteration": 128}``;
   ``{}`` is the preset itself), exploit-oracle and no-transfer run the preset's iterations on every pilot seed with the
   study's own code (:func:`tpo_core.study.runs.run`), in a results tree of their own
   (``<results>/pilot/<label>/``), each run's cost read from its own timing (:func:`tpo_core.study.runs.run_seconds`).
4. **Evaluation**: each final policy samples ``eval_samples`` responses per pilot prompt with the evaluation
   stream :func:`tpo_core.plumbing.streams.pilot_seed` (common random numbers between the two methods); the oracle-vs-no-transfer outcomes
   (:func:`tpo_core.study.evaluation.pairwise_outcomes`), shape ``(n_seeds, n_prompts)``, give the cell's
   between-seed sd and its split into evaluation and training noise (:func:`tpo_core.study.power.variance_split`).
5. **Effect per minute**: :func:`summarize` gives each setting's control effect ``win rate − 50`` (a positive
   control: only a gain counts as one, since an oracle that hurts shows nothing transfer could gain), the seeds
   a t-test needs to detect it with 80% power, and the minutes those seeds cost (``minutes_to_detect``);
   :func:`pick_by_effect` takes the setting that needs the fewest.
6. **Design**: for every setting, :func:`designs` prices (seeds, test prompts, samples per prompt) of the study's
   primary contrast, laid out as the default run is (the control and the exploit baselines on their own seeds),
   with that setting's noise and timings; :func:`choose` picks the design with the smallest MDE within the budget
   (:func:`default_budget`: the default run's on this CPU).

A between-seed sd from 5 seeds is itself uncertain by a factor of about two (:func:`sd_interval`), so a
setting replaces the preset's training only where the pilot tells their sds apart (:func:`distinguishable`);
otherwise the pick is among the preset's own designs, and the point-estimate pick is shown beside it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from tpo_core.study import power
from tpo_core.tpo.empirical import CONTROL
from tpo_core.study.evaluation import pairwise_outcomes
from tpo_core.study.loading import Study, load_study
from tpo_core.world.presets import get_preset
from tpo_core.plumbing.provenance import checkpoint_id, read_json, sha256_json, write_atomic
from tpo_core.study.runs import run, run_dir, run_seconds
from tpo_core.plumbing.streams import check_disjoint, pilot_seed
from tpo_core.study.judging import eval_key, gold_on_prompts
from tpo_core.study.tuning import TUNING_SEEDS

__all__ = ["PILOT_SEEDS", "METHODS", "CONTROLLED", "on_held_out", "final_gold_matrix", "pilot",
           "summarize", "sd_interval", "designs", "distinguishable", "choose", "pick_by_effect", "default_budget"]

#: The seeds of the pilot runs; no preset reports them, and they are not the tuning seeds (tested).
PILOT_SEEDS = (9101, 9102, 9103, 9104, 9105)

#: The two runs of the pilot's cell: the positive control against no-transfer (the largest effect transfer can
#: have; a setting that cannot show it cannot show TPO's).
METHODS = (CONTROL, "no-transfer")

#: Preset fields the pilot itself sets, so a setting may not override them.
CONTROLLED = frozenset({"seeds", "n_test_prompts", "eval_samples", "name"})

_LABEL = re.compile(r"^[a-z0-9][a-z0-9_]*$")


def on_held_out(study: Study, n_prompts: int) -> Study:
    """``study`` with its test prompts replaced by the first ``n_prompts`` held-out prompts (and its test data
    identity recomputed), so that nothing of the pilot touches the reported test prompts."""
    from tpo_core.world.sft import data_sha256

    if study.held_out.empty:
        raise ValueError(f"preset {study.preset.name!r} has no held-out prompts beside its test prompts")
    test = study.held_out.iloc[:min(int(n_prompts), len(study.held_out))].reset_index(drop=True)
    return replace(study, test=test, data_identity={
        **study.data_identity, "test": data_sha256(test.assign(document=study.preset.prompts(test.document)))})


def final_gold_matrix(study: Study, name: str, seed: int) -> np.ndarray:
    """r* of ``eval_samples`` responses per test prompt from run ``name``'s final policy, shape
    ``(n_prompts, eval_samples)``, with the evaluation stream :func:`tpo_core.plumbing.streams.pilot_seed`. Cached beside the run
    (``pilot_eval_<key>.json``), reused only for the same checkpoint weights and Table 1's evaluation key
    (:func:`tpo_core.study.judging.eval_key`: prompts, sampling settings, human, random streams and code)."""
    from tpo_core.study.checkpoints import load_checkpoint

    out_dir = run_dir(study, name, seed)
    final = out_dir / f"iter_{study.preset.n_iterations}"
    key = sha256_json({"checkpoint": checkpoint_id(final), "eval": eval_key(study, seed), "stream": pilot_seed(seed)})
    path = out_dir / f"pilot_eval_{key[:16]}.json"  # one file a judgment: another setting writes beside
    cached = read_json(path)
    if isinstance(cached, dict) and cached.get("key") == key:
        return np.asarray(cached["gold"], dtype=float)
    pol = study.new_pi0()
    load_checkpoint(pol.model, final, rebuild=f"Delete {out_dir} and rerun the pilot.")
    gold = gold_on_prompts(study, pol, pilot_seed(seed))
    write_atomic(path, json.dumps({"key": key, "gold": gold.tolist()}) + "\n")
    return gold


def _check_settings(settings: dict) -> dict:
    if not isinstance(settings, dict) or not settings:
        raise ValueError(f"settings must be a non-empty dict label -> preset overrides, got {settings!r}")
    for label, overrides in settings.items():
        if not isinstance(label, str) or not _LABEL.match(label):
            raise ValueError(f"setting label {label!r} must be lower-case letters, digits and _ (a folder name)")
        if not isinstance(overrides, dict):
            raise ValueError(f"setting {label!r}: overrides must be a dict, got {overrides!r}")
        if CONTROLLED & set(overrides):
            raise ValueError(f"setting {label!r} may not set {sorted(CONTROLLED & set(overrides))}: the pilot sets them")
    return settings


def pilot(preset: str, settings: dict, *, results_root: str | Path = "results", seeds=PILOT_SEEDS,
          n_prompts: int = 100, eval_samples: int = 2, progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Steps 1-4 of the module docstring for every setting.

    Returns ``(runs, outcomes)``: ``runs`` has one row per setting, method and seed (``setting, method, seed,
    seconds, final_gold``: the mean r* of its evaluation); ``outcomes`` maps each setting to its
    oracle-vs-no-transfer outcome matrix, shape ``(n_seeds, n_prompts)``.
    """
    from tpo_core.plumbing.progress import track

    settings = _check_settings(settings)
    seeds = [int(s) for s in seeds]
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ValueError(f"the pilot needs at least 2 distinct seeds, got {seeds}")
    reported = set(get_preset(preset).seeds)
    if reported & set(seeds) or set(TUNING_SEEDS) & set(seeds):
        raise ValueError(f"pilot seeds {sorted((reported | set(TUNING_SEEDS)) & set(seeds))} are reported or "
                         f"tuning seeds of {preset!r}")
    base = get_preset(preset)
    check_disjoint(base.seeds, base.n_iterations, len(base.arms or base.sources) + 1, tuning=TUNING_SEEDS,
                   pilot=seeds)
    rows, outcomes = [], {}
    for label, overrides in settings.items():
        study = load_study(preset, results_root=Path(results_root) / "pilot" / label, sources="arms",
                           seeds=tuple(seeds), eval_samples=int(eval_samples), **overrides)
        study = on_held_out(study, n_prompts)
        gold = {m: [] for m in METHODS}
        for m, s in track([(m, s) for s in seeds for m in METHODS], f"pilot {label}", disable=not progress,
                          unit="run"):
            run(study, m, s)
            seconds = run_seconds(study, m, s)
            g = final_gold_matrix(study, m, s)
            gold[m].append(g)
            rows.append({"setting": label, "method": m, "seed": s, "seconds": seconds, "final_gold": float(g.mean())})
        outcomes[label] = pairwise_outcomes(np.stack(gold[CONTROL]), np.stack(gold["no-transfer"]))
    return pd.DataFrame(rows), outcomes


def sd_interval(sd: float, n_seeds: int, confidence: float = 0.95) -> tuple[float, float]:
    """Chi-square interval of a standard deviation estimated from ``n_seeds`` normal values:
    ``sd · sqrt((n − 1) / χ²_{(1±c)/2, n−1})``."""
    if n_seeds < 2 or not math.isfinite(sd):
        return float("nan"), float("nan")
    df = n_seeds - 1
    return (sd * math.sqrt(df / stats.chi2.ppf((1 + confidence) / 2, df)),
            sd * math.sqrt(df / stats.chi2.ppf((1 - confidence) / 2, df)))


def summarize(runs: pd.DataFrame, outcomes: dict) -> pd.DataFrame:
    """One row per setting: ``win_rate`` (exploit-oracle vs no-transfer, %) and ``effect`` (``win_rate − 50``,
    points), ``sd_between, sd_eval, sd_train, sd_prompt`` (points; :func:`tpo_core.study.power.variance_split`) with the
    chi-square interval of ``sd_between`` (``sd_between_low, sd_between_high``), ``n_seeds, n_prompts``,
    ``seconds_per_seed``: the two runs' seconds per seed, median over seeds (other work on the machine only ever
    slows a run down; NaN when a run has no timing on record), ``seconds_control``: the oracle's run alone, median
    over seeds, ``gold_control, gold_no_transfer``: each method's mean final r*, ``seeds_to_detect``: the seeds a
    two-sided 5% t-test needs to detect a positive ``effect`` with 80% power at that sd (its sd never below the
    evaluation noise), and ``minutes_to_detect``: what those seeds cost (NaN where the effect is not a gain, the
    noise is zero, or the timing is missing)."""
    out = []
    for label, x in outcomes.items():
        split = {k: (v * 100 if k.startswith("sd_") else v) for k, v in power.variance_split(x).items()
                 if not k.startswith("ms_")}
        lo, hi = sd_interval(split["sd_between"], split["n_seeds"])
        mine = runs[runs.setting == label]
        secs = mine.groupby("seed").seconds.sum(min_count=len(METHODS)).median(skipna=False)
        secs_control = mine[mine.method == CONTROL].seconds.median(skipna=False)
        gold = mine.groupby("method").final_gold.mean()
        effect = 100 * float(x.mean()) - 50
        sd = max(split["sd_between"], split["sd_eval"])
        n = power.seeds_needed(sd, effect) if effect > 0 and sd > 0 else float("nan")
        out.append({"setting": label, "win_rate": 100 * float(x.mean()), "effect": effect, **split,
                    "sd_between_low": lo, "sd_between_high": hi, "seconds_per_seed": float(secs),
                    "seconds_control": float(secs_control),
                    "gold_control": float(gold.get(CONTROL, np.nan)),
                    "gold_no_transfer": float(gold.get("no-transfer", np.nan)), "seeds_to_detect": n,
                    "minutes_to_detect": n * float(secs) / 60})
    return pd.DataFrame(out)


def pick_by_effect(summary: pd.DataFrame) -> pd.Series | None:
    """The setting of ``summary`` (:func:`summarize`) that detects its control effect in the fewest minutes
    (ties: the larger effect); None when no setting has a finite ``minutes_to_detect``."""
    ok = summary[np.isfinite(summary.minutes_to_detect)]
    return None if ok.empty else ok.sort_values(["minutes_to_detect", "effect"], ascending=[True, False]).iloc[0]


def designs(summary: pd.DataFrame, *, n_prompts: int, samples: int, seconds_fixed: float,
            seconds_per_response: float, control_seeds: int = 0, secondary_seeds: int = 0, checkpoints_fixed: int = 0,
            n_tests: int = 1, seeds_grid=(10, 15, 20, 30, 40, 60), prompts_grid=(200, 400, 800),
            samples_grid=(1, 2, 4)) -> pd.DataFrame:
    """:func:`tpo_core.study.power.design_table` for every setting of ``summary`` (:func:`summarize`), priced as
    the default run is laid out (:func:`tpo_core.world.presets.seeds_of`): the primary pair, TPO and no-transfer, on
    every seed, at ``seconds_per_seed`` a seed (TPO is not in the pilot: it transfers like the oracle and learns
    online like no-transfer, so the pair is priced as the pilot's two runs), their last checkpoints judged; the
    oracle on ``control_seeds`` seeds (``seconds_control`` a run) and the two exploit baselines on
    ``secondary_seeds`` (each at the mean of the pilot's two runs) a fixed cost, as are the ``checkpoints_fixed``
    other checkpoints judged (:func:`tpo_core.study.table1.fixed_checkpoints`) at each design's prompts and samples.
    The noise is the setting's split (measured on ``n_prompts`` prompts × ``samples`` responses); the MDE is at
    level 5% / ``n_tests`` (1: the primary contrast). One row per setting and design. A setting without timings,
    or whose outcomes did not vary at all (``sd_between`` 0: no measured noise, not a noiseless one), is left
    out."""
    frames = []
    for r in summary.itertuples():
        if not math.isfinite(r.seconds_per_seed) or not r.sd_between > 0:
            continue
        fixed_training = control_seeds * r.seconds_control + secondary_seeds * r.seconds_per_seed  # 2 runs x mean
        d = power.design_table(r.sd_train, r.sd_eval, n_prompts=n_prompts, samples=samples, seeds_grid=seeds_grid,
                               prompts_grid=prompts_grid, samples_grid=samples_grid,
                               seconds_fixed=seconds_fixed + fixed_training,
                               seconds_training_per_seed=r.seconds_per_seed, seconds_per_response=seconds_per_response,
                               checkpoints_per_seed=len(METHODS), checkpoints_fixed=int(checkpoints_fixed),
                               n_tests=n_tests)
        frames.append(d.assign(setting=r.setting))
    if not frames:
        raise ValueError("no setting has both timings and a non-zero spread: rerun its runs (a run resumed "
                         "from an interrupted start has no timing)")
    return pd.concat(frames, ignore_index=True)


def distinguishable(summary: pd.DataFrame, baseline: str = "preset") -> list[str]:
    """The settings of ``summary`` (:func:`summarize`) whose between-seed sd the pilot tells apart from
    ``baseline``'s: their 95% chi-square intervals do not overlap. A setting whose outcomes never varied is
    not among them (no measured noise)."""
    rows = summary.set_index("setting")
    if baseline not in rows.index:
        raise ValueError(f"no setting {baseline!r} in the pilot; its settings are {list(rows.index)}")
    b = rows.loc[baseline]
    return [k for k, r in rows.iterrows() if k != baseline and r.sd_between > 0
            and (r.sd_between_high < b.sd_between_low or r.sd_between_low > b.sd_between_high)]


def default_budget(bf16: bool | None = None) -> float:
    """The default run's time budget in minutes on a CPU that computes bf16 natively (``bf16``; ``None``: this
    one, :func:`tpo_core.world.oracle.native_bf16`): 60, and 120 on cores without it (AVX2 only)."""
    from tpo_core.world.oracle import native_bf16

    return 60.0 if (native_bf16() if bf16 is None else bf16) else 120.0


def choose(table: pd.DataFrame, budget_minutes: float, settings=None) -> pd.Series | None:
    """The design of :func:`designs` with the smallest MDE among those within ``budget_minutes`` (ties: the
    cheaper), among the designs of ``settings`` only when given (e.g. the preset and the settings
    :func:`distinguishable` from it); None when none fits."""
    fits = table[table.minutes <= budget_minutes]
    if settings is not None:
        fits = fits[fits.setting.isin(list(settings))]
    return None if fits.empty else fits.sort_values(["mde", "minutes"]).iloc[0]
