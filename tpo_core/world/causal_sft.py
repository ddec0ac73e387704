"""``pi_0`` from a pretrained causal LM (the ``gpu`` preset's SmolLM2-135M): a short supervised fine-tuning on
the preset's own prompts and reference summaries, trained once and cached (:func:`train_causal_sft`).

The paper starts from a T5-small already fine-tuned for XSum; a pretrained chat LM does not yet answer the
Debian task in one line, so a few hundred steps of SFT give it the task's format before any preference
learning. The recipe: the response tokens' mean negative log-likelihood (the prompt is masked, the layout of
:func:`tpo_core.tpo.logprobs.make_encode`), AdamW with linear warm-up and cosine decay over a fixed number of
steps, mini-batches drawn from an explicit seeded generator. The cache folder's key hashes the configuration,
the training pairs, the base model's files and this module's code, as :mod:`tpo_core.world.sft` does for the T5.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from tpo_core.plumbing.common import quiet_loading
from tpo_core.plumbing.provenance import code_identity, publish_dir, sha256_file
from tpo_core.world.policy import Policy
from tpo_core.world.policy_config import PolicyConfig

__all__ = ["CausalSFTConfig", "CAUSAL_SFT", "ensure_causal_sft", "train_causal_sft", "causal_cache_folder"]


@dataclass(frozen=True)
class CausalSFTConfig:
    """One causal ``pi_0``: which pretrained LM, and how it is fine-tuned on the task."""

    name: str
    """Label of the cache folder (``sft-llm:<name>`` in a preset's ``policy``)."""
    asset: str
    """The offline pretrained LM (:data:`tpo_core.world.llm_assets.LLM_ASSETS`)."""
    steps: int = 300
    """Optimiser steps (fixed, so reruns agree)."""
    batch_size: int = 16
    """Pairs per step, drawn with replacement from the SFT split."""
    learning_rate: float = 5e-5
    """Peak AdamW learning rate."""
    warmup_steps: int = 20
    """Linear warm-up before the cosine decay."""
    max_prompt_tokens: int = 128
    """Prompts keep their last this-many tokens (the instruction at the end survives)."""
    max_response_tokens: int = 32
    """Longest response the policy samples (EOS included)."""
    seed: int = 0
    """Seed of the mini-batch draws."""


#: The causal starting policies by name: ``smollm2`` for the ``gpu`` preset, ``smollm2-smoke`` (2 steps) for tests.
CAUSAL_SFT = {c.name: c for c in (
    CausalSFTConfig(name="smollm2", asset="smollm2"),
    CausalSFTConfig(name="smollm2-smoke", asset="smollm2", steps=2, batch_size=2, warmup_steps=1,
                    max_prompt_tokens=48, max_response_tokens=8),
)}


def _pairs_sha256(prompts, responses) -> str:
    h = hashlib.sha256()
    for text in (t for pair in zip(prompts, responses) for t in pair):
        b = str(text).encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def _base_identity(base_dir: Path) -> dict:
    """sha256 of every file of the base model's folder (weights, config, tokenizer)."""
    return {p.name: sha256_file(p) for p in sorted(base_dir.iterdir()) if p.is_file()}


def causal_cache_folder(cache_dir, config: CausalSFTConfig, base_dir, prompts, responses) -> Path:
    """Where :func:`train_causal_sft` keeps ``pi_0``: ``cache_dir/<name>-<key>``, the key over the
    configuration, the pairs, the base model's files and this module's code."""
    blob = json.dumps({"config": asdict(config), "data": _pairs_sha256(prompts, responses),
                       "base": _base_identity(Path(base_dir)), "code": code_identity("world.causal_sft")},
                      sort_keys=True)
    return Path(cache_dir) / f"{config.name}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def _fit(config: CausalSFTConfig, base_dir: Path, prompts: list[str], responses: list[str], device) -> tuple:
    """The recipe: returns (model in eval mode, tokenizer, per-step losses)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_cosine_schedule_with_warmup

    from tpo_core.tpo.logprobs import make_encode

    with quiet_loading():
        tok = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True).to(device)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    encode = make_encode(tok, False, config.max_prompt_tokens, config.max_response_tokens)
    opt = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, config.warmup_steps, config.steps)
    gen, losses = torch.Generator().manual_seed(config.seed), []
    model.train()
    for _ in range(config.steps):
        idx = torch.randint(len(prompts), (config.batch_size,), generator=gen).tolist()
        batch = {k: v.to(device) for k, v in encode([prompts[i] for i in idx], [responses[i] for i in idx]).items()}
        loss = model(**batch).loss  # mean NLL of the response tokens (labels −100 on prompt and padding)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    return model.eval(), tok, losses


def ensure_causal_sft(config: CausalSFTConfig, base_dir, prompts, responses, *, cache_dir, device="cpu") -> Path:
    """The folder of ``pi_0``: :func:`_fit` of the LM in ``base_dir`` on (``prompts``, ``responses``), trained once
    and kept in :func:`causal_cache_folder` with a ``manifest.json`` (configuration, losses, wall time); the folder
    appears whole or not at all, and a later call with the same inputs only finds it."""
    prompts, responses = [str(p) for p in prompts], [str(r) for r in responses]
    if not prompts or len(prompts) != len(responses):
        raise ValueError(f"need as many responses as prompts, at least one: got {len(prompts)} and {len(responses)}")
    final = causal_cache_folder(cache_dir, config, base_dir, prompts, responses)
    if (final / "manifest.json").is_file():
        return final
    t0 = time.perf_counter()
    model, tok, losses = _fit(config, Path(base_dir), prompts, responses, device)
    policy = Policy(model.cpu(), tok, PolicyConfig(name=config.name, vocab_size=len(tok),
                                                   max_source_tokens=config.max_prompt_tokens,
                                                   max_target_tokens=config.max_response_tokens, minilm_init=False))
    with publish_dir(final) as tmp:
        with quiet_loading():
            policy.save(tmp)
        (tmp / "manifest.json").write_text(json.dumps(
            {"config": asdict(config), "pairs": len(prompts), "train_wall_s": round(time.perf_counter() - t0, 2),
             "first_loss": losses[0], "final_loss": sum(losses[-20:]) / len(losses[-20:]), "losses": losses},
            indent=2))
    return final


def train_causal_sft(config: CausalSFTConfig, base_dir, prompts, responses, *, cache_dir, device="cpu") -> Policy:
    """``pi_0`` loaded from :func:`ensure_causal_sft`'s folder."""
    return Policy.load(ensure_causal_sft(config, base_dir, prompts, responses, cache_dir=cache_dir, device=device))
