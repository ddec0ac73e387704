"""The language-model study of one preset, end to end (paper §4-6): what notebooks 01-04 call.

* :func:`load_study` -- the data splits, ``pi_0`` (trained once and cached), the source rewards and
  the simulated human of a preset (:mod:`tpo_core.world.presets`).
* :func:`measure_sources` -- notebook 01: each source's per-prompt Spearman with ``r*``, the value
  under ``r*`` of its Best-of-N policy and that policy's win rate against ``pi_0``.
* :func:`run` / :func:`run_all` -- notebooks 02-03: iterations of TPO or a baseline for each seed
  (:func:`tpo_core.study.run_loop.run_method`), checkpoints and ``arms.csv``.
* :func:`evaluate_run` / :func:`table1` -- notebook 04: gold rewards of every checkpoint on held-out
  prompts, win rates with confidence intervals (:mod:`tpo_core.study.evaluation`).

Everything is written under ``results/<preset>/`` atomically, and every step skips work already done,
so an interrupted study resumes where it stopped. A cached result is reused only when the identity of
what made it matches (:mod:`tpo_core.plumbing.provenance`): the preset fields it depends on, the content hashes of
its inputs (π_0's weights, the checkpoint it evaluates, the data) and the source of the code that
computes it. Results are stored under the key of that identity (``<key>``: 16 hex digits), so results made
from other settings live beside them and are found again when the settings come back; nothing finished is
deleted when a setting changes (``python -m tpo_core.commands.prune`` lists and removes what no current setting uses).
Evaluation rows carry the sha256 of the checkpoint they judged and the key of the evaluation settings::

    results/<preset>/sources/<key>/sources.csv   source, spearman_gold, value_gold, win_rate_vs_pi0 (and the
    results/<preset>/sources.csv                 current one, which the runs read)
    results/<preset>/runs/<run>/<key>/seed_<s>/  iter_k checkpoints, records_iter_k.csv, arms.csv, identity.json
    results/<preset>/arms.csv                    method, seed, iteration, arm, pulls, wins
    results/<preset>/shared/<key>/seed_<s>.json  iteration 1's online responses and human scores, shared by
                                                 every run of the seed (with their identity)
    results/<preset>/eval/<run>/<key>/<eval key>/seed_<s>.csv  gold reward of the sampled responses per test
                                                 prompt, with the checkpoint's sha256 and the evaluation key
    results/<preset>/table1.csv                  baseline, iteration, win_rate_mean, ci_low, ci_high, ...
    results/<preset>/mechanism/<run>/<key>/seed_<s>.csv  per pair: r*, log-probabilities before and after, lengths
    results/<preset>/mechanism/summary.csv     per method, iteration and statistic: mean and 95% CI (notebook 07)
    results/<preset>/mechanism/experiment.csv  TPO vs no-transfer with DPO and with IPO (notebook 07)

A *run* is a method plus its settings: the paper's four methods, and the ablations of :data:`RUNS`.

The study is split by concept: :mod:`tpo_core.study.loading` (the study's components), :mod:`tpo_core.study.source_measurement`
(notebook 01), :mod:`tpo_core.study.runs` (notebooks 02-03) and :mod:`tpo_core.study.table1` (notebook 04). This module
gathers their public names, so that a notebook needs one import.
"""

from tpo_core.tpo.empirical import CONTROL
from tpo_core.plumbing.provenance import write_csv
from tpo_core.study.loading import Study, batching_identity, build_gold, build_sources, check_seeds, load_study
from tpo_core.study.runs import (RUNS, Run, check_run, choose_worst_best, first_online, first_online_dir, first_online_identity,
                           pairs, run_dir, run_key,
                           preference_config, records, run, run_all, run_identity, run_seconds, run_seeds,
                           training_logs)
from tpo_core.study.source_measurement import measure_sources, pi0_quality
from tpo_core.study.judging import eval_key, eval_settings_key, gold_on_prompts, gold_on_test
from tpo_core.study.table1 import (PRIMARY, declared_table, early_seeds, eval_path, evaluate_design, fixed_checkpoints, price_primary, seconds_per_response, upstream_seconds, write_table1, evaluate_pi0, evaluate_run, table1,
                             win_rates_vs_pi0)

__all__ = ["CONTROL", "PRIMARY", "RUNS", "Run", "Study", "load_study", "build_sources", "build_gold", "check_seeds", "batching_identity",
           "pi0_quality", "measure_sources", "choose_worst_best", "preference_config", "run_identity", "run",
           "run_all", "check_run", "run_seconds", "first_online", "first_online_identity", "training_logs", "records", "pairs",
           "gold_on_test", "gold_on_prompts", "eval_key", "evaluate_pi0", "evaluate_run", "table1", "declared_table",
           "evaluate_design", "early_seeds", "win_rates_vs_pi0", "run_seeds", "write_csv", "run_dir", "run_key",
           "first_online_dir", "eval_path", "eval_settings_key", "write_table1", "price_primary", "fixed_checkpoints",
           "seconds_per_response", "upstream_seconds"]
