"""The configuration of ``pi_0``: :class:`PolicyConfig` (tokenizer, architecture, lengths, SFT budget, seed),
the special tokens, and the two configurations the presets use (:data:`EMBEDDED`, :data:`SMOKE`).

A leaf module: the SFT recipe (:mod:`tpo_core.world.sft_recipe`) and the policy wrapper (:mod:`tpo_core.world.policy`)
both read it, and neither's other code is part of what trains ``pi_0``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PolicyConfig", "SMOKE", "EMBEDDED", "RUNTIME_FIELDS", "SPECIAL_TOKENS"]

RUNTIME_FIELDS = ("num_threads",)  # do not change what is trained (up to float summation order)
SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]  # ids 0, 1, 2; <pad> is also T5's decoder start token


@dataclass(frozen=True)
class PolicyConfig:
    """Everything that defines ``pi_0``: tokenizer, architecture, lengths, SFT budget, seed."""

    name: str = "embedded"
    """Label used in the cache folder name and the manifest."""
    vocab_size: int = 8000
    """Target size of the BPE vocabulary trained on the SFT documents and synopses (3 specials included)."""
    d_model: int = 128
    """Width of the residual stream and of the tied token embeddings."""
    d_ff: int = 512
    """Hidden width of each ReLU feed-forward block."""
    num_heads: int = 4
    """Attention heads per layer (``d_kv = d_model // num_heads``)."""
    encoder_layers: int = 3
    """Encoder blocks (run once per prompt, so cheap at sampling time)."""
    decoder_layers: int = 2
    """Decoder blocks (run once per generated token; they set the sampling speed)."""
    dropout: float = 0.0
    """Dropout rate inside the T5 blocks during SFT."""
    max_source_tokens: int = 32
    """Documents are truncated to their first ``max_source_tokens`` tokens (EOS included)."""
    max_target_tokens: int = 24
    """Synopses are truncated to this many tokens (EOS included); also the default ``max_new_tokens``."""
    minilm_init: bool = True
    """Initialise the shared embeddings from all-MiniLM-L6-v2's word-piece embeddings (PCA to d_model)."""
    steps: int = 2000
    """Optimiser steps of SFT."""
    batch_size: int = 64
    """Examples per step (dynamic padding)."""
    lr: float = 3e-3
    """Peak AdamW learning rate."""
    warmup_steps: int = 200
    """Linear warm-up steps, then cosine decay to ``min_lr_ratio * lr`` at ``steps``."""
    min_lr_ratio: float = 0.05
    """Final learning rate as a fraction of the peak."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    label_smoothing: float = 0.0
    """Label smoothing of the SFT cross-entropy."""
    seed: int = 0
    """Seed of the model initialisation, dropout and batch order."""
    num_threads: int = 2
    """``torch.set_num_threads`` during training (restored afterwards). Runtime only: not part of the
    cache key, so a policy trained with 1 thread is reused by a 2-thread run and vice versa."""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"name must be a non-empty [A-Za-z0-9_-] string (it names the cache folder), "
                             f"got {self.name!r}")
        for f in ("vocab_size", "d_model", "d_ff", "num_heads", "encoder_layers", "decoder_layers",
                  "max_source_tokens", "max_target_tokens", "steps", "batch_size", "num_threads"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{f} must be a positive integer, got {v!r}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")
        if self.vocab_size <= len(SPECIAL_TOKENS):
            raise ValueError(f"vocab_size must exceed {len(SPECIAL_TOKENS)}")
        if not (self.lr > 0 and 0 <= self.dropout < 1 and 0 <= self.label_smoothing < 1
                and 0 <= self.min_lr_ratio <= 1 and self.warmup_steps >= 0):
            raise ValueError("lr must be > 0; dropout, label_smoothing in [0, 1); min_lr_ratio in [0, 1]")


SMOKE = PolicyConfig(name="smoke", vocab_size=300, d_model=32, d_ff=64, num_heads=2, encoder_layers=1,
                     decoder_layers=1, max_source_tokens=32, max_target_tokens=12, minilm_init=False,
                     steps=40, batch_size=16, lr=3e-3, warmup_steps=5, num_threads=1)
"""Tiny configuration for tests: trains in a few seconds on a few hundred pairs."""

EMBEDDED = PolicyConfig()
"""The ``embedded`` preset's ``pi_0`` (see the module docstring for the recipe)."""
