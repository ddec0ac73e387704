"""The preference-optimisation trainer ``Alg_PO`` of empirical TPO (paper §5, Alg. 3; the authors' DPO step).

One iteration of the authors' loop trains ``π^(k+1)`` from ``π^(k)`` on that iteration's labelled pairs with
DPO (or IPO, or one of two XPO readings, :mod:`tpo_core.tpo.losses`). :class:`PreferenceTrainer` does this for
encoder-decoder models (T5, as in the paper: input = prompt, labels = response) and causal models (prompt +
response concatenated, prompt tokens masked), on CPU, one GPU or several (HF ``accelerate``; bf16 on GPUs
that support it).

Read top to bottom: :class:`PreferenceConfig` (one docstring per field, the authors' values as defaults),
:func:`make_encode` (text -> tensors), :func:`sequence_logprobs` (summed response log-probs), then
:class:`PreferenceTrainer`, whose :meth:`~PreferenceTrainer.train_iteration` is one iteration, in memory:

1. Reference log-probs of every pair are computed **once**, before any update (same maths as TRL's per-step
   reference forward, one forward per pair instead of one per pair per epoch). With
   ``reference="previous"`` (the authors' code) the reference is the model as it enters the iteration, so
   no copy is kept; with ``"initial"`` it is a frozen copy of the model given to the constructor (``π_0``).
2. ``epochs`` passes over the pairs, shuffled with ``torch.Generator`` seeded ``seed + iteration``; AdamW
   (torch's fused kernel), cosine schedule with warm-up, gradient accumulation and clipping. Chosen and
   rejected (and, for ``xpo-trl``, the reference sample) go through the model together, each prompt once
   (:func:`sequence_logprobs`). On several processes (DDP) each takes its slice of every global micro-batch of
   ``batch_size × num_processes`` pairs, loss weighted so that the update is the single-process one
   (:func:`tpo_core.plumbing.sharding.local_batches`).
3. A non-finite loss or non-finite weights stop the iteration with ``FloatingPointError``.

The trainer never touches the disk; :mod:`tpo_core.study.checkpoints` keeps each iteration's result.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import pandas as pd
import torch
from tqdm import tqdm

from tpo_core.tpo import losses as L
from tpo_core.tpo.logprobs import make_encode, sequence_logprobs
from tpo_core.plumbing.sharding import local_batches
from tpo_core.plumbing.streams import trainer_seed

__all__ = ["PreferenceConfig", "PreferenceTrainer", "make_encode", "sequence_logprobs", "LOG_COLUMNS"]

#: The columns of ``logs.csv`` (one row per ``log_every`` optimiser steps; each value is the mean over the
#: micro-batches since the last row, averaged over processes), as TRL documents its DPO metrics:
#:
#: * ``iteration``, ``epoch``, ``step``: where in training (``step`` counts optimiser steps, from 1).
#: * ``loss``: the preference loss of :mod:`tpo_core.tpo.losses` (DPO, IPO or XPO), mean over pairs.
#: * ``chosen_reward`` / ``rejected_reward``: the implicit rewards ``β·(log π_θ(y|x) − log π_ref(y|x))`` of
#:   the chosen / rejected responses (TRL's ``rewards/chosen`` and ``rewards/rejected``).
#: * ``margin``: ``chosen_reward − rejected_reward`` (TRL's ``rewards/margins``).
#: * ``accuracy``: the share of pairs with ``chosen_reward > rejected_reward`` (TRL's ``rewards/accuracies``).
#: * ``implicit_kl``: ``½·[(log π_θ − log π_ref)(chosen) + (log π_θ − log π_ref)(rejected)]``, mean over
#:   pairs: the log-ratio averaged over *both* responses of a pair, a sample estimate of how far the policy
#:   has moved from the reference on the training pairs (in nats per response, without β).
#: * ``lr``: the learning rate of the step; ``seconds``: wall-clock seconds per optimiser step.
LOG_COLUMNS = ("iteration", "epoch", "step", "loss", "chosen_reward", "rejected_reward", "margin", "accuracy",
               "implicit_kl", "lr", "seconds")


@dataclass
class PreferenceConfig:
    """Hyper-parameters of one preference-optimisation iteration (defaults: the authors' DPO run)."""

    loss_type: str = "dpo"
    """"dpo" (sigmoid), "ipo", "xpo-authors" (DPO − α·mean log π on the pair) or "xpo-trl" (DPO + α·log π(ã),
    ã a reference sample: each pair then needs a "ref_sample" response)."""
    beta: float = 0.1
    """KL coefficient β (TRL 0.7.10's default; the authors' scripts do not set it)."""
    alpha: float = 1e-2
    """XPO coefficient α (the authors' 1e-2, kept for all iterations; TRL's default is 1e-5)."""
    ipo_length_normalise: bool = False
    """IPO only: divide log-ratios by response length as TRL 1.x does (False: summed, the authors')."""
    lr: float = 5e-5
    """Peak learning rate (5e-5 for DPO/XPO; the paper uses 1e-5 for IPO)."""
    warmup_steps: int = 100
    """Linear warm-up steps of the cosine schedule (optimizer steps, restarted every iteration)."""
    weight_decay: float = 0.0
    """AdamW weight decay (0: the script's 0.01 is never passed on)."""
    epochs: int = 3
    """Passes over the iteration's pairs."""
    batch_size: int = 1
    """Pairs per device per micro-batch."""
    grad_accum: int = 16
    """Micro-batches per optimizer step (authors: 1 × 16 × 4 GPUs = 64 pairs per step). An epoch's last,
    partial group still steps (scaled by 1/grad_accum, as accelerate does)."""
    max_grad_norm: float | None = 1.0
    """Gradient-norm clipping (HF Trainer default); None disables it."""
    reference: str = "previous"
    """"previous": π_ref = the model entering the iteration (authors); "initial": a frozen π_0 throughout."""
    ref_batch_size: int = 16
    """Pairs per forward when precomputing reference log-probs."""
    max_prompt_tokens: int = 1000
    """Prompt truncation (encoder-decoder: keep the start, as the authors; causal: keep the end)."""
    max_response_tokens: int = 256
    """Response truncation, EOS included."""
    share_prompts: bool = True
    """Run each prompt once for its chosen and rejected responses (same log-probs, fewer FLOPs; see
    :func:`sequence_logprobs`)."""
    disable_dropout: bool = True
    """Train with dropout off (authors, TRL's ``disable_dropout``). Done by running the model in eval mode,
    which also covers dropout that is not an ``nn.Dropout`` module (T5's attention dropout)."""
    seed: int = 0
    """Iteration k shuffles and seeds torch with ``seed + k``."""
    bf16: bool = True
    """bf16 mixed precision, used only on a CUDA device that supports it."""
    log_every: int = 1
    """Write a log row every this many optimizer steps (means over the steps in between)."""
    progress: bool = True
    """Show a tqdm progress bar (main process only)."""

    def __post_init__(self):
        if self.loss_type not in L.LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {L.LOSS_TYPES}, got {self.loss_type!r}")
        if self.reference not in ("previous", "initial"):
            raise ValueError(f"reference must be 'previous' or 'initial', got {self.reference!r}")
        for name in ("epochs", "batch_size", "grad_accum", "ref_batch_size", "log_every", "max_response_tokens"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("beta", "alpha", "lr", "weight_decay"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        if self.beta <= 0 or self.lr <= 0:
            raise ValueError(f"beta and lr must be > 0, got beta={self.beta}, lr={self.lr}")
        if self.max_grad_norm is not None and not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise ValueError(f"max_grad_norm must be a finite number > 0 or None, got {self.max_grad_norm!r}")


class PreferenceTrainer:
    """Trains a policy on labelled pairs ``{prompt, chosen, rejected[, ref_sample]}``, one iteration per call.

    ``tokenizer`` is a HF tokenizer (then :func:`make_encode` builds the encoder) or an ``encode(prompts,
    responses)`` function returning ``input_ids``, ``attention_mask`` and −100-masked ``labels``. With
    ``reference="initial"``, ``ref_model`` is π_0 (default: a copy of ``model`` as given; pass π_0 explicitly
    when resuming). After :meth:`train_iteration` for iteration k returns, ``self.model`` holds ``iter_k``.
    """

    def __init__(self, model, tokenizer, config: PreferenceConfig | None = None, accelerator=None, *,
                 ref_model=None):
        from accelerate import Accelerator
        from transformers import PreTrainedTokenizerBase

        self.config = cfg = config or PreferenceConfig()
        self.is_encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
        if isinstance(tokenizer, PreTrainedTokenizerBase):
            self.tokenizer = tokenizer
            self.encode = make_encode(tokenizer, self.is_encoder_decoder, cfg.max_prompt_tokens,
                                      cfg.max_response_tokens)
        elif callable(tokenizer):
            self.tokenizer, self.encode = None, tokenizer
        else:
            raise TypeError("tokenizer must be a transformers tokenizer or an encode(prompts, responses) function")
        if accelerator is None:
            cuda = torch.cuda.is_available()
            bf16 = cfg.bf16 and cuda and torch.cuda.is_bf16_supported()
            accelerator = Accelerator(cpu=not cuda, mixed_precision="bf16" if bf16 else "no",
                                      gradient_accumulation_steps=cfg.grad_accum)
        self.accelerator = acc = accelerator
        if acc.distributed_type.value in ("DEEPSPEED", "FSDP", "MEGATRON_LM"):  # only DDP is built and tested
            raise ValueError(f"PreferenceTrainer supports one process or DDP (accelerate's multi-GPU/multi-CPU), "
                             f"not {acc.distributed_type.value}: it prepares model and optimizer separately, which "
                             "DeepSpeed does not allow; use an accelerate config with distributed_type MULTI_GPU")
        self.ref_model = None
        if cfg.reference == "initial":
            self.ref_model = (ref_model if ref_model is not None else copy.deepcopy(model)).to(acc.device).eval()
            self.ref_model.requires_grad_(False)
        self.model = acc.prepare_model(model)
        self.reference_seconds = float("nan")  # wall time of the last reference precomputation

    # ------------------------------------------------------------------ pieces of an iteration
    def _forward(self, model, rows, responses):
        k = len(responses) // len(rows)  # responses come in k blocks, each for the same rows' prompts
        batch = self.encode([r["prompt"] for r in rows] * k, responses)
        batch = {key: v.to(self.accelerator.device) for key, v in batch.items()}
        logps = sequence_logprobs(model, batch, self.is_encoder_decoder, k if self.config.share_prompts else 1)
        return logps, (batch["labels"] != -100).sum(-1)

    @torch.no_grad()
    def _sharded_reference_logprobs(self, pairs) -> torch.Tensor:
        """:meth:`reference_logprobs` with its blocks of ``ref_batch_size`` pairs dealt round-robin to the
        processes and gathered: the same blocks, the same code path (the unwrapped model, so no DDP collective
        runs in a forward that other processes may not make), hence the single-process numbers, computed once."""
        from accelerate.utils import gather_object

        acc = self.accelerator
        model = acc.unwrap_model(self.ref_model if self.ref_model is not None else self.model)
        model.eval()
        bs = self.config.ref_batch_size
        local = []
        with acc.autocast():
            for i in list(range(0, len(pairs), bs))[acc.process_index::acc.num_processes]:
                rows = pairs[i:i + bs]
                lp, _ = self._forward(model, rows, [r["chosen"] for r in rows] + [r["rejected"] for r in rows])
                local.append((i, lp.view(2, -1).cpu()))
        blocks = dict(gather_object(local))
        return torch.cat([blocks[i] for i in range(0, len(pairs), bs)], dim=1).to(acc.device)

    @torch.no_grad()
    def reference_logprobs(self, pairs) -> torch.Tensor:
        """``(2, n)`` reference log-probs of the chosen (row 0) and rejected (row 1) responses, before training."""
        if self.accelerator.num_processes > 1:  # blocks dealt to the processes, then gathered
            return self._sharded_reference_logprobs(pairs)
        model = self.ref_model if self.ref_model is not None else self.model
        model.eval()
        out, bs = [], self.config.ref_batch_size
        with self.accelerator.autocast():
            for i in range(0, len(pairs), bs):
                rows = pairs[i:i + bs]
                lp, _ = self._forward(model, rows, [r["chosen"] for r in rows] + [r["rejected"] for r in rows])
                out.append(lp.view(2, -1))
        return torch.cat(out, dim=1)

    def _loss(self, rows, ref_c, ref_r, scale: float | None = None):
        """Loss and log statistics of a micro-batch: the mean over ``rows``, or with ``scale`` their sum times
        ``scale`` (several processes: ``num_processes / global batch``; :func:`tpo_core.plumbing.sharding.local_batches`)."""
        cfg, n = self.config, len(rows)
        responses = [r["chosen"] for r in rows] + [r["rejected"] for r in rows]
        if cfg.loss_type == "xpo-trl":
            responses += [r["ref_sample"] for r in rows]
        logps, lengths = self._forward(self.model, rows, responses)
        pc, pr = logps[:n], logps[n:2 * n]
        if cfg.loss_type == "dpo":
            losses, cr, rr = L.dpo_loss(pc, pr, ref_c, ref_r, cfg.beta)
        elif cfg.loss_type == "ipo":
            lens = (lengths[:n], lengths[n:2 * n]) if cfg.ipo_length_normalise else (None, None)
            losses, cr, rr = L.ipo_loss(pc, pr, ref_c, ref_r, cfg.beta, *lens)
        elif cfg.loss_type == "xpo-authors":
            losses, cr, rr = L.xpo_loss_authors(pc, pr, ref_c, ref_r, cfg.beta, cfg.alpha)
        else:
            losses, cr, rr = L.xpo_loss_trl(pc, pr, ref_c, ref_r, cfg.beta, logps[2 * n:], cfg.alpha)
        loss = losses.mean() if scale is None else losses.sum() * scale
        kl = 0.5 * ((pc - ref_c) + (pr - ref_r)).detach().mean()
        stats = torch.stack([losses.mean().detach(), cr.mean(), rr.mean(), (cr - rr).mean(), (cr > rr).float().mean(),
                             kl])
        return loss, stats

    # ------------------------------------------------------------------ one iteration
    def train_iteration(self, pairs, iteration: int) -> pd.DataFrame:
        """Train ``self.model`` in memory on ``pairs``, iteration ``iteration`` of Alg. 3; return the per-step logs
        (:data:`LOG_COLUMNS`). Nothing is written: :mod:`tpo_core.study.checkpoints` keeps the result."""
        cfg, acc = self.config, self.accelerator
        pairs = _check_pairs(pairs, cfg.loss_type == "xpo-trl")
        torch.manual_seed(trainer_seed(cfg.seed, iteration))
        gen = torch.Generator().manual_seed(trainer_seed(cfg.seed, iteration))
        acc.gradient_accumulation_steps = cfg.grad_accum

        t0 = time.perf_counter()
        ref = self.reference_logprobs(pairs)
        self.reference_seconds = time.perf_counter() - t0

        optimizer = acc.prepare_optimizer(torch.optim.AdamW(self.model.parameters(), lr=cfg.lr,
                                                            weight_decay=cfg.weight_decay, fused=_fusable(self.model)))
        from transformers import get_cosine_schedule_with_warmup
        micro = math.ceil(len(pairs) / (cfg.batch_size * acc.num_processes))
        total = cfg.epochs * math.ceil(micro / cfg.grad_accum)
        scheduler = get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, total)

        self.model.train(not cfg.disable_dropout)  # eval mode = no dropout anywhere, incl. T5's functional one
        rows, step, acc_stats, n_micro, t_step = [], 0, 0.0, 0, time.perf_counter()
        bar = tqdm(total=total, desc=f"iteration {iteration}", disable=not (cfg.progress and acc.is_main_process))
        for epoch in range(cfg.epochs):
            order = torch.randperm(len(pairs), generator=gen)
            if acc.num_processes == 1:
                loader = acc.prepare_data_loader(torch.utils.data.DataLoader(order, batch_size=cfg.batch_size))
            else:  # each process its slice of every global micro-batch, weighted (tpo_core.plumbing.sharding)
                loader = _sharded_loader(order, cfg.batch_size, acc.num_processes, acc.process_index)
            for idx in loader:
                scale = weight = None
                if acc.num_processes > 1:
                    idx, n_real, n_global = idx
                    scale = acc.num_processes / n_global if n_real else 0.0  # DDP averages: the global mean
                    weight = n_real * scale  # the reduced "mean" of the statistics: the global batch's mean
                with acc.accumulate(self.model):
                    idx = idx.to(ref.device)
                    loss, stats = self._loss([pairs[i] for i in idx.tolist()], ref[0, idx], ref[1, idx], scale)
                    if not torch.isfinite(loss):
                        bar.close()
                        raise FloatingPointError(
                            f"iteration {iteration}: non-finite loss {float(loss.detach())} at epoch {epoch}, "
                            f"step {step + 1}; no checkpoint is written (lower the learning rate or beta?)")
                    if weight is not None:
                        stats = stats * weight
                    acc.backward(loss)
                    if acc.sync_gradients and cfg.max_grad_norm is not None:
                        acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad()
                acc_stats, n_micro = acc_stats + stats, n_micro + 1
                if not acc.sync_gradients:
                    continue
                lr = scheduler.get_last_lr()[0]
                scheduler.step()
                step += 1
                bar.update(1)
                if step % cfg.log_every == 0 or step == total:
                    mean = acc.reduce(acc_stats / n_micro, "mean").tolist()
                    seconds = (time.perf_counter() - t_step) / (step - (rows[-1]["step"] if rows else 0))
                    rows.append(dict(zip(LOG_COLUMNS, [iteration, epoch, step, *mean, lr, seconds])))
                    bar.set_postfix(loss=f"{mean[0]:.4f}", margin=f"{mean[3]:.3f}")
                    acc_stats, n_micro, t_step = 0.0, 0, time.perf_counter()
        bar.close()
        bad = [n for n, p in acc.unwrap_model(self.model).named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise FloatingPointError(f"iteration {iteration}: non-finite weights after training ({', '.join(bad[:3])}"
                                     f"{' ...' if len(bad) > 3 else ''}); no checkpoint is written")
        return pd.DataFrame(rows, columns=list(LOG_COLUMNS))


def _sharded_loader(order, per_device: int, num_processes: int, process_index: int):
    """This process's ``(indices, n_real, n_global)`` for every global micro-batch of ``order``, as an accelerate
    ``DataLoaderShard`` (so ``accumulate`` still syncs at the end of the epoch's last, partial group)."""
    from accelerate.data_loader import DataLoaderShard

    items = local_batches(order, per_device, num_processes, process_index)
    return DataLoaderShard(items, batch_size=None, collate_fn=lambda item: item)


def _fusable(model) -> bool:
    """torch's fused AdamW (same update, one kernel per step) runs on CPU and CUDA floating-point parameters."""
    return all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in model.parameters())


def _check_pairs(pairs, need_ref_sample: bool) -> list[dict]:
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs is empty")
    keys = ("prompt", "chosen", "rejected") + (("ref_sample",) if need_ref_sample else ())
    for i, p in enumerate(pairs):
        for k in keys:
            if not isinstance(p.get(k) if hasattr(p, "get") else None, str):
                raise ValueError(f"pairs[{i}] needs a str {k!r}" + (" (loss_type='xpo-trl' needs a response sampled"
                                 " from the reference policy)" if k == "ref_sample" else ""))
    return pairs
