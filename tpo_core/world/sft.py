"""The SFT recipe that trains ``pi_0`` of the ``embedded`` preset once and caches it (:func:`train_sft`).

The recipe itself is :func:`tpo_core.world.sft_recipe.fit` (the architecture and hyperparameters are
:class:`tpo_core.world.policy_config.PolicyConfig`). :func:`train_sft` caches its result under
``cache_dir/<name>-<key>``, where ``key`` hashes what determines the weights (:func:`cache_key`): the
configuration, the sha256 of the training data, the code of the recipe (the module
:mod:`tpo_core.world.sft_recipe` and what it imports) and the sha256 of the MiniLM files it reads. A later call with
the same inputs loads the cache instead; the folder appears whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from tpo_core.world.assets import MINILM_SHA256, minilm_path
from tpo_core.plumbing.provenance import code_identity, publish_dir
from tpo_core.plumbing.common import quiet_loading
from tpo_core.world.policy import Policy
from tpo_core.world.policy_config import RUNTIME_FIELDS, PolicyConfig
from tpo_core.world.sft_recipe import fit

__all__ = ["train_sft", "read_manifest", "cache_key", "cache_folder", "data_sha256", "recipe_identity"]

CACHE_FORMAT = 2  # bump when the cache layout changes meaning (2: the key covers the recipe module only)


def data_sha256(train_df) -> str:
    """sha256 over the ``document`` and ``summary`` columns of ``train_df``, in row order."""
    h = hashlib.sha256()
    for doc, summ in zip(train_df["document"], train_df["summary"]):
        for text in (doc, summ):
            b = str(text).encode("utf-8")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
    return h.hexdigest()


def _identity(config: PolicyConfig) -> dict:
    """The config fields that define the trained model (all but the runtime-only ``num_threads``)."""
    return {k: v for k, v in asdict(config).items() if k not in RUNTIME_FIELDS}


def recipe_identity(config: PolicyConfig) -> dict:
    """What besides the config and the data determines ``pi_0``'s weights: the code of the recipe
    (:func:`tpo_core.plumbing.provenance.code_identity` of :mod:`tpo_core.world.sft_recipe` and what it imports) and, when the
    embeddings start from MiniLM, the sha256 of every MiniLM file it reads (:data:`tpo_core.world.assets.MINILM_SHA256`,
    which :func:`tpo_core.world.assets.minilm_path` verifies)."""
    return {"code": code_identity("world.sft_recipe"),
            "minilm": dict(sorted(MINILM_SHA256.items())) if config.minilm_init else None}


def cache_key(config: PolicyConfig, data_sha: str) -> str:
    """Hex key of a cached ``pi_0``: hashes the cache format, the config (except ``num_threads``), the
    data checksum and :func:`recipe_identity`. Edit the recipe and ``pi_0`` is trained again; edit the
    policy's sampling, the caches or the loaders and it is not."""
    blob = json.dumps({"format": CACHE_FORMAT, "config": _identity(config), "data": data_sha,
                       **recipe_identity(config)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_folder(cache_dir: str | Path, config: PolicyConfig, data_sha: str) -> Path:
    """Where :func:`train_sft` caches ``pi_0`` for ``config`` and data checksum ``data_sha``."""
    return Path(cache_dir) / f"{config.name}-{cache_key(config, data_sha)}"


def train_sft(config: PolicyConfig, train_df, *, cache_dir: str | Path, progress: bool = True) -> Policy:
    """``pi_0``: SFT of a fresh T5 on ``train_df`` (columns ``document``, ``summary``), trained once, cached.

    The cache folder is :func:`cache_folder` (``cache_dir/<config.name>-<cache_key(config, data_sha256(train_df))>``); it holds
    the saved policy (:meth:`Policy.save`) and ``manifest.json``: config, data checksum and row count,
    training wall time, final loss (mean of the last 50 steps), loss curve (means over ``loss_every``
    steps), parameter count, library versions. When that folder's manifest matches the config (all
    fields but ``num_threads``) and the data checksum, the policy is loaded instead of trained. A new
    training is saved to a temporary folder beside it and renamed into place when complete, so an
    interrupted run never leaves a half-written cache. ``progress`` shows a tqdm bar with the loss.
    """
    if not isinstance(config, PolicyConfig):
        raise TypeError(f"config must be a PolicyConfig, got {type(config).__name__}")
    missing = {"document", "summary"} - set(getattr(train_df, "columns", []))
    if missing or len(train_df) == 0:
        raise ValueError(f"train_df must be a non-empty DataFrame with columns document, summary (missing "
                         f"{sorted(missing)})")
    sha = data_sha256(train_df)
    cache_dir = Path(cache_dir)
    final = cache_folder(cache_dir, config, sha)
    manifest_path = final / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        cached = {k: v for k, v in manifest.get("config", {}).items() if k not in RUNTIME_FIELDS}
        if cached == _identity(config) and manifest.get("data_sha256") == sha:
            return Policy.load(final)
    cache_dir.mkdir(parents=True, exist_ok=True)
    import tokenizers
    import transformers

    t0 = time.perf_counter()
    minilm_dir = minilm_path() if config.minilm_init else None  # files checked against MINILM_SHA256 (in the key)
    model, tok, losses = fit(config, [str(d) for d in train_df["document"]], [str(s) for s in train_df["summary"]],
                             minilm_dir=minilm_dir, progress=progress)
    policy = Policy(model, tok, config)
    wall = time.perf_counter() - t0
    every = max(1, config.steps // 50)
    # a stale or mismatching cache (or a concurrent writer's copy) is replaced
    with publish_dir(final) as tmp:
        with quiet_loading():
            policy.save(tmp)
        manifest = {"format": CACHE_FORMAT, "config": asdict(config), "data_sha256": sha,
                    **recipe_identity(config),
                    "data_rows": len(train_df), "train_wall_s": round(wall, 2),
                    "final_loss": float(np.mean(losses[-50:])),
                    "loss_every": every,
                    "loss_curve": [round(float(np.mean(losses[i:i + every])), 4)
                                   for i in range(0, len(losses), every)],
                    "parameters": sum(p.numel() for p in policy.model.parameters()),
                    "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                                 "tokenizers": tokenizers.__version__}}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return policy


def read_manifest(cache_dir: str | Path, config: PolicyConfig, train_df) -> dict | None:
    """The manifest of the cached policy for ``config`` and ``train_df``, or ``None`` when not cached."""
    path = cache_folder(cache_dir, config, data_sha256(train_df)) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else None
