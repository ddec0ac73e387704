"""The runs of the study (notebooks 02-03; paper Alg. 3): a *run* is a method plus its settings, the paper's
four methods and the ablations of :data:`RUNS`. :func:`run` trains one run for one seed, resumably, in
``results/<preset>/runs/<run>/<key>/seed_<s>/`` (:func:`run_dir`), where ``<key>`` is the key of what made it
(:func:`run_identity` but the seed; ``identity.json`` records it). Other settings or code write beside, under
their own key; going back to earlier settings finds their folder again. Nothing finished is deleted here
(``python -m tpo_core.commands.prune`` lists and removes what no current setting uses)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from tpo_core.tpo.empirical import CONTROL, OnlineBatch, score_online
from tpo_core.world.presets import Preset, learning_rate, seeds_of
from tpo_core.study.run_loop import run_method
from tpo_core.tpo.selection import ORACLE_ARM
from tpo_core.plumbing.progress import track
from tpo_core.plumbing.sharding import on_main, per_device_batch
from tpo_core.plumbing.streams import iteration_seed
from tpo_core.plumbing.provenance import (StaleResultError, canonical, claim_keyed_dir, code_identity, describe_changes,
                                 publish_dir, read_json, result_key, write_atomic, write_csv)

from tpo_core.study.loading import Study, check_seeds
from tpo_core.world.sources import source_identity

__all__ = ["RUNS", "Run", "run_seeds", "preference_config", "run_identity", "run_key", "run_dir", "first_online_identity",
           "first_online_dir", "first_online", "run",
           "run_all",
           "check_run", "run_seconds", "training_logs", "records", "pairs", "choose_worst_best"]


@dataclass(frozen=True)
class Run:
    """One method with its settings: the unit that gets seeds, checkpoints and an evaluation."""

    method: str
    """One of :data:`tpo_core.tpo.empirical.METHODS`."""
    reference: str = "previous"
    """``"previous"``: π_ref = the iterate entering the iteration (the authors); ``"initial"``: π_0."""
    selector: str = "paper-ucb"
    """TPO's arm selector (:class:`tpo_core.tpo.selection.TransferSelector` policy)."""
    carry_stats: bool = False
    """Keep the selector's statistics across iterations (the authors reset them)."""
    loss: str = "dpo"
    """The preference loss, Alg_PO of Alg. 3: ``"dpo"`` (§6.1) or ``"ipo"`` (App. I.2, Table 2); its learning
    rate is the preset's for that loss (:func:`tpo_core.world.presets.learning_rate`)."""


#: The paper's four methods, the positive control and the ablations beyond the paper, by run name.
RUNS: dict[str, Run] = {
    "tpo": Run("tpo"),
    "no-transfer": Run("no-transfer"),
    "exploit-worst": Run("exploit-worst"),
    "exploit-best": Run("exploit-best"),
    CONTROL: Run(CONTROL),
    "tpo-ref-initial": Run("tpo", reference="initial"),
    "tpo-thompson": Run("tpo", selector="thompson"),
    "tpo-carried": Run("tpo", carry_stats=True),
    "tpo-ipo": Run("tpo", loss="ipo"),
    "no-transfer-ipo": Run("no-transfer", loss="ipo"),
}


def preference_config(preset: Preset, run_spec: Run, seed: int, sharding=None):
    """The trainer's configuration of a run: the preset's loss settings, its global batch split over the processes
    of ``sharding`` (:func:`tpo_core.plumbing.sharding.per_device_batch`), warm-up over the first 20% of steps."""
    from tpo_core.tpo.trainer import PreferenceConfig

    steps = preset.epochs * math.ceil(preset.prompts_per_iteration / preset.batch_size)
    return PreferenceConfig(loss_type=run_spec.loss, beta=preset.beta, lr=learning_rate(preset, run_spec.loss),
                            epochs=preset.epochs,
                            batch_size=per_device_batch(sharding, preset.batch_size), grad_accum=1, reference=run_spec.reference,
                            warmup_steps=max(1, round(0.2 * steps)), seed=seed,
                            max_prompt_tokens=preset.max_input_tokens, max_response_tokens=preset.max_new_tokens + 1,
                            progress=False)


def choose_worst_best(study: Study) -> tuple[str, str]:
    """The arms of exploit-worst and exploit-best: the preset's, or the arms of lowest and highest value under r*
    in ``sources.csv`` (written by :func:`tpo_core.study.source_measurement.measure_sources`, notebook 01)."""
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


#: Preset fields that do not change what iteration k of a run computes (labels, the evaluation's size, the
#: list of seeds, how many iterations follow), or that enter its identity resolved (sources, human, arms, and
#: the learning rates: ``learning_rate`` holds the rate of the run's own loss, so a DPO run does not depend on
#: ``ipo_learning_rate``).
_NOT_RUN_FIELDS = frozenset({"name", "notes", "offline", "seeds", "secondary_seeds", "control_seeds", "n_test_prompts",
                             "eval_samples",
                             "n_iterations", "sources",
                             "arms", "gold", "gold_autocast_bf16", "worst_source", "best_source",
                             "ipo_learning_rate"})


def run_identity(study: Study, name: str, seed: int) -> dict:
    """What run ``name`` for ``seed`` is computed from: its spec and seed, the preset fields a run reads, the
    arms' source specs (and the exploited arm), π_0's weights, the online prompts, the human, and the code
    (:func:`tpo_core.plumbing.provenance.code_identity`). Recorded in the run folder's ``identity.json``."""
    spec = _run_spec(name)
    exploited = ORACLE_ARM if spec.method == CONTROL else None
    if spec.method in ("exploit-worst", "exploit-best"):
        worst, best = choose_worst_best(study)
        exploited = worst if spec.method == "exploit-worst" else best
    p = study.preset
    return {"run": asdict(spec), "seed": None if seed is None else int(seed),
            "preset": {**{k: v for k, v in p.to_dict().items() if k not in _NOT_RUN_FIELDS},
                       "learning_rate": learning_rate(p, spec.loss)},
            "arms": {a: source_identity(p.sources[a]) for a in study.arm_names}, "exploited": exploited,
            "pi0": study.pi0_identity, "online": study.data_identity.get("online"), "gold": study.gold_identity,
            "streams": study.batching, "code": code_identity("study.runs")}


def run_key(study: Study, name: str) -> str:
    """The key of run ``name``'s settings in this study: :func:`run_identity` for every seed (16 hex digits)."""
    return result_key(run_identity(study, name, None))


def run_dir(study: Study, name: str, seed: int) -> Path:
    """The folder of run ``name`` for ``seed``: ``results/<preset>/runs/<run>/<run_key>/seed_<s>``."""
    return study.root / "runs" / name / run_key(study, name) / f"seed_{int(seed)}"


#: Preset fields that decide iteration 1's online responses and their human scores (with π_0, the data,
#: the human, the batching and the code).
_FIRST_ONLINE_FIELDS = ("prompts_per_iteration", "prompt_prefix", "prompt_suffix", "n_candidates", "temperature",
                        "max_new_tokens", "max_input_tokens")


def first_online_identity(study: Study, seed: int) -> dict:
    """What iteration 1's shared online batch for ``seed`` is computed from: π_0, the online prompts and
    the preset fields that draw them, the human, the batching and the code -- not the method."""
    p = study.preset.to_dict()
    return {"seed": None if seed is None else int(seed), "preset": {k: p[k] for k in _FIRST_ONLINE_FIELDS}, "pi0": study.pi0_identity,
            "online": study.data_identity.get("online"), "gold": study.gold_identity, "streams": study.batching,
            "code": code_identity("study.runs")}


def first_online_dir(study: Study) -> Path:
    """``results/<preset>/shared/<key>``: the folder of iteration 1's shared batches under this study's settings
    (the key of :func:`first_online_identity` for every seed), one ``seed_<s>.json`` a seed."""
    return study.root / "shared" / result_key(first_online_identity(study, None))


def first_online(study: Study, seed: int, policy, documents, references, *, progress: bool = False) -> OnlineBatch:
    """Iteration 1's online responses and their human scores for ``seed``: every method starts from π_0 on the
    same prompts with the same random streams, so they are computed once per seed
    (:func:`tpo_core.tpo.empirical.score_online`) and shared by every run, from
    ``results/<preset>/shared/<key>/seed_<s>.json`` (:func:`first_online_dir`), reused only when
    :func:`first_online_identity` matches (``policy`` must be π_0; ``documents``/``references``: iteration 1's
    prompts)."""
    path = first_online_dir(study) / f"seed_{int(seed)}.json"
    identity = canonical(first_online_identity(study, seed))
    cached = read_json(path)
    if isinstance(cached, dict) and cached.get("identity") == identity:
        return OnlineBatch.from_json(cached["batch"])
    p = study.preset
    batch = score_online(policy, documents, references, gold=study.gold, n_candidates=p.n_candidates,
                         seed=iteration_seed(seed, 1), temperature=p.temperature, max_new_tokens=p.max_new_tokens,
                         progress=progress, sharding=study.sharding)
    on_main(study.sharding, write_atomic, path, json.dumps({"identity": identity, "batch": batch.to_json()}) + "\n")
    return batch


def run_seeds(study: Study, name: str) -> list[int]:
    """The seeds run ``name`` trains on by default: every seed of the preset, but the first ``control_seeds`` for
    the positive control and the first ``secondary_seeds`` for the exploit baselines, and for variants of them
    (:func:`tpo_core.world.presets.seeds_of`)."""
    return list(seeds_of(study.preset, _run_spec(name).method))


def _run_spec(name: str) -> Run:
    if name not in RUNS:
        raise ValueError(f"unknown run {name!r}; choose one of {sorted(RUNS)}")
    return RUNS[name]


def _claim_run_dir(out_dir: Path, identity: dict) -> None:
    """Make the key folder and ``out_dir`` (its seed folder) record what they hold: the settings for every seed,
    and ``identity`` (:func:`tpo_core.plumbing.provenance.claim_keyed_dir`; nothing is ever emptied)."""
    claim_keyed_dir(out_dir.parent, {**identity, "seed": None})
    claim_keyed_dir(out_dir, identity)


def _share_first_iteration(study: Study, name: str, spec: Run, identity: dict, out_dir: Path) -> None:
    """Reuse TPO's finished iteration 1 for a variant whose iteration 1 is the same computation.

    With ``reference="initial"`` the reference of iteration 1 is π_0, which is also the previous iterate;
    with ``carry_stats`` nothing is carried into iteration 1. Same seed, same prompts, same selector: the
    first iteration is TPO's own, so its checkpoint, records and selector state are copied, not recomputed
    -- only when TPO's run folder was made from the same identity (but for the run spec).
    """
    import shutil

    base = RUNS["tpo"]
    if name == "tpo" or spec.method != "tpo" or spec.selector != base.selector or spec.loss != base.loss:
        return
    src = run_dir(study, "tpo", identity["seed"])
    if read_json(src / "identity.json") != canonical({**identity, "run": asdict(base)}):
        return
    files = [src / "iter_1", src / "records_iter_1.csv", src / "selector_state_iter_1.json", src / "pairs_iter_1.csv"]
    if (out_dir / "iter_1").exists() or not all(f.exists() for f in files):
        return
    for f in files[1:]:
        shutil.copy2(f, out_dir / f.name)
    # the copied iteration cost nothing here: TPO's run_seconds already counts it
    write_atomic(out_dir / "timing_iter_1.json", json.dumps({"seconds": 0.0, "shared_from": "tpo"}) + "\n")
    with publish_dir(out_dir / "iter_1", clear_leftovers=True) as tmp:  # the checkpoint appears last, whole
        shutil.copytree(files[0], tmp, dirs_exist_ok=True)


def run(study: Study, name: str, seed: int, *, progress: bool = False) -> dict[str, pd.DataFrame]:
    """All iterations of run ``name`` (:data:`RUNS`) for ``seed``; resumes from its checkpoints.

    Resumes only a run folder made from the same :func:`run_identity`; one made from other settings or
    code is recomputed from scratch (a message names the fields that changed).
    """
    from tpo_core.tpo.trainer import PreferenceTrainer

    spec = _run_spec(name)
    check_seeds(study, [seed])
    if not study.arms:
        raise ValueError("this study was loaded without its sources (sources='none'); load it with 'arms'")
    worst = best = None
    if spec.method in ("exploit-worst", "exploit-best"):
        worst, best = choose_worst_best(study)
    out_dir = run_dir(study, name, seed)
    identity = run_identity(study, name, seed)

    on_main(study.sharding, _claim_run_dir, out_dir, identity)  # sharded: the main process clears or claims the folder
    pol = study.new_pi0()
    # with reference="initial" the trainer keeps a frozen copy of the model as given: pi_0, since the
    # trainer is built before run_method loads any finished iteration
    trainer = PreferenceTrainer(pol.model, pol.encode, preference_config(study.preset, spec, seed, study.sharding))
    on_main(study.sharding, _share_first_iteration, study, name, spec, identity, out_dir)  # sharded: the main process copies
    # the positive control's source is the human itself: its Best-of-N pool is ranked by r*
    sources = {**study.arms, ORACLE_ARM: study.gold} if spec.method == CONTROL else study.arms
    result = run_method(spec.method, pol, trainer, preset=study.preset, prompts_df=study.online,
                        sources=sources, gold=study.gold, seed=seed, out_dir=out_dir, worst=worst,
                        best=best, selector_policy=spec.selector, carry_stats=spec.carry_stats,
                        first_online=lambda docs, refs: first_online(study, seed, pol, docs, refs, progress=progress),
                        progress=progress, sharding=study.sharding)
    result["arms"]["method"] = name
    write_csv(result["arms"], out_dir / "arms.csv", study.sharding)
    return result


def run_all(study: Study, names, seeds=None, *, progress: bool = True) -> pd.DataFrame:
    """:func:`run` for every run name and seed (default: each run's :func:`run_seeds`); merges ``arms.csv``.

    ``results/<preset>/arms.csv`` keeps the rows of runs not in ``names`` (notebooks 02 and 03 each add
    theirs) while their run folders still match this study (:func:`check_run`): the rows of a run made from
    other settings or code, or of one no longer known, are dropped. Returns this call's arms rows.
    """
    names = list(names)
    for n in names:
        _run_spec(n)
    jobs = [(n, s) for n in names for s in check_seeds(study, run_seeds(study, n) if seeds is None else seeds)]
    frames = []
    for n, s in track(jobs, "runs", disable=not progress, unit="run"):
        frames.append(run(study, n, s)["arms"])
    arms = pd.concat(frames, ignore_index=True)
    path = study.root / "arms.csv"
    old = pd.read_csv(path, dtype={"arm": str}) if path.exists() else None
    if old is not None:
        old = old[~old.method.isin(names)]
        current = {(m, int(sd)) for m, sd in old[["method", "seed"]].drop_duplicates().itertuples(index=False)
                   if _is_current(study, m, int(sd))}
        old = old[[(m, int(sd)) in current for m, sd in zip(old.method, old.seed)]]
        arms_all = pd.concat([old, arms], ignore_index=True)
    else:
        arms_all = arms
    write_csv(arms_all[["method", "seed", "iteration", "arm", "pulls", "wins"]], path, study.sharding)
    return arms[["method", "seed", "iteration", "arm", "pulls", "wins"]]


def _is_current(study: Study, name: str, seed: int) -> bool:
    """Whether run ``name``/``seed`` is a known run whose folder matches this study (:func:`check_run`)."""
    try:
        check_run(study, name, seed)
    except (StaleResultError, ValueError, FileNotFoundError):
        return False
    return True


def run_seconds(study: Study, name: str, seed: int) -> float:
    """Wall seconds that computing run ``name`` for ``seed`` took, summed over its iterations
    (``timing_iter_k.json``, written as each iteration's checkpoint lands), so a run loaded from its folder
    still reports what it cost. An iteration copied from TPO's run (:func:`_share_first_iteration`) counts 0,
    and iteration 1's shared online batch is counted by the run that computed it: summed over a seed's runs,
    each second is counted once. NaN when an iteration is unfinished or has no timing."""
    out_dir = run_dir(study, name, seed)
    total = 0.0
    for k in range(1, study.preset.n_iterations + 1):
        timing = read_json(out_dir / f"timing_iter_{k}.json")
        if not (out_dir / f"iter_{k}").is_dir() or not isinstance(timing, dict):
            return float("nan")
        total += float(timing["seconds"])
    return total


def _gather(study: Study, names, seeds, pattern: str, **read_kw) -> pd.DataFrame:
    """Concatenate the CSV files matching ``pattern`` in each run's folder, with method and seed columns."""
    seeds = list(study.preset.seeds if seeds is None else seeds)
    frames = [pd.read_csv(f, **read_kw).assign(method=n, seed=s)
              for n in names for s in seeds for f in sorted(run_dir(study, n, s).glob(pattern))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def training_logs(study: Study, names, seeds=None) -> pd.DataFrame:
    """The per-step trainer logs of every finished iteration (method and seed columns added)."""
    return _gather(study, names, seeds, "iter_*/logs.csv")


def pairs(study: Study, names, seeds=None) -> pd.DataFrame:
    """The preference pairs of every finished iteration (iteration, prompt_idx, chosen_transferred, chosen,
    rejected; method and seed columns added)."""
    return _gather(study, names, seeds, "pairs_iter_*.csv", keep_default_na=False)


def records(study: Study, names, seeds=None) -> pd.DataFrame:
    """The per-prompt records (arm, win, gold of the best and worst candidate) of every finished iteration."""
    return _gather(study, names, seeds, "records_iter_*.csv", dtype={"arm": str})


def check_run(study: Study, name: str, seed: int) -> None:
    """Raise :class:`~tpo_core.plumbing.provenance.StaleResultError` unless run ``name``/``seed`` was trained from this
    study's :func:`run_identity` (its folder under :func:`run_key`); the message names how the settings of the
    run's other folders differ, and how to train it."""
    out_dir = run_dir(study, name, seed)
    wanted = run_identity(study, name, seed)
    if read_json(out_dir / "identity.json") == canonical(wanted):
        return
    others = [(d.name, read_json(d / "identity.json")) for d in sorted(out_dir.parent.parent.glob("*/"))
              if d != out_dir.parent and (d / f"seed_{int(seed)}" / "identity.json").is_file()]
    seen = "; ".join(f"{key}: {describe_changes(rec, {**wanted, 'seed': None}, limit=3)}" for key, rec in others
                     if isinstance(rec, dict))
    raise StaleResultError(f"run {name!r} seed {seed} was never trained from these settings (no {out_dir})"
                           + (f"; it was from others ({seen})" if seen else "")
                           + "; train it first (tpo_core.study.pipeline.run, notebooks 02-03)")
