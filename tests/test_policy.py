"""Tests of tpo_core.world.policy with the tiny SMOKE configuration (trains in seconds on a few hundred pairs)."""

from dataclasses import replace

import pandas as pd
import pytest
import torch

from tpo_core.world import policy as P
from tpo_core.world import policy_config as C
from tpo_core.world import sft_recipe as R
from tpo_core.world import sft as F
from tpo_core.world.data import load_debian


@pytest.fixture(scope="module")
def train_df():
    return load_debian("sft").iloc[:400].reset_index(drop=True)


@pytest.fixture(scope="module")
def trained(train_df, tmp_path_factory):
    cache = tmp_path_factory.mktemp("pi0cache")
    return F.train_sft(C.SMOKE, train_df, cache_dir=cache, progress=False), cache


def test_smoke_trains_and_loss_decreases(trained, train_df):
    pol, cache = trained
    manifest = F.read_manifest(cache, C.SMOKE, train_df)
    curve = manifest["loss_curve"]
    assert curve[-1] < curve[0] - 0.5
    assert manifest["data_sha256"] == F.data_sha256(train_df) and manifest["train_wall_s"] < 30
    assert [p.name for p in cache.iterdir()] == [f"smoke-{F.cache_key(C.SMOKE, F.data_sha256(train_df))}"]


def test_cache_reuse_and_invalidation(trained, train_df, monkeypatch):
    pol, cache = trained
    calls = []
    real_fit = F.fit
    monkeypatch.setattr(F, "fit", lambda *a, **k: calls.append(1) or real_fit(*a, **k))
    again = F.train_sft(C.SMOKE, train_df, cache_dir=cache, progress=False)
    assert calls == []  # loaded, not trained
    docs, resp = list(train_df.document[:3]), list(train_df.summary[:3])
    with torch.no_grad():
        assert torch.equal(again.sequence_logprobs(docs, resp), pol.sequence_logprobs(docs, resp))
    F.train_sft(replace(C.SMOKE, steps=2), train_df, cache_dir=cache, progress=False)  # config change
    changed = train_df.copy()
    changed.loc[0, "summary"] += " x"
    F.train_sft(replace(C.SMOKE, steps=2), changed, cache_dir=cache, progress=False)  # data change
    assert len(calls) == 2
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 3
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp")]


def test_interrupted_training_leaves_no_cache(train_df, tmp_path, monkeypatch):
    def boom(self, directory):
        raise KeyboardInterrupt

    monkeypatch.setattr(P.Policy, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        F.train_sft(replace(C.SMOKE, steps=2), train_df, cache_dir=tmp_path, progress=False)
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
    assert (batch["labels"] == -100).any() and batch["input_ids"].shape[1] <= C.SMOKE.max_source_tokens
    with torch.no_grad():
        got = pol.sequence_logprobs(docs, resp)
        manual = []
        for d, r in zip(docs, resp):
            ids = pol.tokenizer([d], truncation=True, max_length=C.SMOKE.max_source_tokens,
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
        F.train_sft(C.SMOKE, pd.DataFrame({"document": []}), cache_dir="/nonexistent")
    with pytest.raises(ValueError):
        replace(C.SMOKE, d_model=30, num_heads=4)


def test_minilm_embedding_init(train_df):
    from tpo_core.world import assets

    try:
        assets.minilm_path()
    except (FileNotFoundError, ValueError) as exc:
        pytest.skip(f"all-MiniLM-L6-v2 not available: {exc}")
    tok = R._train_tokenizer(C.SMOKE, list(train_df.document) + list(train_df.summary))
    emb = R._minilm_embeddings(tok, 32, torch.Generator().manual_seed(0), assets.minilm_path())
    assert emb.shape == (len(tok), 32) and torch.isfinite(emb).all()
    pairs = [tok.convert_tokens_to_ids([w, w.capitalize()]) for w in ("▁library", "▁python", "▁the")]
    pairs = [p for p in pairs if tok.unk_token_id not in p]
    assert pairs  # MiniLM is uncased, so both casings of a word get the same vector
    for a, b in pairs:
        torch.testing.assert_close(emb[a], emb[b])


def test_inverse_cdf_sample_is_categorical():
    """Inversion draws exactly from the row's distribution: zero-probability tokens never, the rest at
    their probabilities (chi-square on 20,000 draws), and the uniform's boundaries map as they must."""
    from scipy.stats import chisquare

    probs = torch.tensor([[0.0, 0.1, 0.0, 0.6, 0.3, 0.0]])
    gen = torch.Generator().manual_seed(3)
    u = torch.rand(20_000, generator=gen, dtype=torch.float64)
    tok = P.inverse_cdf_sample(probs.expand(len(u), -1), u)
    counts = torch.bincount(tok, minlength=6).numpy()
    assert counts[[0, 2, 5]].sum() == 0
    assert chisquare(counts[[1, 3, 4]], 20_000 * probs[0, [1, 3, 4]].numpy()).pvalue > 1e-3
    cdf = probs.double().cumsum(-1)[0]
    b = float(cdf[1] / cdf[-1])  # where token 1's interval ends
    edge = torch.tensor([0.0, b - 1e-12, b + 1e-12, 1 - 1e-12], dtype=torch.float64)
    assert P.inverse_cdf_sample(probs.expand(4, -1), edge).tolist() == [1, 1, 3, 4]


def test_per_document_streams_do_not_depend_on_the_batch(trained, train_df):
    """With one generator per document, a document's responses are the same alone or among others."""
    pol, _ = trained
    docs = list(train_df.document[:4])

    def gens(idx):
        return [torch.Generator().manual_seed(100 + i) for i in idx]

    together = pol.sample(docs, 3, generator=gens(range(4)), max_new_tokens=8)
    alone = [pol.sample([docs[i]], 3, generator=gens([i]), max_new_tokens=8)[0] for i in range(4)]
    assert together == alone
    assert pol.sample(docs, 3, generator=gens(range(4)), max_new_tokens=8, batch_size=3) == together
    with pytest.raises(ValueError, match="one per document"):
        pol.sample(docs, 3, generator=gens(range(3)))


def _logprobs_and_lengths(pol, doc, texts):
    with torch.no_grad():
        lp = pol.sequence_logprobs([doc] * len(texts), texts).numpy()
    lengths = [len(pol.tokenizer(t)["input_ids"]) for t in texts]
    return lp, lengths


def test_sampler_draws_from_the_same_distribution_as_generate(trained, train_df):
    """Peer oracle: ``transformers``' ``generate(do_sample=True, top_k=0, top_p=1.0)`` on the same model.

    Both samplers' responses are scored by the same model (sequence log-probability and length); a
    two-sample KS test does not tell them apart (p > 0.001 on 1,200 draws per document), while the same
    test rejects the sampler at temperature 1.3 (the test can fail)."""
    from scipy.stats import ks_2samp

    pol, _ = trained
    n, max_new = 1200, 6
    torch.manual_seed(0)  # generate draws from torch's global generator
    for doc in list(train_df.document[:2]):
        ours = pol.sample([doc], n, max_new_tokens=max_new, seed=11)[0]
        enc = pol.tokenizer([doc], return_tensors="pt", truncation=True, max_length=pol.config.max_source_tokens)
        with torch.no_grad():
            ids = pol.model.generate(**enc, do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                                     num_return_sequences=n, max_new_tokens=max_new)
        theirs = pol.tokenizer.batch_decode(ids, skip_special_tokens=True)
        hot = pol.sample([doc], n, max_new_tokens=max_new, seed=12, temperature=1.3)[0]
        lp_o, len_o = _logprobs_and_lengths(pol, doc, ours)
        lp_t, len_t = _logprobs_and_lengths(pol, doc, theirs)
        lp_h, _ = _logprobs_and_lengths(pol, doc, hot)
        assert ks_2samp(lp_o, lp_t).pvalue > 1e-3
        assert ks_2samp(len_o, len_t).pvalue > 1e-3
        assert ks_2samp(lp_h, lp_t).pvalue < 1e-3


@pytest.mark.parametrize("edited, retrains", [("world.sft_recipe", True), ("world.policy_config", True),
                                              ("tpo.logprobs", True), ("world.policy", False), ("world.sft", False),
                                              ("plumbing.provenance", False), ("plumbing.common", False),
                                              ("world.assets", False)])
def test_pi0_key_follows_the_recipe_code_only(edited, retrains, monkeypatch, train_df):
    """An edit to the code that computes pi_0's weights changes its cache key; an edit to the policy's
    sampling, the cache, the provenance helpers or the asset loaders does not."""
    from tpo_core.plumbing import provenance

    sha = F.data_sha256(train_df)
    before = F.cache_key(C.EMBEDDED, sha)
    real = provenance._module_text
    monkeypatch.setattr(provenance, "_module_text", lambda m: real(m) + ("EDIT" if m == edited else ""))
    assert (F.cache_key(C.EMBEDDED, sha) != before) == retrains


def test_pi0_key_follows_the_minilm_files(monkeypatch, train_df):
    """The MiniLM files the embedding init reads are part of the key (only when the init uses them)."""
    sha = F.data_sha256(train_df)
    before, smoke = F.cache_key(C.EMBEDDED, sha), F.cache_key(C.SMOKE, sha)
    monkeypatch.setattr(F, "MINILM_SHA256", {**F.MINILM_SHA256, "config.json": "0" * 64})
    assert F.cache_key(C.EMBEDDED, sha) != before
    assert F.cache_key(C.SMOKE, sha) == smoke  # minilm_init=False
