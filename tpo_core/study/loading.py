"""Loading the language-model study of a preset (paper §5-6): the data splits, π_0 (trained once and cached),
the source rewards and the simulated human (:func:`load_study`), and the small identities every later step
keys its results by."""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch

from tpo_core.plumbing.common import cache_root, default_device
from tpo_core.world.data import reserve_and_test
from tpo_core.world.presets import Preset, get_preset, validate
from tpo_core.plumbing.sharding import Sharding, resolve
from tpo_core.plumbing.streams import check_disjoint
from tpo_core.plumbing.provenance import CHECKSUMS, read_json

__all__ = ["Study", "load_study", "build_sources", "build_gold", "check_seeds", "batching_identity"]


@dataclass
class Study:
    """A preset's data, starting policy, sources and simulated human, and its results folder."""

    preset: Preset
    root: Path
    """``results/<preset>``."""
    online: pd.DataFrame
    """Online prompts (documents and reference summaries)."""
    test: pd.DataFrame
    """Held-out prompts of the win-rate evaluation (the first ``n_test_prompts`` of a fixed shuffle of the test
    split outside the reserve, :func:`tpo_core.world.data.reserve_and_test`)."""
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
    sharding: Sharding | None = None
    """How this study's model calls are split over the processes of a launch (:mod:`tpo_core.plumbing.sharding`):
    passed to :func:`load_study`; ``None``, one process (or, in a multi-process launch, ``Sharding()``)."""
    held_out: pd.DataFrame = field(default_factory=pd.DataFrame)
    """The test split's reserve (:func:`tpo_core.world.data.reserve_and_test`): whole groups set aside by a fixed
    shuffle, in random order, no document of :attr:`test` among them whatever ``n_test_prompts`` is. The
    prompts of the tuning protocol (:mod:`tpo_core.study.tuning`) and the pilot (:mod:`tpo_core.study.pilot`); never
    reported."""

    def new_pi0(self):
        """A fresh copy of π_0 (each run trains its own)."""
        from tpo_core.world.policy import Policy

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
        """What the simulated human is: the preset's ``gold`` and, for mpnet, whether it runs in bf16; for a reward
        model, also how many texts it scores per call (padding changes the last float bits)."""
        ident = {"gold": self.preset.gold, "bf16": getattr(self.gold, "autocast_bf16", None)
                 if self.gold is not None else _resolved_bf16(self.preset)}
        if self.preset.gold != "mpnet":  # the same whether or not the models were loaded (prune loads none)
            from tpo_core.world.oracle import REWARD_MODEL_BATCH

            ident["batch_size"] = REWARD_MODEL_BATCH
        return ident

    @property
    def batching(self) -> dict:
        """:func:`batching_identity` of this study's sharding (how model calls are batched and where they run)."""
        return batching_identity(self.sharding)



def _resolved_bf16(preset: Preset):
    """``Preset.gold_autocast_bf16`` as the mpnet human resolves it on this machine (None for another human)."""
    if preset.gold != "mpnet":
        return None
    if preset.gold_autocast_bf16 == "auto":
        from tpo_core.world.oracle import native_bf16

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
        from tpo_core.world.data import load_debian

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
    from tpo_core.world import policy_config as P

    name = preset.policy.split(":", 1)[1]
    configs = {"embedded": P.EMBEDDED, "smoke": P.SMOKE}
    if name not in configs:
        raise ValueError(f"unknown SFT policy {preset.policy!r}; choose one of {sorted('sft:' + c for c in configs)}")
    return configs[name]


def _causal_pi0(preset: Preset, sft: pd.DataFrame, progress: bool) -> Path:
    """The folder of a causal π_0 (``sft-llm:<name>``): the pretrained LM fine-tuned once on the SFT split's
    prompts, formatted as the preset formats every prompt (:func:`tpo_core.world.causal_sft.ensure_causal_sft`)."""
    from tpo_core.world.causal_sft import CAUSAL_SFT, ensure_causal_sft
    from tpo_core.world.llm_assets import ensure_llm

    name = preset.policy.split(":", 1)[1]
    if name not in CAUSAL_SFT:
        raise ValueError(f"unknown causal SFT policy {preset.policy!r}; choose one of "
                         f"{sorted('sft-llm:' + c for c in CAUSAL_SFT)}")
    config, cache = CAUSAL_SFT[name], cache_root() / "policies"
    base = ensure_llm(config.asset, progress=progress)
    return ensure_causal_sft(config, base, preset.prompts(sft.document), list(sft.summary), cache_dir=cache,
                             device=default_device())


def build_sources(preset: Preset, *, model_paths: dict | None = None, progress: bool = False) -> dict:
    """The preset's source rewards by arm name (``preset.sources`` specs, models resolved offline)."""
    from tpo_core.world.sources import make_source, source_keywords

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
    from tpo_core.world.oracle import GoldReward, RewardModelGold

    if preset.gold == "mpnet":
        return GoldReward(progress=progress, autocast_bf16=preset.gold_autocast_bf16, device=default_device())
    path, local = _resolve(preset.gold, dict(model_paths or {}))
    return RewardModelGold(path, local_files_only=local, progress=progress, device=default_device())


def load_study(preset: str | Preset = "embedded", *, results_root: str | Path = "results",
               model_paths: dict | None = None, progress: bool = False, with_models: bool = True,
               sources: str = "all", sharding: Sharding | None = None, group_size: int | None = None,
               **overrides) -> Study:
    """Everything a notebook needs for ``preset`` (a name, with optional field ``overrides``, or a Preset).

    Bad input fails before any compute: an unknown preset or source, a missing model file (with the pip
    command that installs it), a checksum mismatch. π_0 ``sft:<config>`` is trained once and cached in
    ``$TPO_CORE_CACHE/policies`` keyed by its config and the SFT data's checksum. ``model_paths`` maps the
    Hub ids of a preset to local folders (how the ``paper`` preset's wiring is tested, and how GPU users
    with a local mirror run it). ``sources``: build ``"all"`` the preset's sources (notebook 01), only its
    ``"arms"`` (the runs), or ``"none"`` (evaluation needs only the human). ``seeds=None`` among the
    ``overrides`` means the preset's own seeds (a notebook's ``seeds`` parameter passes through as it is).
    ``sharding``: how a launch splits the work (:class:`~tpo_core.plumbing.sharding.Sharding`, what ``accelerate
    launch -m tpo_core.commands.distributed`` passes); it is part of the runs' and evaluations' keys.
    ``group_size``: read (and, where missing, compute) results as a launch with ``--group-size`` does, in this one
    process (``Sharding(group_size)``): how a notebook finds the runs and evaluations of ``accelerate launch``.
    """
    if group_size is not None:
        if sharding is not None:
            raise ValueError("pass sharding or group_size, not both")
        sharding = Sharding(group_size)
    if "seeds" in overrides and overrides["seeds"] is None:
        del overrides["seeds"]
    if sources not in ("all", "arms", "none"):
        raise ValueError(f"sources must be 'all', 'arms' or 'none', got {sources!r}")
    from tpo_core.plumbing.common import cache_root
    from tpo_core.world.sft import cache_folder, data_sha256, train_sft

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
    held_out, test = reserve_and_test(test, preset.n_test_prompts)
    wanted = preset
    if sources == "arms" and preset.arms is not None:
        wanted = replace(preset, sources={a: preset.sources[a] for a in preset.arms})
    built = (build_sources(wanted, model_paths=model_paths, progress=progress)
             if with_models and sources != "none" else {})
    gold = build_gold(preset, model_paths=model_paths, progress=progress) if with_models else None
    root = Path(results_root) / preset.name
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"results folder {root} is a file; pass another results_root")
    study = Study(preset, root, online.reset_index(drop=True), test, built, gold, model_paths=model_paths,
                  sharding=resolve(sharding), held_out=held_out)
    study.data_identity = {"online": data_sha256(study.online),
                           "test": data_sha256(test.assign(document=preset.prompts(test.document)))}
    if preset.policy.startswith("sft-llm:"):
        study.pi0_dir = _causal_pi0(preset, sft, progress)
        manifest = study.pi0_dir / "manifest.json"
        study.pi0_manifest = json.loads(manifest.read_text())
        study.pi0_identity = {"weights": read_json(study.pi0_dir / CHECKSUMS)}
    elif preset.policy.startswith("sft:"):
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


def batching_identity(sharding: Sharding | None = None) -> dict:
    """How the model calls are batched and where they run, which can change results in the last float bits
    (the random numbers are per prompt either way): ``group_size`` ``None`` (whole chunks, single process)
    or the sharded collection's groups (the same for any number of processes), and the device type."""
    sharding = resolve(sharding)
    return {"group_size": None if sharding is None else sharding.group_size,
            "device": torch.device(default_device()).type}


def check_seeds(study: Study, seeds) -> list[int]:
    """``seeds`` (default: the preset's) as a list of distinct integers, or ``ValueError`` before any compute."""
    seeds = list(study.preset.seeds if seeds is None else seeds)
    if not seeds or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"seeds must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds!r}")
    check_disjoint(seeds, study.preset.n_iterations, len(study.arm_names) + 1)  # + the positive control's arm
    return [int(s) for s in seeds]
