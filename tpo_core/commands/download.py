"""Fetch what a preset needs from the Hugging Face Hub into local folders, once; then run offline from them.

    python -m tpo_core.commands.download --preset paper --dest models/           # fetch (the Hub must be reachable)
    python -m tpo_core.commands.download --preset paper --dest models/ --check   # verify every file, print the flags

Models come with ``huggingface_hub.snapshot_download`` (configs, tokenizer files and safetensors weights). A
dataset comes from the Parquet files the Hub keeps for every dataset (revision ``refs/convert/parquet``, so no
loading script runs), read by ``datasets`` and saved with ``save_to_disk``, which is what
:func:`tpo_core.study.loading.load_study` loads. ``manifest.json`` in the destination records, for each Hub id, its
kind, its folder and the sha256 of every file. :func:`model_paths` turns the manifest into the ``model_paths`` of
``load_study`` (``--models-dir`` of :mod:`tpo_core.commands.distributed`) and refuses a missing manifest, entry or
folder, naming the command that fetches it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tpo_core.plumbing.provenance import CorruptFileError, sha256_file, write_atomic
from tpo_core.world.presets import Preset, get_preset

__all__ = ["MANIFEST", "MODEL_FILES", "hub_needs", "folder_of", "fetch", "model_paths", "main"]

#: The manifest's file name, in the destination folder.
MANIFEST = "manifest.json"

#: What is fetched of a model repository: configs, tokenizers and the safetensors weights (no duplicate
#: PyTorch/TF/Flax weights).
MODEL_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "merges.txt", "vocab.*"]


def hub_needs(preset: Preset) -> dict[str, str]:
    """``{hub_id: "model" | "dataset"}``: what ``preset`` loads from the Hub (nothing for the offline presets: the
    Debian data, an SFT-trained π₀, mpnet and the offline LLMs ship with the repository and its packages)."""
    need = {}
    if not preset.policy.startswith("sft:"):
        need[preset.policy] = "model"
    for spec in preset.sources.values():
        if "model_path" in spec:
            need[spec["model_path"]] = "model"
    if preset.gold != "mpnet":
        need[preset.gold] = "model"
    if preset.dataset != "debian":
        need[preset.dataset] = "dataset"
    return {k: v for k, v in need.items() if not Path(k).is_dir()}


def folder_of(hub_id: str) -> str:
    """The folder of ``hub_id`` inside the destination (``org/name`` becomes ``org--name``)."""
    return hub_id.replace("/", "--")


def fetch(preset: Preset, dest, *, snapshot_download=None, echo=print) -> dict:
    """Download everything :func:`hub_needs` names into ``dest`` and write its manifest; return the manifest.

    ``snapshot_download``: ``huggingface_hub.snapshot_download`` (replaceable, for the tests). Raises
    ``ValueError`` when a dataset has no ``document``/``summary`` columns in a ``train`` and a ``test`` split."""
    if snapshot_download is None:
        from huggingface_hub import snapshot_download
    dest = Path(dest)
    items = {}
    for hub_id, kind in hub_needs(preset).items():
        folder = dest / folder_of(hub_id)
        echo(f"fetching {kind} {hub_id} -> {folder}")
        if kind == "model":
            snapshot_download(repo_id=hub_id, local_dir=str(folder), allow_patterns=MODEL_FILES)
        else:
            _fetch_dataset(hub_id, folder, dest / ".parquet" / folder_of(hub_id), snapshot_download)
        items[hub_id] = {"kind": kind, "folder": folder.name,
                         "files": {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*"))
                                   if p.is_file() and ".cache" not in p.relative_to(folder).parts}}
    manifest = {"preset": preset.name, "items": items}
    write_atomic(dest / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def _fetch_dataset(hub_id: str, folder: Path, parquet: Path, snapshot_download) -> None:
    import datasets

    snapshot_download(repo_id=hub_id, repo_type="dataset", revision="refs/convert/parquet", local_dir=str(parquet),
                      allow_patterns=["default/*/*.parquet"])
    splits = {d.name: sorted(str(p) for p in d.glob("*.parquet"))
              for d in sorted((parquet / "default").glob("*")) if d.is_dir()}
    if not {"train", "test"} <= set(splits):
        raise ValueError(f"{hub_id}: the Parquet conversion has splits {sorted(splits)}, not train and test")
    ds = datasets.load_dataset("parquet", data_files=splits)
    for name, split in ds.items():
        if not {"document", "summary"} <= set(split.column_names):
            raise ValueError(f"{hub_id} split {name!r} has columns {split.column_names}, not document and summary")
    ds.save_to_disk(str(folder))


def model_paths(preset: Preset, dest, *, verify: bool = False) -> dict[str, str]:
    """``{hub_id: local folder}`` for ``preset`` from the manifest in ``dest``: what ``load_study(model_paths=)``
    takes. ``FileNotFoundError`` (with the command that fetches them) for a missing manifest, entry or folder;
    with ``verify``, every file is hashed and a difference is a :class:`~tpo_core.plumbing.provenance.CorruptFileError`."""
    dest = Path(dest)
    again = f"python -m tpo_core.commands.download --preset {preset.name} --dest {dest}"
    try:
        items = json.loads((dest / MANIFEST).read_text())["items"]
    except (OSError, ValueError, KeyError) as e:
        raise FileNotFoundError(f"no readable {MANIFEST} in {dest}: fetch the models with `{again}`") from e
    out = {}
    for hub_id in hub_needs(preset):
        entry = items.get(hub_id)
        folder = dest / entry["folder"] if entry else None
        if folder is None or not folder.is_dir():
            raise FileNotFoundError(f"{hub_id} is not in {dest} ({'no folder' if entry else 'not fetched'}): `{again}`")
        for rel, digest in entry["files"].items() if verify else ():
            path = folder / rel
            if not path.is_file() or sha256_file(path) != digest:
                raise CorruptFileError(f"{path} is missing or differs from the sha256 in {dest / MANIFEST}: `{again}`")
        out[hub_id] = str(folder)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tpo_core.commands.download", description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--dest", required=True, help="the folder that receives one sub-folder per model or dataset")
    ap.add_argument("--check", action="store_true", help="fetch nothing: verify every file against the manifest")
    a = ap.parse_args(argv)
    preset = get_preset(a.preset)
    if not a.check:
        fetch(preset, a.dest)
    paths = model_paths(preset, a.dest, verify=True)
    print("verified; pass these to accelerate launch -m tpo_core.commands.distributed (or --models-dir", a.dest + "):")
    print(" ".join(f"--model-path {k}={v}" for k, v in paths.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
