"""The SFT recipe that trains ``pi_0`` of the ``embedded`` preset (:func:`fit`): all the code that computes its
weights, and nothing else (:mod:`tpo_core.world.sft` caches the result and keys the cache by this module's code).

* a cased BPE tokenizer (Metaspace pre-tokenizer like T5's SentencePiece) trained offline on the SFT
  documents and synopses;
* the shared token embeddings initialised from **all-MiniLM-L6-v2**'s word-piece embeddings (each BPE entry
  gets the mean of its word pieces, projected by PCA to ``d_model``);
* a T5 architecture (:class:`transformers.T5ForConditionalGeneration`) of :class:`tpo_core.world.policy_config.PolicyConfig`'s size;
* AdamW with warm-up and cosine decay over a fixed number of steps (not wall time, so reruns agree).

It imports only :mod:`tpo_core.world.policy_config` and :mod:`tpo_core.tpo.logprobs` from the package, so an edit
elsewhere (the policy's sampling, the caches, the assets' loaders) does not retrain ``pi_0``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from tpo_core.tpo.logprobs import pad
from tpo_core.world.policy_config import SPECIAL_TOKENS, PolicyConfig

__all__ = ["fit"]


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


def _minilm_embeddings(tok, d_model: int, gen: torch.Generator, minilm_dir: str | Path) -> torch.Tensor:
    """A ``(len(tok), d_model)`` embedding matrix from all-MiniLM-L6-v2's word-piece embeddings (the model
    folder ``minilm_dir``, checked by the caller).

    Each entry (``▁`` stripped) is re-tokenized by MiniLM's uncased WordPiece and gets the mean of those
    pieces' input embeddings; the rows are centred, projected on their top ``d_model`` principal
    directions (when ``d_model < 384``) and scaled to unit standard deviation, T5's embedding scale.
    Specials and entries MiniLM cannot read keep a random N(0, 1) row.
    """
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    path = Path(minilm_dir)
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


def fit(config: PolicyConfig, documents: list[str], summaries: list[str], *, minilm_dir: str | Path | None = None,
        progress: bool = False):
    """Train tokenizer and model from scratch on the pairs ``documents[i] -> summaries[i]``; returns
    ``(model, tokenizer, losses)`` (the model in eval mode, one loss per step). ``minilm_dir``: the
    all-MiniLM-L6-v2 folder, required when ``config.minilm_init``. Runs on ``config.num_threads`` threads
    (restored after); global RNG state is untouched. ``progress``: a tqdm bar with the loss."""
    if config.minilm_init and minilm_dir is None:
        raise ValueError("config.minilm_init needs minilm_dir, the all-MiniLM-L6-v2 model folder")
    with _threads(config.num_threads):
        return _fit(config, list(documents), list(summaries), minilm_dir, progress)


def _fit(config: PolicyConfig, documents: list[str], summaries: list[str], minilm_dir, progress: bool):
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
                model.shared.weight.copy_(_minilm_embeddings(tok, config.d_model, gen, minilm_dir))
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
    return model.eval(), tok, losses
