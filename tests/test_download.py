"""The download command, offline: what a preset needs, the manifest, and the refusals (the Hub itself is replaced
by a function that writes what ``huggingface_hub.snapshot_download`` would)."""

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from tpo_core.commands import download as DL
from tpo_core.plumbing.provenance import CorruptFileError
from tpo_core.world.presets import get_preset

PAPER = get_preset("paper")


class FakeHub:
    """Writes a model's config and weights, or a dataset's Parquet conversion, where ``snapshot_download`` would."""

    def __init__(self, columns=("document", "summary")):
        self.calls, self.columns = [], columns

    def __call__(self, *, repo_id, local_dir, repo_type="model", revision=None, allow_patterns=None):
        self.calls.append({"repo_id": repo_id, "repo_type": repo_type, "revision": revision,
                           "allow_patterns": allow_patterns})
        root = Path(local_dir)
        if repo_type == "dataset":
            for split, n in (("train", 3), ("validation", 1), ("test", 2)):
                (root / "default" / split).mkdir(parents=True, exist_ok=True)
                pd.DataFrame({c: [f"{split} {c} {i}" for i in range(n)] for c in self.columns}).to_parquet(
                    root / "default" / split / "0000.parquet")
        else:
            root.mkdir(parents=True, exist_ok=True)
            (root / "config.json").write_text(json.dumps({"model": repo_id}))
            (root / "model.safetensors").write_bytes(repo_id.encode() * 10)
        return str(root)


def test_the_paper_preset_needs_its_models_and_xsum_and_the_offline_presets_nothing():
    assert DL.hub_needs(PAPER) == {"google-t5/t5-small": "model", "distilbert-base-uncased": "model",
                                   "google-t5/t5-base": "model", "google-t5/t5-large": "model",
                                   "sfairXC/FsfairX-LLaMA3-RM-v0.1": "model", "EdinburghNLP/xsum": "dataset"}
    assert DL.hub_needs(get_preset("embedded")) == {} and DL.hub_needs(get_preset("smoke")) == {}
    assert DL.folder_of("google-t5/t5-small") == "google-t5--t5-small"


def test_fetch_writes_every_folder_and_a_manifest_of_their_checksums(tmp_path):
    import datasets

    hub = FakeHub()
    manifest = DL.fetch(PAPER, tmp_path, snapshot_download=hub, echo=lambda *a: None)
    assert json.loads((tmp_path / DL.MANIFEST).read_text()) == manifest
    assert set(manifest["items"]) == set(DL.hub_needs(PAPER))
    [xsum] = [c for c in hub.calls if c["repo_type"] == "dataset"]
    assert xsum["revision"] == "refs/convert/parquet"  # no loading script runs
    assert all(c["allow_patterns"] == DL.MODEL_FILES for c in hub.calls if c["repo_type"] == "model")
    for hub_id, entry in manifest["items"].items():
        folder = tmp_path / entry["folder"]
        for rel, digest in entry["files"].items():
            assert hashlib.sha256((folder / rel).read_bytes()).hexdigest() == digest
    ds = datasets.load_from_disk(str(tmp_path / DL.folder_of("EdinburghNLP/xsum")))
    assert {"train", "test"} <= set(ds) and ds["test"]["summary"] == ["test summary 0", "test summary 1"]
    paths = DL.model_paths(PAPER, tmp_path, verify=True)
    assert paths == {k: str(tmp_path / DL.folder_of(k)) for k in DL.hub_needs(PAPER)}


def test_model_paths_refuses_what_is_missing_or_changed(tmp_path):
    with pytest.raises(FileNotFoundError, match="tpo_core.commands.download --preset paper"):
        DL.model_paths(PAPER, tmp_path)
    DL.fetch(PAPER, tmp_path, snapshot_download=FakeHub(), echo=lambda *a: None)
    rm = tmp_path / DL.folder_of("google-t5/t5-base") / "model.safetensors"
    rm.write_bytes(b"truncated")
    DL.model_paths(PAPER, tmp_path)  # without verify: only the folders are checked
    with pytest.raises(CorruptFileError, match="model.safetensors"):
        DL.model_paths(PAPER, tmp_path, verify=True)
    bigger = replace(PAPER, sources={**PAPER.sources, "LLM_t5-3b": {"kind": "seq2seq-logprob",
                                                                    "model_path": "google-t5/t5-3b"}})
    with pytest.raises(FileNotFoundError, match="google-t5/t5-3b is not in .*not fetched"):
        DL.model_paths(bigger, tmp_path)


def test_a_dataset_without_document_and_summary_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not document and summary"):
        DL.fetch(PAPER, tmp_path, snapshot_download=FakeHub(columns=("text", "label")), echo=lambda *a: None)
    assert not (tmp_path / DL.MANIFEST).exists()
