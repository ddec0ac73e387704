"""The SFT recipe that trains ``pi_0`` of the ``embedded`` preset once and caches it (:func:`train_sft`).

The recipe (the policy's architecture and hyperparameters are :class:`tpo_core.policy.PolicyConfig`):

* a cased BPE tokenizer (Metaspace pre-tokenizer like T5's SentencePiece) trained offline on the SFT
  documents and synopses;
* the shared token embeddings initialised from **all-MiniLM-L6-v2**'s word-piece embeddings (each BPE entry
  gets the mean of its word pieces, projected by PCA to ``d_model``);
* AdamW with warm-up and cosine decay over a fixed number of steps (not wall time, so reruns agree).

:func:`train_sft` caches the result under ``cache_dir/<name>-<key>``, where ``key`` hashes the
configuration, the sha256 of the training data and this module's code (:func:`cache_key`); a later call
with the same config and data loads the cache instead. The folder appears whole or not at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from tpo_core.provenance import code_identity, publish_dir
from tpo_core.common import quiet_loading
from tpo_core.logprobs import pad

from tpo_core.policy import RUNTIME_FIELDS, SPECIAL_TOKENS, Policy, PolicyConfig

__all__ = ["train_sft", "read_manifest", "cache_key", "cache_folder", "data_sha256"]

CACHE_FORMAT = 1  # bump when the cache layout or training code changes meaning


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


def cache_key(config: PolicyConfig, data_sha: str) -> str:
    """Hex key of a cached ``pi_0``: hashes the cache format, the config (except ``num_threads``), the
    data checksum and the identity of the code that trains it (:func:`tpo_core.provenance.code_identity` of
    this module and what it imports): edit the SFT recipe and ``pi_0`` is trained again."""
    blob = json.dumps({"format": CACHE_FORMAT, "config": _identity(config), "data": data_sha,
                       "code": code_identity("sft")}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_folder(cache_dir: str | Path, config: PolicyConfig, data_sha: str) -> Path:
    """Where :func:`train_sft` caches ``pi_0`` for ``config`` and data checksum ``data_sha``."""
    return Path(cache_dir) / f"{config.name}-{cache_key(config, data_sha)}"


def _train_tokenizer(config: PolicyConfig, texts: Sequence[str]):
    from tokenizers import (Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors,
                            trainers)
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(r"\s+"), " "),
                                          normalizers.Strip()])
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    tk.decoder = decoders.Metaspace()
    tk.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=config.vocab_size, special_tokens=SPECIAL_TOKENS,
                                                      show_progress=False))
    tk.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    tok.model_max_length = 512
    return tok


def _minilm_embeddings(tok, d_model: int, gen: torch.Generator) -> torch.Tensor:
    """A ``(len(tok), d_model)`` embedding matrix from all-MiniLM-L6-v2's word-piece embeddings.

    Each entry (``▁`` stripped) is re-tokenized by MiniLM's uncased WordPiece and gets the mean of those
    pieces' input embeddings; the rows are centred, projected on their top ``d_model`` principal
    directions (when ``d_model < 384``) and scaled to unit standard deviation, T5's embedding scale.
    Specials and entries MiniLM cannot read keep a random N(0, 1) row.
    """
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from tpo_core.assets import minilm_path

    path = minilm_path()
    mtok = AutoTokenizer.from_pretrained(str(path))
    weights = load_file(str(path / "model.safetensors"))
    table = next(v for k, v in weights.items() if k.endswith("word_embeddings.weight")).float()
    rows, ok = torch.zeros(len(tok), table.shape[1]), torch.zeros(len(tok), dtype=torch.bool)
    for i, piece in enumerate(tok.convert_ids_to_tokens(list(range(len(tok))))):
        word = piece.replace("▁", " ").strip()
        ids = [j for j in mtok(word, add_special_tokens=False)["input_ids"] if j != mtok.unk_token_id] \
            if i >= len(SPECIAL_TOKENS) and word else []
        if ids:
            rows[i], ok[i] = table[ids].mean(0), True
    x = rows[ok] - rows[ok].mean(0)
    if d_model < x.shape[1]:
        x = x @ torch.linalg.svd(x, full_matrices=False).Vh[:d_model].T
    if d_model > x.shape[1]:  # wider than MiniLM (or fewer rows than d_model): pad with random columns
        x = torch.cat([x, torch.randn(x.shape[0], d_model - x.shape[1], generator=gen) * x.std()], 1)
    out = torch.randn(len(tok), d_model, generator=gen)
    out[ok] = x / x.std()
    return out


def _build_model(config: PolicyConfig):
    from transformers import T5Config, T5ForConditionalGeneration

    t5 = T5Config(vocab_size=config.vocab_size, d_model=config.d_model, d_ff=config.d_ff,
                  d_kv=config.d_model // config.num_heads, num_heads=config.num_heads,
                  num_layers=config.encoder_layers, num_decoder_layers=config.decoder_layers,
                  dropout_rate=config.dropout, feed_forward_proj="relu", tie_word_embeddings=True,
                  pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return T5ForConditionalGeneration(t5)


@contextlib.contextmanager
def _threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _lr_factor(step: int, config: PolicyConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine


def _fit(config: PolicyConfig, documents: list[str], summaries: list[str], progress: bool):
    """Train tokenizer and model from scratch; returns ``(policy, losses)``. Global RNG state is untouched."""
    from tqdm import tqdm

    gen = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    tok = _train_tokenizer(config, documents + summaries)
    src = tok(documents, truncation=True, max_length=config.max_source_tokens)["input_ids"]
    tgt = tok(summaries, truncation=True, max_length=config.max_target_tokens)["input_ids"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # T5's weight init and dropout draw from the global generator
        model = _build_model(replace(config, vocab_size=len(tok)))
        if config.minilm_init:
            with torch.no_grad():
                model.shared.weight.copy_(_minilm_embeddings(tok, config.d_model, gen))
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.98),
                                weight_decay=config.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, config))
        model.train()
        smoothing = config.label_smoothing
        losses, order, pos = [], rng.permutation(len(src)), 0
        bar = tqdm(range(config.steps), desc=f"SFT pi_0 ({config.name})", disable=not progress, mininterval=2)
        for _ in bar:
            if pos + config.batch_size > len(order):
                order, pos = rng.permutation(len(src)), 0
            idx = order[pos:pos + config.batch_size]
            pos += config.batch_size
            ids = pad([src[i] for i in idx], tok.pad_token_id)
            labels = pad([tgt[i] for i in idx], -100)
            mask = (ids != tok.pad_token_id).long()
            dec = model.prepare_decoder_input_ids_from_labels(labels=labels)  # shift right, -100 -> pad
            logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(),
                                                     ignore_index=-100, label_smoothing=smoothing)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if len(losses) % 50 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
    return Policy(model.eval(), tok, config), losses


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
    with _threads(config.num_threads):
        policy, losses = _fit(config, [str(d) for d in train_df["document"]],
                              [str(s) for s in train_df["summary"]], progress)
    wall = time.perf_counter() - t0
    every = max(1, config.steps // 50)
    # a stale or mismatching cache (or a concurrent writer's copy) is replaced
    with publish_dir(final) as tmp:
        with quiet_loading():
            policy.save(tmp)
        manifest = {"format": CACHE_FORMAT, "config": asdict(config), "data_sha256": sha,
                    "code": code_identity("sft"),
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
