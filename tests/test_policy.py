"""Tests of tpo_core.policy with the tiny SMOKE configuration (trains in seconds on a few hundred pairs)."""

from dataclasses import replace

import pandas as pd
import pytest
import torch

from tpo_core import policy as P
from tpo_core.data import load_debian


@pytest.fixture(scope="module")
def train_df():
    return load_debian("sft").iloc[:400].reset_index(drop=True)


@pytest.fixture(scope="module")
def trained(train_df, tmp_path_factory):
    cache = tmp_path_factory.mktemp("pi0cache")
    return P.train_sft(P.SMOKE, train_df, cache_dir=cache, progress=False), cache


def test_smoke_trains_and_loss_decreases(trained, train_df):
    pol, cache = trained
    manifest = P.read_manifest(cache, P.SMOKE, train_df)
    curve = manifest["loss_curve"]
    assert curve[-1] < curve[0] - 0.5
    assert manifest["data_sha256"] == P.data_sha256(train_df) and manifest["train_wall_s"] < 30
    assert [p.name for p in cache.iterdir()] == [f"smoke-{P.cache_key(P.SMOKE, P.data_sha256(train_df))}"]


def test_cache_reuse_and_invalidation(trained, train_df, monkeypatch):
    pol, cache = trained
    calls = []
    real_fit = P._fit
    monkeypatch.setattr(P, "_fit", lambda *a, **k: calls.append(1) or real_fit(*a, **k))
    again = P.train_sft(P.SMOKE, train_df, cache_dir=cache, progress=False)
    assert calls == []  # loaded, not trained
    docs, resp = list(train_df.document[:3]), list(train_df.summary[:3])
    with torch.no_grad():
        assert torch.equal(again.sequence_logprobs(docs, resp), pol.sequence_logprobs(docs, resp))
    P.train_sft(replace(P.SMOKE, steps=2), train_df, cache_dir=cache, progress=False)  # config change
    changed = train_df.copy()
    changed.loc[0, "summary"] += " x"
    P.train_sft(replace(P.SMOKE, steps=2), changed, cache_dir=cache, progress=False)  # data change
    assert len(calls) == 2
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 3
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp")]


def test_interrupted_training_leaves_no_cache(train_df, tmp_path, monkeypatch):
    def boom(self, directory):
        raise KeyboardInterrupt

    monkeypatch.setattr(P.Policy, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        P.train_sft(replace(P.SMOKE, steps=2), train_df, cache_dir=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_sampling_deterministic_and_shaped(trained, train_df):
    pol, _ = trained
    docs = list(train_df.document[:3])
    a = pol.sample(docs, 4, generator=torch.Generator().manual_seed(7), max_new_tokens=8)
    b = pol.sample(docs, 4, seed=7, max_new_tokens=8)
    c = pol.sample(docs, 4, seed=8, max_new_tokens=8)
    assert a == b and a != c
    assert len(a) == 3 and all(len(r) == 4 and all(isinstance(s, str) for s in r) for r in a)
    g = pol.greedy(docs)
    assert len(g) == 3 and g == pol.greedy(docs)


def test_sequence_logprobs_match_manual(trained, train_df):
    pol, _ = trained
    docs, resp = list(train_df.document[:4]), ["a b", "library for x", "", "tool"]
    batch = pol.encode(docs, resp)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert (batch["labels"] == -100).any() and batch["input_ids"].shape[1] <= P.SMOKE.max_source_tokens
    with torch.no_grad():
        got = pol.sequence_logprobs(docs, resp)
        manual = []
        for d, r in zip(docs, resp):
            ids = pol.tokenizer([d], truncation=True, max_length=P.SMOKE.max_source_tokens,
                                return_tensors="pt")
            y = pol.tokenizer([r], return_tensors="pt")["input_ids"]
            logits = pol.model(input_ids=ids["input_ids"], labels=y).logits[0]
            lp = torch.log_softmax(logits, -1)
            manual.append(sum(lp[t, y[0, t]] for t in range(y.shape[1])))
    torch.testing.assert_close(got, torch.stack(manual), rtol=1e-5, atol=1e-4)
    assert got.shape == (4,) and (got < 0).all()
    assert pol.sequence_logprobs(docs[:1], resp[:1]).requires_grad  # usable by a preference trainer


def test_save_load_round_trip(trained, train_df, tmp_path):
    pol, _ = trained
    docs, resp = list(train_df.document[:3]), list(train_df.summary[:3])
    back = P.Policy.load(pol.save(tmp_path / "p"))
    assert back.config == pol.config
    with torch.no_grad():
        assert torch.equal(back.sequence_logprobs(docs, resp), pol.sequence_logprobs(docs, resp))
    assert back.sample(docs, 2, seed=1) == pol.sample(docs, 2, seed=1)


def test_bad_input(trained, train_df):
    pol, _ = trained
    with pytest.raises(ValueError):
        pol.sample([], 2)
    with pytest.raises(ValueError):
        pol.sample(["doc"], 0)
    with pytest.raises(ValueError):
        pol.greedy("a string, not a list")
    with pytest.raises(ValueError):
        pol.sequence_logprobs(["a", "b"], ["x"])
    with pytest.raises(ValueError):
        P.train_sft(P.SMOKE, pd.DataFrame({"document": []}), cache_dir="/nonexistent")
    with pytest.raises(ValueError):
        replace(P.SMOKE, d_model=30, num_heads=4)


def test_minilm_embedding_init(train_df):
    from tpo_core import assets

    try:
        assets.minilm_path()
    except (FileNotFoundError, ValueError) as exc:
        pytest.skip(f"all-MiniLM-L6-v2 not available: {exc}")
    tok = P._train_tokenizer(P.SMOKE, list(train_df.document) + list(train_df.summary))
    emb = P._minilm_embeddings(tok, 32, torch.Generator().manual_seed(0))
    assert emb.shape == (len(tok), 32) and torch.isfinite(emb).all()
    pairs = [tok.convert_tokens_to_ids([w, w.capitalize()]) for w in ("▁library", "▁python", "▁the")]
    pairs = [p for p in pairs if tok.unk_token_id not in p]
    assert pairs  # MiniLM is uncased, so both casings of a word get the same vector
    for a, b in pairs:
        torch.testing.assert_close(emb[a], emb[b])
