"""Benchmark (``nox -s bench``): one DPO optimisation step of tpo_core's trainer against TRL's ``DPOTrainer``.

``python -m tpo_core.commands.bench --out results/bench.csv``. Same model, batch, loss and optimizer for both:

* **Model:** a ``LlamaForCausalLM`` with SmolLM2-135M's shape (30 layers, hidden 576, MLP 1536, 9 heads /
  3 KV heads, vocab 49152, tied embeddings), random weights (speed does not depend on them), fp32, on CPU.
* **Batch:** 8 pairs, prompt 64 + response 32 tokens (31 words + EOS), so 16 sequences × 96 tokens. A
  word-level tokenizer maps each word to one token, so both trainers see identical token ids.
* **Step:** sigmoid DPO, β = 0.1, fused ``torch.optim.AdamW`` (HF's default ``adamw_torch_fused`` for TRL),
  lr 5e-5 cosine, grad-norm clip 1.0, no gradient checkpointing (TRL's default would recompute
  activations), fp32 (TRL's default would autocast to bf16 on CPU), a log row every step for both.

Timing: the wall time between consecutive optimizer-step ends (data, forward, backward, optimizer, logging),
``--steps`` steps after ``--warmup`` per round; ``--rounds`` rounds alternate which trainer goes first. Other
jobs on a shared machine only slow steps down, so the headline is the fastest step (medians kept too).
tpo_core computes reference log-probs once per iteration, outside its steps; that time (per 8 pairs) is added
to its step time in the "1 epoch" row, the work TRL does per step; the authors train 3 epochs, where the
reference pass is shared by 3 steps per pair ("3 epochs" row).

FLOPs per step are estimated as ``6·P·T`` (policy forward + backward) ``+ 2·P·T`` (reference forward), P the
parameter count (tied embedding counted once, as the LM head), T the tokens in the batch (1,536); attention
score FLOPs (about 1% at 96 tokens) are ignored. tpo_core executes fewer FLOPs than that nominal count: it
runs each prompt once for both responses (KV cache; 1,024 instead of 1,536 token positions) and builds LM-head
logits only where a response token is predicted; the "executed" columns count that work instead. FLOP/s are divided by the machine's fp32 peak as measured by ``torch.matmul``
on 4096² matrices (best of 5, measured twice per round, the maximum kept), same process and threads.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd
import torch

from tpo_core.tpo.trainer import PreferenceConfig, PreferenceTrainer

SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048, rope_theta=100000.0,
                    tie_word_embeddings=True)
TINY = dict(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=1, max_position_embeddings=256, tie_word_embeddings=True)


def word_tokenizer(vocab_size: int):
    """A word-level tokenizer: ``</s>`` = 0 (EOS and pad), then ``w1`` ... ``w{vocab_size-1}``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"</s>": 0, **{f"w{i}": i for i in range(1, vocab_size)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="</s>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="</s>", pad_token="</s>", unk_token="</s>")


def make_pairs(n: int, prompt_tokens: int, response_tokens: int, vocab_size: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)

    def words(k):
        return " ".join(f"w{i}" for i in torch.randint(1, vocab_size, (k,), generator=g).tolist())

    return [{"prompt": words(prompt_tokens), "chosen": " " + words(response_tokens - 1),
             "rejected": " " + words(response_tokens - 1)} for _ in range(n)]


def matmul_peak(n: int = 4096, repeats: int = 5, *, device="cpu", dtype=torch.float32) -> float:
    """Best ``torch.matmul`` FLOP/s on n×n matrices in ``dtype`` on ``device`` (CUDA: synchronised, with its
    current TF32 setting)."""
    device = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    torch.matmul(a, b)
    sync()
    best = min(_timed(lambda: (torch.matmul(a, b), sync())) for _ in range(repeats))
    return 2 * n**3 / best


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _timed(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


class TpoCoreRunner:
    """tpo_core: one ``train_iteration`` of ``warmup + steps`` optimizer steps per round."""

    def __init__(self, model, tok, n_pairs):
        cfg = PreferenceConfig(loss_type="dpo", beta=0.1, lr=5e-5, warmup_steps=0, epochs=1, batch_size=n_pairs,
                               grad_accum=1, max_grad_norm=1.0, ref_batch_size=n_pairs, max_prompt_tokens=10**6,
                               max_response_tokens=10**6, progress=False, bf16=False)
        self.trainer, self.n_pairs = PreferenceTrainer(model, tok, cfg), n_pairs

    def round(self, pairs, warmup, steps):
        logs = self.trainer.train_iteration(pairs[:(warmup + steps) * self.n_pairs], 0)
        # reference pass of this round, per step (the first round's includes one-off warm-up costs)
        return logs.seconds.tolist()[warmup:], self.trainer.reference_seconds / (warmup + steps)


class TrlRunner:
    """TRL's ``DPOTrainer`` (explicit ``ref_model``, as trl >= 0.29 requires); one ``train()`` per round."""

    def __init__(self, model, tok, n_pairs, pairs, warmup, steps, tmp):
        from datasets import Dataset
        from transformers import TrainerCallback
        from trl import DPOConfig, DPOTrainer

        self.ends = ends = []

        class Clock(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                ends.append(time.perf_counter())

        with warnings.catch_warnings():  # transformers 5 deprecation notices about TRL's own arguments
            warnings.simplefilter("ignore", FutureWarning)
            args = DPOConfig(
                output_dir=tmp, per_device_train_batch_size=n_pairs, gradient_accumulation_steps=1,
                learning_rate=5e-5, lr_scheduler_type="cosine", warmup_steps=0, max_steps=warmup + steps, beta=0.1,
                loss_type=["sigmoid"], max_grad_norm=1.0, weight_decay=0.0, optim="adamw_torch_fused",
                gradient_checkpointing=False, bf16=False, use_cpu=True, max_length=None,
                precompute_ref_log_probs=False, logging_steps=1, save_strategy="no", report_to="none",
                disable_tqdm=True, dataloader_num_workers=0, seed=0)
            self.trainer = DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=args, processing_class=tok,
                                      train_dataset=Dataset.from_list(pairs[:(warmup + steps) * n_pairs]),
                                      callbacks=[Clock()])
        self.warmup = warmup

    def round(self, pairs, warmup, steps):
        self.ends.clear()
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # TRL prints a dict per step
            warnings.simplefilter("ignore", FutureWarning)
            self.trainer.train()
        return [b - a for a, b in zip(self.ends[warmup - 1:], self.ends[warmup:])], 0.0


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="results/bench.csv")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--response-tokens", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3, help="alternating TRL / tpo_core rounds")
    ap.add_argument("--layers", type=int, default=None, help="override the layer count (quick runs)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--tiny", action="store_true", help="a 1-layer toy model (smoke test), not SmolLM2's shape")
    a = ap.parse_args(argv)
    if a.warmup < 1 or a.steps < 1:
        ap.error("--warmup and --steps must be >= 1")
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if a.threads:
        torch.set_num_threads(a.threads)
    shape = dict(TINY if a.tiny else SMOLLM2_135M)
    if a.layers:
        shape["num_hidden_layers"] = a.layers
    tok = word_tokenizer(shape["vocab_size"])
    config = LlamaConfig(**shape, bos_token_id=None, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(0)
    init = LlamaForCausalLM(config).state_dict()
    n_params = sum(p.numel() for p in LlamaForCausalLM(config).parameters())
    pairs = make_pairs((a.warmup + a.steps) * a.pairs, a.prompt_tokens, a.response_tokens, shape["vocab_size"])
    tokens = 2 * a.pairs * (a.prompt_tokens + a.response_tokens)
    load = os.getloadavg()[0]

    peaks, times, refs = [], {"trl": [], "tpo_core": []}, []
    with tempfile.TemporaryDirectory() as tmp:
        runners = {}
        for name in ("trl", "tpo_core"):
            model = LlamaForCausalLM(config)
            model.load_state_dict(init)
            runners[name] = (TrlRunner(model, tok, a.pairs, pairs, a.warmup, a.steps, tmp) if name == "trl"
                             else TpoCoreRunner(model, tok, a.pairs))
        for r in range(a.rounds):  # alternate the order, so that load drift hits both alike
            peaks += [matmul_peak(1024 if a.tiny else 4096) for _ in range(2)]
            for name in (("trl", "tpo_core") if r % 2 == 0 else ("tpo_core", "trl")):
                step_s, ref_s = runners[name].round(pairs, a.warmup, a.steps)
                times[name] += step_s
                refs += [ref_s] if name == "tpo_core" else []
        peaks += [matmul_peak(1024 if a.tiny else 4096) for _ in range(2)]

    # Other jobs on the machine only ever slow a step down, so the headline statistic is the fastest step
    # (and the fastest matmul); medians are kept alongside.
    peak = max(peaks)
    trl_s, tpo_s = min(times["trl"]), min(times["tpo_core"])
    ref_s = min(refs)
    med = {"trl": statistics.median(times["trl"]), "tpo_core": statistics.median(times["tpo_core"])}
    med_ref = statistics.median(refs[1:] or refs)

    # FLOPs: nominal 6PT (policy fwd + bwd) + 2PT (reference fwd). "Executed" counts what tpo_core runs: each
    # prompt once for both responses, LM-head logits only where a response token is predicted; P_head = vocab
    # x hidden (the tied embedding).
    p_head = shape["vocab_size"] * shape["hidden_size"]
    tpo_body_tokens = a.pairs * (a.prompt_tokens + 2 * a.response_tokens)
    tpo_logit_tokens = a.pairs * (1 + 2 * a.response_tokens)

    def executed(policy, ref, body_tokens, logit_tokens):
        return (6 * policy + 2 * ref) * ((n_params - p_head) * body_tokens + p_head * logit_tokens)

    rows = [  # name, best seconds, median seconds, reference seconds in it, nominal FLOPs, executed FLOPs
        ("trl DPOTrainer (reference forward every step)", trl_s, med["trl"], 0.0,
         8 * n_params * tokens, executed(1, 1, tokens, tokens)),
        ("tpo_core, 1 epoch (step + its reference pass)", tpo_s + ref_s, med["tpo_core"] + med_ref, ref_s,
         8 * n_params * tokens, executed(1, 1, tpo_body_tokens, tpo_logit_tokens)),
        ("tpo_core, 3 epochs as the authors (reference pass / 3)", tpo_s + ref_s / 3,
         med["tpo_core"] + med_ref / 3, ref_s / 3, (6 + 2 / 3) * n_params * tokens,
         executed(1, 1 / 3, tpo_body_tokens, tpo_logit_tokens)),
        ("tpo_core, policy step only", tpo_s, med["tpo_core"], 0.0, 6 * n_params * tokens,
         executed(1, 0, tpo_body_tokens, tpo_logit_tokens))]
    out = pd.DataFrame([{
        "system": name, "seconds_per_step": s, "pairs_per_s": a.pairs / s, "speedup_vs_trl": trl_s / s,
        "nominal_flops_per_step": nominal, "nominal_flops_per_s": nominal / s,
        "fraction_of_matmul_peak": nominal / s / peak, "executed_flops_per_step": done,
        "executed_fraction_of_matmul_peak": done / s / peak, "median_seconds_per_step": m,
        "median_speedup_vs_trl": med["trl"] / m, "reference_seconds_per_step": ref,
        "step_seconds": " ".join(f"{x:.3f}" for x in times["trl" if name.startswith("trl") else "tpo_core"]),
        "matmul_peak_fp32_flops_per_s": peak, "matmul_peaks_measured": " ".join(f"{x:.4g}" for x in peaks),
        "params": n_params, "layers": shape["num_hidden_layers"], "pairs_per_step": a.pairs,
        "tokens_per_step": tokens, "threads": torch.get_num_threads(), "load_1min_at_start": load,
        "load_1min_at_end": os.getloadavg()[0], "cpu": _cpu_name(), "torch": torch.__version__,
        "model": "tiny" if a.tiny else "SmolLM2-135M shape (random)",
    } for name, s, m, ref, nominal, done in rows])
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(a.out, index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 8):
        print(out[["system", "seconds_per_step", "pairs_per_s", "speedup_vs_trl", "median_speedup_vs_trl",
                   "fraction_of_matmul_peak", "executed_fraction_of_matmul_peak"]].to_string())
    return out


if __name__ == "__main__":
    main()
