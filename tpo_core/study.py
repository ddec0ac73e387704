"""The language-model study of one preset, end to end (paper §4-6): what notebooks 01-04 call.

* :func:`load_study` -- the data splits, ``pi_0`` (trained once and cached), the source rewards and
  the simulated human of a preset (:mod:`tpo_core.presets`).
* :func:`measure_sources` -- notebook 01: each source's per-prompt Spearman with ``r*``, the value
  under ``r*`` of its Best-of-N policy and that policy's win rate against ``pi_0``.
* :func:`run` / :func:`run_all` -- notebooks 02-03: iterations of TPO or a baseline for each seed
  (:func:`tpo_core.empirical.run_method`), checkpoints and ``arms.csv``.
* :func:`evaluate_run` / :func:`table1` -- notebook 04: gold rewards of every checkpoint on held-out
  prompts, win rates with confidence intervals (:mod:`tpo_core.evaluation`).

Everything is written under ``results/<preset>/`` atomically, and every step skips work already done,
so an interrupted study resumes where it stopped. A cached result is reused only when the identity of
what made it matches (:mod:`tpo_core.provenance`): the preset fields it depends on, the content hashes of
its inputs (π_0's weights, the checkpoint it evaluates, the data) and the source of the code that
computes it. A run folder records its identity in ``identity.json`` and is recomputed, with a message
naming what changed, when the settings change; evaluation rows carry the sha256 of the checkpoint they
judged and the key of the evaluation settings::

    results/<preset>/sources.csv                 source, spearman_gold, value_gold, win_rate_vs_pi0
    results/<preset>/runs/<run>/seed_<s>/        iter_k checkpoints, records_iter_k.csv, arms.csv
    results/<preset>/arms.csv                    method, seed, iteration, arm, pulls, wins
    results/<preset>/runs/<run>/seed_<s>/identity.json   what the run's checkpoints were made from
    results/<preset>/eval/<run>/seed_<s>.csv     gold reward of one sampled response per test prompt,
                                                 with the checkpoint's sha256 and the evaluation key
    results/<preset>/table1.csv                  baseline, iteration, win_rate_mean, ci_low, ci_high, ...

A *run* is a method plus its settings: the paper's four methods, and the ablations of :data:`RUNS`.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

from tpo_core import evaluation
from tpo_core.common import EVAL, default_device, prompt_streams
from tpo_core.data import lead_baseline, sample_prompts
from tpo_core.empirical import METHODS, run_method, write_csv
from tpo_core.presets import Preset, get_preset, validate
from tpo_core.progress import track
from tpo_core.sharding import current, deal, gather, on_main, per_device_batch
from tpo_core.provenance import (CHECKSUMS, StaleResultError, canonical, code_identity, describe_changes,
                                 read_json, sha256_json, write_atomic)
from tpo_core.sources import best_of_n

__all__ = ["RUNS", "Run", "Study", "load_study", "measure_sources", "choose_worst_best", "run", "run_all",
           "run_identity", "check_run", "eval_key", "evaluate_run", "evaluate_pi0", "table1", "win_rates_vs_pi0",
           "write_csv"]


@dataclass(frozen=True)
class Run:
    """One method with its settings: the unit that gets seeds, checkpoints and an evaluation."""

    method: str
    """One of :data:`tpo_core.empirical.METHODS`."""
    reference: str = "previous"
    """``"previous"``: π_ref = the iterate entering the iteration (the authors); ``"initial"``: π_0."""
    selector: str = "paper-ucb"
    """TPO's arm selector (:class:`tpo_core.selection.TransferSelector` policy)."""
    carry_stats: bool = False
    """Keep the selector's statistics across iterations (the authors reset them)."""


#: The paper's four methods and the ablations beyond it, by run name.
RUNS: dict[str, Run] = {
    "tpo": Run("tpo"),
    "no-transfer": Run("no-transfer"),
    "exploit-worst": Run("exploit-worst"),
    "exploit-best": Run("exploit-best"),
    "tpo-ref-initial": Run("tpo", reference="initial"),
    "tpo-thompson": Run("tpo", selector="thompson"),
    "tpo-carried": Run("tpo", carry_stats=True),
}


# ------------------------------------------------------------------------------------------ components
@dataclass
class Study:
    """A preset's data, starting policy, sources and simulated human, and its results folder."""

    preset: Preset
    root: Path
    """``results/<preset>``."""
    online: pd.DataFrame
    """Online prompts (documents and reference summaries)."""
    test: pd.DataFrame
    """Held-out prompts of the win-rate evaluation (the first ``n_test_prompts`` of a fixed shuffle)."""
    sources: dict
    """Arm name -> source reward (``score(prompts, responses, references)``)."""
    gold: object
    """The simulated human r* (never visible to the learner except through preference labels)."""
    pi0_dir: Path | None = None
    """Cached folder of π_0 (``sft:`` policies); ``None`` for a Hub policy."""
    pi0_source: str | None = None
    """Model folder or Hub id of a pretrained π_0."""
    pi0_local: bool = True
    """``pi0_source`` is a local folder (else a Hub id, loaded from the Hub)."""
    pi0_manifest: dict = field(default_factory=dict)
    """π_0's training manifest (wall time, loss curve, ...), empty for a pretrained π_0."""
    model_paths: dict = field(default_factory=dict)
    """Hub id -> local folder, as given to :func:`load_study`."""
    pi0_identity: dict = field(default_factory=dict)
    """What π_0 is: the sha256 of its weight files (``sft:`` policies) or its Hub id / folder."""
    data_identity: dict = field(default_factory=dict)
    """sha256 of the online and test prompts (documents and references) this study uses."""

    def new_pi0(self):
        """A fresh copy of π_0 (each run trains its own)."""
        from tpo_core.policy import Policy

        if self.pi0_dir is not None:
            return Policy.load(self.pi0_dir).to(default_device())
        return Policy.from_pretrained(self.pi0_source, max_source_tokens=self.preset.max_input_tokens,
                                      max_target_tokens=self.preset.max_new_tokens,
                                      local_files_only=self.pi0_local).to(default_device())

    @property
    def arm_names(self) -> list[str]:
        """Names of the sources TPO and the exploit baselines transfer from (``preset.arms``, default all)."""
        return list(self.preset.arms) if self.preset.arms is not None else list(self.preset.sources)

    @property
    def arms(self) -> dict:
        """The built arm sources (empty when the study was loaded with ``sources="none"``)."""
        return {a: self.sources[a] for a in self.arm_names if a in self.sources}

    @property
    def gold_identity(self) -> dict:
        """What the simulated human is: the preset's ``gold`` and, for mpnet, whether it runs in bf16."""
        return {"gold": self.preset.gold, "bf16": getattr(self.gold, "autocast_bf16", None)
                if self.gold is not None else _resolved_bf16(self.preset)}

    def run_dir(self, name: str, seed: int) -> Path:
        return self.root / "runs" / name / f"seed_{seed}"


def _resolved_bf16(preset: Preset):
    """``Preset.gold_autocast_bf16`` as the mpnet human resolves it on this machine (None for another human)."""
    if preset.gold != "mpnet":
        return None
    if preset.gold_autocast_bf16 == "auto":
        from tpo_core.oracle import native_bf16

        return native_bf16()
    return bool(preset.gold_autocast_bf16)


def _resolve(model: str, model_paths: dict) -> tuple[str, bool]:
    """(path or id, local_files_only) for a model named in a preset."""
    if model in model_paths:
        return str(model_paths[model]), True
    if Path(model).is_dir():
        return model, True
    return model, False


def _splits(preset: Preset, model_paths: dict) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(sft, online, test) frames with columns ``document``, ``summary``."""
    if preset.dataset == "debian":
        from tpo_core.data import load_debian

        return load_debian("sft"), load_debian("online"), load_debian("test")
    import datasets

    path, local = _resolve(preset.dataset, model_paths)
    if local and Path(path).is_dir():
        ds = datasets.load_from_disk(path)
    else:
        ds = datasets.load_dataset(path)
    frames = {k: ds[k].to_pandas() for k in ds}
    for k, df in frames.items():
        if not {"document", "summary"} <= set(df.columns):
            raise ValueError(f"{preset.dataset} split {k!r} lacks document/summary columns")
    missing = {"train", "test"} - set(frames)
    if missing:
        raise ValueError(f"{preset.dataset} lacks splits {sorted(missing)}")
    return frames["train"], frames["train"], frames["test"]


def _policy_config(preset: Preset):
    from tpo_core import policy as P

    name = preset.policy.split(":", 1)[1]
    configs = {"embedded": P.EMBEDDED, "smoke": P.SMOKE}
    if name not in configs:
        raise ValueError(f"unknown SFT policy {preset.policy!r}; choose one of {sorted('sft:' + c for c in configs)}")
    return configs[name]


def build_sources(preset: Preset, *, model_paths: dict | None = None, progress: bool = False) -> dict:
    """The preset's source rewards by arm name (``preset.sources`` specs, models resolved offline)."""
    from tpo_core.sources import make_source, source_keywords

    model_paths = dict(model_paths or {})
    out = {}
    for arm, spec in preset.sources.items():
        spec = dict(spec)
        kind = spec.pop("kind")
        if "model_path" in spec:
            spec["model_path"], local = _resolve(spec["model_path"], model_paths)
            if not local:
                raise FileNotFoundError(f"source {arm!r}: {spec['model_path']!r} is not a local folder; pass "
                                        "model_paths={hub_id: local_dir} (the Hub is not reachable offline)")
        if "device" in source_keywords(kind):  # on this process's accelerator, where there is one
            spec.setdefault("device", default_device())
        out[arm] = make_source(kind, progress=progress, **spec)
    return out


def build_gold(preset: Preset, *, model_paths: dict | None = None, progress: bool = False):
    """The simulated human: mpnet similarity (``"mpnet"``) or a sequence-classification reward model."""
    from tpo_core.oracle import GoldReward, RewardModelGold

    if preset.gold == "mpnet":
        return GoldReward(progress=progress, autocast_bf16=preset.gold_autocast_bf16, device=default_device())
    path, local = _resolve(preset.gold, dict(model_paths or {}))
    return RewardModelGold(path, local_files_only=local, progress=progress, device=default_device())


def load_study(preset: str | Preset = "embedded", *, results_root: str | Path = "results",
               model_paths: dict | None = None, progress: bool = False, with_models: bool = True,
               sources: str = "all", **overrides) -> Study:
    """Everything a notebook needs for ``preset`` (a name, with optional field ``overrides``, or a Preset).

    Bad input fails before any compute: an unknown preset or source, a missing model file (with the pip
    command that installs it), a checksum mismatch. π_0 ``sft:<config>`` is trained once and cached in
    ``$TPO_CORE_CACHE/policies`` keyed by its config and the SFT data's checksum. ``model_paths`` maps the
    Hub ids of a preset to local folders (how the ``paper`` preset's wiring is tested, and how GPU users
    with a local mirror run it). ``sources``: build ``"all"`` the preset's sources (notebook 01), only its
    ``"arms"`` (the runs), or ``"none"`` (evaluation needs only the human).
    """
    if sources not in ("all", "arms", "none"):
        raise ValueError(f"sources must be 'all', 'arms' or 'none', got {sources!r}")
    from tpo_core.assets import cache_root
    from tpo_core.policy import cache_folder, data_sha256, train_sft

    if isinstance(preset, Preset):
        if overrides:
            preset = replace(preset, **overrides)
        validate(preset)
    else:
        preset = get_preset(preset, **overrides)
    model_paths = dict(model_paths or {})
    sft, online, test = _splits(preset, model_paths)
    if len(online) == 0 or len(test) == 0:
        raise ValueError(f"preset {preset.name!r}: an empty online or test split")
    test = sample_prompts(test, min(preset.n_test_prompts, len(test)), np.random.default_rng(0))
    test = test.reset_index(drop=True)
    wanted = preset
    if sources == "arms" and preset.arms is not None:
        wanted = replace(preset, sources={a: preset.sources[a] for a in preset.arms})
    built = (build_sources(wanted, model_paths=model_paths, progress=progress)
             if with_models and sources != "none" else {})
    gold = build_gold(preset, model_paths=model_paths, progress=progress) if with_models else None
    root = Path(results_root) / preset.name
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"results folder {root} is a file; pass another results_root")
    study = Study(preset, root, online.reset_index(drop=True), test, built, gold, model_paths=model_paths)
    study.data_identity = {"online": data_sha256(study.online),
                           "test": data_sha256(test.assign(document=[preset.prompt_prefix + d for d in test.document]))}
    if preset.policy.startswith("sft:"):
        config = _policy_config(preset)
        cache = cache_root() / "policies"
        train_sft(config, sft, cache_dir=cache, progress=progress)
        study.pi0_dir = cache_folder(cache, config, data_sha256(sft))
        manifest = study.pi0_dir / "manifest.json"
        study.pi0_manifest = json.loads(manifest.read_text()) if manifest.is_file() else {}
        study.pi0_identity = {"weights": read_json(study.pi0_dir / CHECKSUMS)}
    else:
        study.pi0_source, study.pi0_local = _resolve(preset.policy, model_paths)
        study.pi0_identity = {"model": preset.policy}
    root.mkdir(parents=True, exist_ok=True)
    return study


# --------------------------------------------------------------------------------- notebook 01: sources
def pi0_quality(study: Study, *, n_docs: int | None = None, seed: int = 0) -> pd.DataFrame:
    """ROUGE-L F1 (rouge-score, stemmed) and r* of π_0 (greedy and sampled) and the lead-8 baseline.

    On the first ``n_docs`` test prompts (default all of ``study.test``): is π_0 writing
    document-specific synopses, and how far is it from the trivial lead-8-words baseline?
    """
    from rouge_score import rouge_scorer

    p = study.preset
    test = study.test if n_docs is None else study.test.iloc[:n_docs]
    docs, refs = [p.prompt_prefix + d for d in test.document], list(test.summary)
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


def measure_sources(study: Study, *, n_prompts: int = 64, seed: int = 0, progress: bool = False
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each source's quality, measured as the paper ranks them (notebook 01); cached in ``sources.csv``.

    On ``n_prompts`` online prompts, π_0 draws a pool of ``preset.pool_size`` responses and one more
    response (the π_0 competitor). Per source: the mean per-prompt Spearman correlation with r* over the
    pool; the value under r* of its Best-of-N policy (the mean r* of its top-1 response); and that policy's
    win rate against π_0 (ties 1/2). π_0's own value (``value_gold`` of the row ``pi_0``) and an oracle
    Best-of-N under r* itself (``gold-best-of-n``, an upper bound) are added for reference.
    Returns (sources frame, per-prompt frame).
    """
    path = study.root / "sources.csv"
    detail_path = study.root / "source_prompts.csv"
    p = study.preset
    if not isinstance(n_prompts, numbers.Integral) or isinstance(n_prompts, bool) or not 2 <= n_prompts <= len(study.online):
        raise ValueError(f"n_prompts must be an integer in [2, {len(study.online)}], got {n_prompts!r}")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    key = sha256_json({"n_prompts": n_prompts, "seed": seed, "sources": {a: p.sources[a] for a in study.sources},
                       **{f: getattr(p, f) for f in ("pool_size", "temperature", "max_new_tokens", "prompt_prefix")},
                       "pi0": study.pi0_identity, "data": study.data_identity, "gold": study.gold_identity,
                       "code": code_identity("study")})[:16]
    if path.exists() and detail_path.exists():
        df = pd.read_csv(path)
        detail = pd.read_csv(detail_path)
        if "key" in df and (df["key"] == key).all() and "key" in detail and (detail["key"] == key).all():
            return df.drop(columns="key"), detail.drop(columns="key")
        print(f"[tpo_core] {path}: measured with other settings or code, measuring again", flush=True)
    prompts = sample_prompts(study.online, n_prompts, np.random.default_rng([seed, 1]))
    docs = [p.prompt_prefix + d for d in prompts.document]
    refs = list(prompts.summary)
    pol = study.new_pi0()
    gen = torch.Generator().manual_seed(seed)
    pools = pol.sample(docs, p.pool_size, temperature=p.temperature, max_new_tokens=p.max_new_tokens, generator=gen)
    rivals = [r[0] for r in pol.sample(docs, 1, temperature=p.temperature, max_new_tokens=p.max_new_tokens,
                                       generator=gen)]
    rep = lambda xs: [x for x in xs for _ in range(p.pool_size)]  # noqa: E731
    flat = [r for pool in pools for r in pool]
    gold = study.gold.score(rep(docs), flat, rep(refs)).reshape(n_prompts, p.pool_size)
    gold_rival = study.gold.score(docs, rivals, refs)
    rows, detail = [], {"prompt": list(prompts.index), "pi0_gold": gold_rival}
    candidates = dict(study.sources)
    for name in track([*candidates, "gold-best-of-n"], "sources", disable=not progress, unit="source"):
        scores = gold if name == "gold-best-of-n" else np.asarray(
            candidates[name].score(rep(docs), flat, rep(refs))).reshape(n_prompts, p.pool_size)
        top = best_of_n(scores, 1)[:, 0]
        value = gold[np.arange(n_prompts), top]
        rho, n_ok = _mean_spearman(scores, gold)
        rows.append({"source": name, "spearman_gold": rho, "value_gold": float(value.mean()),
                     "win_rate_vs_pi0": float(evaluation.pairwise_outcomes(value, gold_rival).mean()),
                     "n_prompts": n_prompts, "n_prompts_spearman": n_ok})
        detail[f"{name}_gold"] = value
    lead = study.gold.score(docs, [lead_baseline(d) for d in prompts.document], refs)
    detail["lead8_gold"] = lead
    rows.append({"source": "pi_0", "spearman_gold": float("nan"), "value_gold": float(gold_rival.mean()),
                 "win_rate_vs_pi0": 0.5, "n_prompts": n_prompts, "n_prompts_spearman": 0})
    rows.append({"source": "lead-8", "spearman_gold": float("nan"), "value_gold": float(lead.mean()),
                 "win_rate_vs_pi0": float(evaluation.pairwise_outcomes(lead, gold_rival).mean()),
                 "n_prompts": n_prompts, "n_prompts_spearman": 0})
    df = pd.DataFrame(rows)
    write_csv(pd.DataFrame(detail).assign(key=key), detail_path)
    write_csv(df.assign(key=key), path)
    return df, pd.DataFrame(detail)


def choose_worst_best(study: Study) -> tuple[str, str]:
    """The arms of exploit-worst and exploit-best: the preset's, or the lowest/highest measured value."""
    p = study.preset
    if p.worst_source is not None and p.best_source is not None:
        return p.worst_source, p.best_source
    path = study.root / "sources.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run notebook 01 (measure_sources) first")
    df = pd.read_csv(path)
    df = df[df.source.isin(study.arm_names)].sort_values("value_gold")
    if df.empty:
        raise ValueError(f"{path} measures none of the preset's arms {study.arm_names}")
    return p.worst_source or df.source.iloc[0], p.best_source or df.source.iloc[-1]


# ------------------------------------------------------------------------------ notebooks 02-03: runs
def preference_config(preset: Preset, run_spec: Run, seed: int):
    from tpo_core.trainer import PreferenceConfig

    steps = preset.epochs * math.ceil(preset.prompts_per_iteration / preset.batch_size)
    return PreferenceConfig(loss_type="dpo", beta=preset.beta, lr=preset.learning_rate, epochs=preset.epochs,
                            batch_size=per_device_batch(preset.batch_size), grad_accum=1, reference=run_spec.reference,
                            warmup_steps=max(1, round(0.2 * steps)), seed=seed,
                            max_prompt_tokens=preset.max_input_tokens, max_response_tokens=preset.max_new_tokens + 1,
                            progress=False)


#: Preset fields that do not change what iteration k of a run computes (labels, the evaluation's size, the
#: list of seeds, how many iterations follow), or that enter its identity resolved (sources, human, arms).
_NOT_RUN_FIELDS = frozenset({"name", "notes", "offline", "seeds", "n_test_prompts", "n_iterations", "sources",
                             "arms", "gold", "gold_autocast_bf16", "worst_source", "best_source"})


def run_identity(study: Study, name: str, seed: int) -> dict:
    """What run ``name`` for ``seed`` is computed from: its spec and seed, the preset fields a run reads, the
    arms' source specs (and the exploited arm), π_0's weights, the online prompts, the human, and the code
    (:func:`tpo_core.provenance.code_identity`). Recorded in the run folder's ``identity.json``."""
    spec = _run_spec(name)
    exploited = None
    if spec.method in ("exploit-worst", "exploit-best"):
        worst, best = choose_worst_best(study)
        exploited = worst if spec.method == "exploit-worst" else best
    p = study.preset
    return {"run": asdict(spec), "seed": int(seed),
            "preset": {k: v for k, v in p.to_dict().items() if k not in _NOT_RUN_FIELDS},
            "arms": {a: p.sources[a] for a in study.arm_names}, "exploited": exploited,
            "pi0": study.pi0_identity, "online": study.data_identity.get("online"), "gold": study.gold_identity,
            "streams": _streams(), "code": code_identity("study")}


def _streams():
    """How the model calls are batched and where they run, which can change results in the last float bits
    (the random numbers are per prompt either way): ``group_size`` ``None`` (whole chunks, single process)
    or the sharded collection's groups (the same for any number of processes), and the device type."""
    sharding = current()
    return {"group_size": None if sharding is None else sharding.group_size,
            "device": torch.device(default_device()).type}


def _seeds(study: Study, seeds) -> list[int]:
    """``seeds`` (default: the preset's) as a list of distinct integers, or ``ValueError`` before any compute."""
    seeds = list(study.preset.seeds if seeds is None else seeds)
    if not seeds or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"seeds must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds!r}")
    return [int(s) for s in seeds]


def _run_spec(name: str) -> Run:
    if name not in RUNS:
        raise ValueError(f"unknown run {name!r}; choose one of {sorted(RUNS)}")
    return RUNS[name]


def _claim_run_dir(out_dir: Path, identity: dict) -> None:
    """Make ``out_dir`` hold results of ``identity`` only: a folder made with other settings or code is emptied
    (saying what changed) before ``identity.json`` is written, so nothing stale is ever resumed."""
    import shutil

    path = out_dir / "identity.json"
    recorded = read_json(path)
    if recorded == canonical(identity):
        return
    if out_dir.is_dir() and any(out_dir.iterdir()):
        why = (describe_changes(recorded, identity) if isinstance(recorded, dict)
               else "it has no identity.json (an older version of tpo_core, or an interrupted start)")
        print(f"[tpo_core] {out_dir} was made from other settings or code ({why}): removed, recomputing",
              flush=True)
        shutil.rmtree(out_dir)
    write_atomic(path, json.dumps(canonical(identity), indent=1, sort_keys=True) + "\n")


def _share_first_iteration(study: Study, name: str, spec: Run, identity: dict, out_dir: Path) -> None:
    """Reuse TPO's finished iteration 1 for a variant whose iteration 1 is the same computation.

    With ``reference="initial"`` the reference of iteration 1 is π_0, which is also the previous iterate;
    with ``carry_stats`` nothing is carried into iteration 1. Same seed, same prompts, same selector: the
    first iteration is TPO's own, so its checkpoint, records and selector state are copied, not recomputed
    -- only when TPO's run folder was made from the same identity (but for the run spec).
    """
    import shutil

    base = RUNS["tpo"]
    if name == "tpo" or spec.method != "tpo" or spec.selector != base.selector:
        return
    src = study.run_dir("tpo", identity["seed"])
    if read_json(src / "identity.json") != canonical({**identity, "run": asdict(base)}):
        return
    files = [src / "iter_1", src / "records_iter_1.csv", src / "selector_state_iter_1.json"]
    if (out_dir / "iter_1").exists() or not all(f.exists() for f in files):
        return
    shutil.copy2(files[1], out_dir / files[1].name)
    shutil.copy2(files[2], out_dir / files[2].name)
    tmp = out_dir / ".iter_1.copy"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(files[0], tmp)
    os.replace(tmp, out_dir / "iter_1")  # the checkpoint appears last, whole


def run(study: Study, name: str, seed: int, *, progress: bool = False) -> dict[str, pd.DataFrame]:
    """All iterations of run ``name`` (:data:`RUNS`) for ``seed``; resumes from its checkpoints.

    Resumes only a run folder made from the same :func:`run_identity`; one made from other settings or
    code is recomputed from scratch (a message names the fields that changed).
    """
    from tpo_core.trainer import PreferenceTrainer

    spec = _run_spec(name)
    _seeds(study, [seed])
    if not study.arms:
        raise ValueError("this study was loaded without its sources (sources='none'); load it with 'arms'")
    worst = best = None
    if spec.method in ("exploit-worst", "exploit-best"):
        worst, best = choose_worst_best(study)
    out_dir = study.run_dir(name, seed)
    identity = run_identity(study, name, seed)

    on_main(_claim_run_dir, out_dir, identity)  # sharded: the main process clears or claims the folder
    pol = study.new_pi0()
    # with reference="initial" the trainer keeps a frozen copy of the model as given: pi_0, since the
    # trainer is built before run_method loads any finished iteration
    trainer = PreferenceTrainer(pol.model, pol.encode, preference_config(study.preset, spec, seed))
    on_main(_share_first_iteration, study, name, spec, identity, out_dir)  # sharded: the main process copies
    result = run_method(spec.method, pol, trainer, preset=study.preset, prompts_df=study.online,
                        sources=study.arms, gold=study.gold, seed=seed, out_dir=out_dir, worst=worst,
                        best=best, selector_policy=spec.selector, carry_stats=spec.carry_stats,
                        progress=progress)
    result["arms"]["method"] = name
    write_csv(result["arms"], out_dir / "arms.csv")
    return result


def run_all(study: Study, names, seeds=None, *, progress: bool = True) -> pd.DataFrame:
    """:func:`run` for every run name and seed (default: the preset's seeds); merges ``arms.csv``.

    ``results/<preset>/arms.csv`` keeps the rows of runs not in ``names`` (notebooks 02 and 03 each add
    theirs). Returns this call's arms rows.
    """
    names = list(names)
    for n in names:
        _run_spec(n)
    seeds = _seeds(study, seeds)
    jobs = [(n, s) for n in names for s in seeds]
    frames = []
    for n, s in track(jobs, "runs", disable=not progress, unit="run"):
        frames.append(run(study, n, s)["arms"])
    arms = pd.concat(frames, ignore_index=True)
    path = study.root / "arms.csv"
    old = pd.read_csv(path, dtype={"arm": str}) if path.exists() else None
    if old is not None:
        old = old[~old.method.isin(names)]
        arms_all = pd.concat([old, arms], ignore_index=True)
    else:
        arms_all = arms
    write_csv(arms_all[["method", "seed", "iteration", "arm", "pulls", "wins"]], path)
    return arms[["method", "seed", "iteration", "arm", "pulls", "wins"]]


def _gather(study: Study, names, seeds, pattern: str, **read_kw) -> pd.DataFrame:
    """Concatenate the CSV files matching ``pattern`` in each run's folder, with method and seed columns."""
    seeds = list(study.preset.seeds if seeds is None else seeds)
    frames = [pd.read_csv(f, **read_kw).assign(method=n, seed=s)
              for n in names for s in seeds for f in sorted(study.run_dir(n, s).glob(pattern))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def training_logs(study: Study, names, seeds=None) -> pd.DataFrame:
    """The per-step trainer logs of every finished iteration (method and seed columns added)."""
    return _gather(study, names, seeds, "iter_*/logs.csv")


def records(study: Study, names, seeds=None) -> pd.DataFrame:
    """The per-prompt records (arm, win, gold of the best and worst candidate) of every finished iteration."""
    return _gather(study, names, seeds, "records_iter_*.csv", dtype={"arm": str})


# ------------------------------------------------------------------------------- notebook 04: evaluation
def gold_on_test(policy, documents, references, *, gold, seed: int, temperature: float,
                 max_new_tokens: int | None) -> np.ndarray:
    """Gold reward of one sampled response per test prompt, shape ``(len(documents),)``.

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
    sharding = current()
    idx = list(range(len(documents)))
    size = len(idx) if sharding is None else sharding.group_size
    local = []
    for group in deal([idx[j:j + size] for j in range(0, len(idx), size)]):
        resp = [r[0] for r in policy.sample([documents[i] for i in group], 1, temperature=temperature,
                                            max_new_tokens=max_new_tokens,
                                            generator=prompt_streams(seed, group, EVAL))]
        scores = gold.score([documents[i] for i in group], resp, [references[i] for i in group])
        local += [(i, float(v)) for i, v in zip(group, np.asarray(scores, dtype=float))]
    out = dict(gather(local))
    if sorted(out) != idx:
        raise RuntimeError("gathered evaluation does not cover every test prompt once")
    return np.array([out[i] for i in idx], dtype=float)


def _gold_on_test(study: Study, policy, seed: int) -> np.ndarray:
    """:func:`gold_on_test` on the study's test prompts at the preset's sampling settings."""
    p = study.preset
    return gold_on_test(policy, [p.prompt_prefix + d for d in study.test.document], list(study.test.summary),
                        gold=study.gold, seed=10_000 + int(seed), temperature=p.temperature,
                        max_new_tokens=p.max_new_tokens)


def _eval_path(study: Study, name: str, seed: int) -> Path:
    return study.root / "eval" / name / f"seed_{seed}.csv"


def eval_key(study: Study, seed: int) -> str:
    """Key of the evaluation settings for ``seed``: test prompts, sampling, human and code (16 hex digits)."""
    p = study.preset
    return sha256_json({"test": study.data_identity.get("test"), "temperature": p.temperature,
                        "max_new_tokens": p.max_new_tokens, "seed": int(seed), "gold": study.gold_identity,
                        "streams": _streams(), "code": code_identity("study")})[:16]


def _checkpoint_id(folder: Path) -> str | None:
    """Content id of a checkpoint folder: the digest of its ``checksums.json`` (None when it has none)."""
    sums = read_json(folder / CHECKSUMS)
    return sha256_json(sums)[:16] if isinstance(sums, dict) and sums else None


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
    g = _gold_on_test(study, policy, seed)
    return pd.DataFrame({"seed": seed, "iteration": iteration, "prompt": np.arange(len(g)), "gold": g,
                         "checkpoint": checkpoint, "eval_key": key})


def evaluate_pi0(study: Study, seeds) -> pd.DataFrame:
    """π_0's test gold rewards for each evaluation seed, cached (columns seed, iteration 0, prompt, gold,
    checkpoint, eval_key); recomputed when π_0 or the evaluation settings change."""
    frames, ck = [], sha256_json(study.pi0_identity)[:16]
    for s in seeds:
        path, key = _eval_path(study, "pi_0", s), eval_key(study, s)
        rows = _cached_rows(_read_eval(path), 0, ck, key, len(study.test))
        if rows is None:
            rows = _evaluate(study, study.new_pi0(), s, 0, ck, key)
            write_csv(rows, path)
        frames.append(rows)
    return pd.concat(frames, ignore_index=True)


def check_run(study: Study, name: str, seed: int) -> None:
    """Raise :class:`~tpo_core.provenance.StaleResultError` unless the folder of run ``name``/``seed`` was made
    from this study's :func:`run_identity` (the message names what changed and how to recompute)."""
    out_dir = study.run_dir(name, seed)
    recorded, wanted = read_json(out_dir / "identity.json"), run_identity(study, name, seed)
    if recorded != canonical(wanted):
        why = (describe_changes(recorded, wanted) if isinstance(recorded, dict)
               else "it has no identity.json (made by an older version of tpo_core)")
        raise StaleResultError(f"run {name!r} seed {seed} in {out_dir} was trained from other settings or code "
                               f"({why}); rerun it first (tpo_core.study.run, notebooks 02-03)")


def evaluate_run(study: Study, name: str, seeds=None, *, progress: bool = False) -> pd.DataFrame:
    """Test gold rewards of every finished iteration of run ``name`` (columns seed, iteration, prompt, gold,
    checkpoint, eval_key).

    The run must have been trained from this study's settings (:func:`check_run`). Cached per seed in
    ``eval/<run>/seed_<s>.csv``: an iteration's rows are reused only when they judged the very checkpoint
    now on disk (the sha256 of its weights) under the same evaluation settings (:func:`eval_key`), else it
    is evaluated again (weights verified before loading). A checkpoint identical to TPO's (the shared first
    iteration of some ablations) reuses TPO's rows: the weights' hash decides, not the run's name.
    """
    seeds = _seeds(study, seeds)
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
            ck = _checkpoint_id(out_dir / f"iter_{k}")
            got = _cached_rows(old, k, ck, key, len(study.test))
            if got is None:
                got = _cached_rows(tpo, k, ck, key, len(study.test))
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
    """Gold rewards of one iteration as (n_seeds, n_prompts), seeds in ``seeds`` order."""
    sub = df[df.iteration == iteration]
    rows = []
    for s in seeds:
        g = sub[sub.seed == s].sort_values("prompt").gold.to_numpy()
        if g.size == 0:
            raise ValueError(f"no evaluation for seed {s} at iteration {iteration}: run that seed first")
        rows.append(g)
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
