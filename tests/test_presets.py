"""Presets: the paper preset carries the authors' settings; bad names and fields fail early."""

import json

import pytest

from tpo_core.presets import PRESETS, get_preset


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
    assert len(p.seeds) >= 5  # Table 1 with >= 5 seeds (issue 7)
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
    ({"name": "embedded", "sources": {"null": {"kind": "rougeLsum"}}}, "reserved"),
    ({"name": "embedded", "n_candidates": 1}, "n_candidates|top_k"),
])
def test_bad_presets(kwargs, match):
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=match):
        get_preset(name, **kwargs)
