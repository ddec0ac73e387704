"""tpo_core: a reproducible study of Transfer Policy Optimization (Huang, Li, Dann, He, ICML 2025).

The folders follow the paper and the study; imports go one way, down this list:

* :mod:`tpo_core.commands`  the command lines (``reproduce``, ``prune``, the benchmarks, ``distributed``)
* :mod:`tpo_core.study`     the language-model study: runs, checkpoints, judging, Table 1, power, mechanism,
  pilot, tuning, and what the notebooks call (:mod:`tpo_core.study.pipeline`); the only writer under ``results/``
* :mod:`tpo_core.world`     presets, data, the imperfect sources, the simulated human, π₀ and its SFT, offline assets
* :mod:`tpo_core.tpo`       empirical TPO (Alg. 3) in memory: bandit, Best-of-N and labels, one iteration,
  losses, log-probabilities, trainer
* :mod:`tpo_core.theory`    exact finite-problem objects (Lemma 3.1) and theoretical TPO (Algorithms 1-2)
* :mod:`tpo_core.plumbing`  provenance and cache identities, random streams, sharding, progress, input checks
"""

__version__ = "0.1.0"
