"""Presets: the paper preset carries the authors' settings; bad names and fields fail early."""

import json

import pytest

from tpo_core.world.presets import PRESETS, get_preset


def test_paper_preset_matches_the_authors_setup():
    p = get_preset("paper")
    assert p.policy == "google-t5/t5-small" and p.dataset == "EdinburghNLP/xsum"
    assert p.gold == "sfairXC/FsfairX-LLaMA3-RM-v0.1"
    assert set(p.sources) == {"RM_rougeLsum", "RM_BERTScore", "LLM_t5-base", "LLM_t5-large"}
    assert (p.pool_size, p.top_k, p.n_candidates, p.prompts_per_iteration) == (32, 4, 8, 10_000)
    assert (p.n_iterations, p.seeds, p.beta, p.learning_rate, p.batch_size) == (3, (100, 200, 300), 0.1, 5e-5, 64)
    assert (p.null_value, p.bonus, p.update_every, p.warmup) == (0.55, 1.0, 200, 200)
    assert (p.worst_source, p.best_source) == ("RM_rougeLsum", "LLM_t5-large")
    assert p.prompt_prefix == "Summarize: " and not p.offline


def test_embedded_is_offline_and_default_sized():
    p = get_preset("embedded")
    assert p.offline and p.dataset == "debian" and p.gold == "mpnet"
    assert p.gold not in {s.get("model_path") for s in p.sources.values()}
    assert len(p.seeds) >= 5  # Table 1 needs seeds enough for an interval
    # two offline LLM log-prob sources stand in for T5-base/T5-large; every arm is a source
    assert sum(s["kind"] == "llm-logprob" for s in p.sources.values()) == 2
    assert set(p.arms) <= set(p.sources)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_validate_and_serialise(name):
    p = get_preset(name)
    assert p.name == name
    json.dumps(p.to_dict())  # manifests store presets as JSON


def test_overrides():
    assert get_preset("embedded", seeds=(1, 2)).seeds == (1, 2)


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "nope"}, "unknown preset"),
    ({"name": "embedded", "colour": 1}, "unknown preset fields"),
    ({"name": "embedded", "top_k": 20}, "top_k"),
    ({"name": "embedded", "best_source": "t5"}, "not one of its arms"),
    ({"name": "embedded", "best_source": "LLM_qwen05"}, "not one of its arms"),  # measured only, not an arm
    ({"name": "embedded", "arms": ("rougeLsum", "t5")}, "subset of its sources"),
    ({"name": "embedded", "arms": ()}, "subset of its sources"),
    ({"name": "embedded", "seeds": ()}, "seeds"),
    ({"name": "embedded", "seeds": (1, 1)}, "seeds"),
    ({"name": "embedded", "beta": 0.0}, "beta"),
    ({"name": "embedded", "sources": {}}, "no sources"),
    ({"name": "embedded", "sources": {"online": {"kind": "rougeLsum"}}}, "reserved"),
    ({"name": "embedded", "n_candidates": 1}, "n_candidates|top_k"),
])
def test_bad_presets(kwargs, match):
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=match):
        get_preset(name, **kwargs)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("field, value, match", [
    ("beta", NAN, "beta must be a finite number"),
    ("temperature", NAN, "temperature must be a finite number"),
    ("learning_rate", INF, "learning_rate must be a finite number"),
    ("learning_rate", "1e-3", "learning_rate must be a finite number"),
    ("ipo_learning_rate", 0.0, "ipo_learning_rate must be None or a finite number > 0"),
    ("ipo_learning_rate", NAN, "ipo_learning_rate must be None or a finite number > 0"),
    ("ipo_learning_rate", True, "ipo_learning_rate must be None or a finite number > 0"),
    ("null_value", NAN, "null_value"),
    ("bonus", INF, "bonus"),
    ("seeds", ("a", "b"), "seeds must be a non-empty tuple of integers"),
    ("seeds", (1.5, 2), "seeds must be a non-empty tuple of integers"),
    ("seeds", (True, 2), "seeds must be a non-empty tuple of integers"),
    ("batch_size", 2.5, "batch_size must be an integer"),
    ("epochs", True, "epochs must be an integer"),
    ("n_test_prompts", 0, "n_test_prompts must be an integer >= 1"),
    ("warmup", -1, "warmup must be an integer >= 0"),
    ("top_k", 4, "top_k must satisfy"),  # smoke: n_candidates 4, so no online response would remain
    ("sources", {"x": {"kind": "rouge"}}, "unknown source kind 'rouge'"),
    ("sources", {"x": {"kind": "bertscore", "layers": 3}}, r"unknown keyword\(s\) \['layers'\]"),
    ("sources", {"x": {"model_path": "m"}}, "'kind' key"),
    ("gold", "", "gold must be a non-empty string"),
])
def test_bad_values_fail_before_compute(field, value, match):
    """NaN, inf, wrong types, top_k == n_candidates and unknown source kinds or keywords are caught by
    get_preset, with the field's name in the message."""
    with pytest.raises(ValueError, match=match):
        get_preset("smoke", **{field: value})


def test_every_shipped_source_spec_is_accepted_and_lists_are_normalised():
    for p in PRESETS.values():
        get_preset(p.name)  # the shipped presets pass their own validation
    p = get_preset("smoke", seeds=[3, 4], arms=["rougeLsum"])
    assert p.seeds == (3, 4) and p.arms == ("rougeLsum",)


def test_each_loss_has_its_learning_rate():
    """DPO takes ``learning_rate``; IPO its own rate, or the paper's 1e-5 / 5e-5 of the DPO rate when unset."""
    from tpo_core.world.presets import IPO_DPO_RATIO, learning_rate

    paper = get_preset("paper")
    assert learning_rate(paper, "dpo") == 5e-5 and learning_rate(paper, "ipo") == pytest.approx(1e-5)
    assert IPO_DPO_RATIO == pytest.approx(1e-5 / 5e-5)
    tuned = get_preset("smoke", learning_rate=2e-3, ipo_learning_rate=7e-4)
    assert (learning_rate(tuned, "dpo"), learning_rate(tuned, "ipo")) == (2e-3, 7e-4)
    with pytest.raises(ValueError, match="unknown loss 'xpo'"):
        learning_rate(tuned, "xpo")


def test_seeds_of_follows_the_budget_order():
    """The primary pair runs on every seed, the control on the first ``control_seeds``, the exploit baselines on
    the first ``secondary_seeds``; the embedded preset's default run spends in that order."""
    from tpo_core.world.presets import seeds_of

    p = get_preset("smoke", seeds=(1, 2, 3, 4, 5), control_seeds=3, secondary_seeds=2)
    assert seeds_of(p, "tpo") == seeds_of(p, "no-transfer") == (1, 2, 3, 4, 5)
    assert seeds_of(p, "exploit-oracle") == (1, 2, 3)
    assert seeds_of(p, "exploit-worst") == seeds_of(p, "exploit-best") == (1, 2)
    every = get_preset("smoke", seeds=(1, 2, 3), control_seeds=None, secondary_seeds=None)
    assert all(seeds_of(every, m) == (1, 2, 3) for m in ("tpo", "exploit-oracle", "exploit-best"))
    e = get_preset("embedded")
    assert len(e.seeds) >= e.control_seeds >= e.secondary_seeds
    for bad in (0, -1, 1.5, "3"):
        with pytest.raises(ValueError, match="control_seeds"):
            get_preset("smoke", control_seeds=bad)
