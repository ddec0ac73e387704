"""The GPU smoke check: the offline ``gpu`` preset's loop on one device, its throughput, and checks of what it made.

``python -m tpo_core.commands.gpu_smoke [--prompts 256] [--out results/gpu_smoke.csv]`` (``nox -s gpu_smoke``);
about 5 minutes on one H100 by design, most of it one-time work (the GGUF conversions, π_0's SFT). It needs
no network: everything comes from the installed packages. ``--tiny`` runs the same code on CPU at toy sizes
(the test suite does). It prints and writes:

* ``iteration:tpo``: one TPO iteration from π_0 (:func:`tpo_core.commands.bench_loop.bench_iteration`):
  labelled prompts per second, the seconds split into sampling, each source, the human and training;
* ``sampler``: :meth:`tpo_core.world.policy.Policy.sample` against ``generate(do_sample=True, top_k=0)`` on the
  same prompts (responses per second, their ratio), and the sampler's generated tokens per second;
* ``trainer``: the iteration's DPO training as model FLOP utilisation: ``6 N`` FLOPs per trained token and
  ``2 N`` per reference token (N the policy's parameters, every epoch counted), over the measured matmul peak
  of the device in the policy's dtype;
* checks (the command fails when one fails): greedy decoding equals ``generate(do_sample=False)`` on 8 prompts,
  the iteration labelled every prompt once, every pair has a chosen and a rejected response that differ, the
  trained weights moved and are finite.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from tpo_core.commands.bench import matmul_peak
from tpo_core.commands.bench_loop import bench_iteration, bench_sampler, generate_inputs

__all__ = ["main", "TINY"]

#: Toy sizes for ``--tiny`` (CPU, the test suite): the 2-step SFT, two reward sources, 4 prompts.
TINY = dict(policy="sft-llm:smollm2-smoke", sources={"rougeLsum": {"kind": "rougeLsum"},
                                                     "bertscore": {"kind": "bertscore"}},
            arms=None, prompts_per_iteration=4, n_candidates=2, pool_size=2, top_k=1, n_iterations=1,
            max_new_tokens=4, max_input_tokens=48, batch_size=2, update_every=2, warmup=1, n_test_prompts=2,
            eval_samples=1)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from tpo_core.study.report import cpu_flags

    return f"CPU ({torch.get_num_threads()} threads; flags {cpu_flags()})"


def _check_greedy(pol, docs, max_new: int) -> float:
    """Share of ``docs`` whose greedy response equals ``generate(do_sample=False)``'s."""
    enc, extra = generate_inputs(pol, docs)
    with torch.no_grad():
        ids = pol.model.generate(**enc, do_sample=False, max_new_tokens=max_new, **extra).cpu()
    if not pol.is_encoder_decoder:
        ids = ids[:, enc["input_ids"].shape[1]:]
    theirs = pol.tokenizer.batch_decode(ids, skip_special_tokens=True)
    return sum(a == b for a, b in zip(pol.greedy(docs, max_new_tokens=max_new), theirs)) / len(docs)


def _training_flops(pol, pairs, epochs: int) -> float:
    """Model FLOPs of one DPO iteration on ``pairs``: 6 N per trained token per epoch, 2 N per reference token."""
    n_params = sum(p.numel() for p in pol.model.parameters())
    prompts = [p["prompt"] for p in pairs]
    tokens = 0
    for side in ("chosen", "rejected"):
        b = pol.encode(prompts, [p[side] for p in pairs])
        tokens += int(b["attention_mask"].sum()) + (int((b["labels"] != -100).sum()) if pol.is_encoder_decoder else 0)
    return (6 * epochs + 2) * n_params * tokens


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=256, help="prompts of the TPO iteration (default 256)")
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of the sampler and generate")
    ap.add_argument("--results-root", default="results/gpu_smoke", help="where the iteration's study lives")
    ap.add_argument("--out", default="results/gpu_smoke.csv")
    ap.add_argument("--tiny", action="store_true", help="toy sizes on any device (the test suite's CPU check)")
    ap.add_argument("--allow-cpu", action="store_true", help="run without a GPU (slow at the default sizes)")
    a = ap.parse_args(argv)
    if a.prompts < 1 or a.rounds < 1:
        ap.error("--prompts and --rounds must be >= 1")
    if not (torch.cuda.is_available() or a.tiny or a.allow_cpu):
        ap.error("no CUDA device: torch.cuda.is_available() is False (pass --allow-cpu or --tiny to run on CPU)")
    from tpo_core.study import pipeline as S
    from tpo_core.world.presets import get_preset

    t0 = time.perf_counter()
    overrides = dict(TINY) if a.tiny else {"prompts_per_iteration": a.prompts, "n_iterations": 1}
    preset = get_preset("gpu", **overrides, seeds=(a.seed,))
    study = S.load_study(preset, results_root=a.results_root, sources="arms", progress=not a.tiny)
    setup = time.perf_counter() - t0
    p, pol = study.preset, study.new_pi0()
    device, dtype = pol.device, next(pol.model.parameters()).dtype
    print(f"device: {_device_name(device)}; policy {pol!r} in {dtype}; setup {setup:.0f} s (conversions, π_0's SFT)")

    docs = p.prompts(study.online.document.iloc[:max(2, min(16, p.prompts_per_iteration))])
    rows = bench_sampler(study, docs, a.rounds)
    sampled = pol.sample(docs, p.n_candidates, temperature=p.temperature, max_new_tokens=p.max_new_tokens,
                         generator=torch.Generator().manual_seed(a.seed))
    n_tokens = sum(len(pol.tokenizer(r, add_special_tokens=False)["input_ids"]) + 1 for rs in sampled for r in rs)
    ours = next(r for r in rows if r["system"] == "tpo_core Policy.sample")
    rows.append({"part": "sampler tokens", "system": "tpo_core Policy.sample", "seconds": ours["seconds"],
                 "items": n_tokens, "unit": "tokens (EOS included)", "items_per_s": n_tokens / ours["seconds"]})

    before = [q.detach().clone() for q in pol.model.parameters()]
    it = bench_iteration(study, "tpo", a.seed, policy=pol)
    rows.append({k: v for k, v in it.items() if k != "pairs"})
    pairs = it["pairs"]
    flops = _training_flops(pol, pairs, p.epochs)
    peak = matmul_peak(512 if a.tiny else 4096, device=device, dtype=dtype)
    train_s = it["seconds_training"]
    rows.append({"part": "trainer", "system": "tpo_core PreferenceTrainer", "seconds": train_s, "items": len(pairs),
                 "unit": "pairs", "items_per_s": len(pairs) / train_s, "model_flops": flops,
                 "matmul_peak_flops": peak, "mfu": flops / train_s / peak})

    moved = max(float((q.detach() - b).abs().max()) for q, b in zip(pol.model.parameters(), before))
    checks = {
        "greedy equals generate (share of 8 prompts)": _check_greedy(pol, docs[:8], p.max_new_tokens) == 1.0,
        "every prompt labelled once": it["items"] == p.prompts_per_iteration,
        "every pair has two different responses": all(q["chosen"] != q["rejected"] for q in pairs) and len(pairs) > 0,
        "the weights moved and are finite": moved > 0 and all(torch.isfinite(q).all() for q in pol.model.parameters()),
    }
    out = pd.DataFrame(rows).assign(device=_device_name(device), dtype=str(dtype), preset=p.name,
                                    prompts=p.prompts_per_iteration, torch=torch.__version__)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(a.out, index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 10, "display.max_colwidth", 80):
        print(out[[c for c in ("part", "system", "seconds", "items_per_s", "unit", "ratio_vs_peer", "mfu", "split")
                   if c in out]].to_string())
    for name, ok in checks.items():
        print(f"[{'ok' if ok else 'FAILED'}] {name}")
    print(f"total {time.perf_counter() - t0:.0f} s")
    if not all(checks.values()):
        raise SystemExit(f"gpu_smoke: failed checks: {[n for n, ok in checks.items() if not ok]}")
    return out


if __name__ == "__main__":
    main()
