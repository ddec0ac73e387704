"""Data-parallel TPO through HF ``accelerate``: sharded collection, training and evaluation.

The authors ran the paper's XSum study on 4 GPUs with accelerate: each worker generates and annotates
its share of an iteration's prompts, and the bandit's statistics are pooled across workers every 50
prompts per worker (their batched UCB, paper §5 Alg. 3 with ``update_every = 4 × 50 = 200``); DPO then
trains on the gathered pairs with 64-pair global batches (DeepSpeed ZeRO-2). This module is that loop on
accelerate's own machinery (``accelerate launch``, ``accelerate.utils.gather_object``,
``PartialState.wait_for_everyone``), built so that **the number of processes changes nothing but speed**:

* Random numbers. A *group* is ``group_size`` consecutive prompts of one bandit chunk. Its online
  responses and its Best-of-N pools are drawn with their own ``torch.Generator``, seeded from
  ``(seed, first prompt index of the group, stream)`` (:func:`group_generator`), and each group is sampled
  and scored in its own model calls. What a prompt receives therefore depends on the seed, the iteration
  and its index, never on which process handles it or how many there are.
* Decisions. Every process holds the same selector (same seed) and calls ``select()`` for every prompt of
  a chunk, so all pick the same arms. After the chunk, every process's outcomes are gathered and replayed
  into every selector in prompt order: the pooled pulls and wins are the sums over processes (the
  authors' all-reduce), and the floating-point sums are in the single-process order, so the statistics
  are identical, not merely close.
* Files. Every write goes through the main process, atomically (temporary file, then rename), followed
  by a barrier (:func:`on_main`); :func:`tpo_core.empirical.write_csv` routes through it when sharded.
* Training. ``PreferenceTrainer`` (``tpo_core.trainer``) splits each *global* micro-batch of the shuffled
  order across processes (:func:`local_batches`) and weights each process's summed loss by
  ``num_processes / global batch size``, so DDP's gradient average is the gradient of the global mean,
  also for a last, uneven batch; the reference log-probabilities are computed once, in blocks dealt to the
  processes (:func:`sharded_reference_logprobs`). :func:`per_device_batch` makes the study's global batch
  (``preset.batch_size``) independent of the number of processes.

The grouped random streams are **opt-in**: a single-process run is unchanged unless it is inside
:func:`sharded` (the way to get the reference numbers of a multi-process run on one process); a run
launched on several processes is always sharded (``current()`` detects it).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate.utils import gather_object
from tqdm import tqdm

__all__ = ["Sharding", "sharded", "current", "on_main", "group_generator", "per_device_batch", "local_batches",
           "sharded_reference_logprobs", "collect_iteration_sharded", "gold_on_test_sharded", "main"]

#: stream ids of group_generator: online responses, evaluation samples, and the Best-of-N pool of the arm at
#: position j of ``selector.arms`` (``_POOL + j``): disjoint, so no two uses share random numbers
_ONLINE, _EVAL, _POOL = 0, 1, 2


@dataclass(frozen=True)
class Sharding:
    """How prompts are split across the processes of an ``accelerate`` launch."""

    group_size: int = 1
    """Consecutive prompts (within a bandit chunk) that share one random stream and one set of model
    calls; groups are dealt to processes round-robin. 1: every prompt has its own stream (the default);
    larger groups batch generation better on GPUs (the README uses 10: 5 groups per worker and chunk)."""

    def __post_init__(self):
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int) or self.group_size < 1:
            raise ValueError(f"group_size must be a positive integer, got {self.group_size!r}")

    @property
    def state(self):
        """accelerate's ``PartialState`` (process index, number of processes, barrier)."""
        return _state()

    def collect_iteration(self, *args, **kwargs):
        """:func:`collect_iteration_sharded` with this sharding (same signature as
        :func:`tpo_core.empirical.collect_iteration`)."""
        return collect_iteration_sharded(*args, group_size=self.group_size, **kwargs)


_ACTIVE: list[Sharding] = []


def _state():
    """``PartialState``, on the CPU where there is no CUDA device, as ``PreferenceTrainer``'s ``Accelerator``
    (so that a launch on CPUs -- ``accelerate launch --multi_gpu`` on a machine without CUDA, torchrun, or
    ``debug_launcher`` -- is seen as multi-process with gloo; ``accelerate launch --cpu`` starts one process)."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


@contextlib.contextmanager
def sharded(group_size: int = 1):
    """Within this block, collection and evaluation use :class:`Sharding` (``group_size``), on however many
    processes are running (one included: the reference of a multi-process run)."""
    _ACTIVE.append(Sharding(group_size))
    try:
        yield _ACTIVE[-1]
    finally:
        _ACTIVE.pop()


def _launched() -> bool:
    """True in a process of a multi-process launch (``accelerate launch``, torchrun, ``debug_launcher``)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return True
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def current() -> Sharding | None:
    """The active sharding: the innermost :func:`sharded` block, else ``Sharding()`` in a multi-process
    launch, else ``None`` (the unchanged single-process code paths)."""
    if _ACTIVE:
        return _ACTIVE[-1]
    return Sharding() if _launched() else None


def on_main(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` once: directly when not sharded, else on the main process followed by a
    barrier (so no process reads a file before it is whole, and none is written twice)."""
    sharding = current()
    if sharding is None:
        return fn(*args, **kwargs)
    state = sharding.state
    out = fn(*args, **kwargs) if state.is_main_process else None
    state.wait_for_everyone()
    return out


def group_generator(seed: int, first_index: int, stream: int) -> torch.Generator:
    """A ``torch.Generator`` that depends only on ``(seed, first prompt index of the group, stream)``.

    The seed is ``numpy.random.SeedSequence([seed, first_index, stream])``'s first 63-bit word: distinct,
    well-mixed streams for nearby integers (``seed`` is ``1000·run seed + iteration`` in
    :func:`tpo_core.empirical.run_method`)."""
    words = [int(seed), int(first_index), int(stream)]
    if min(words) < 0:
        raise ValueError(f"seed, first_index and stream must be >= 0, got {words}")
    state = np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


def per_device_batch(global_batch: int) -> int:
    """Pairs per device for a ``global_batch`` that does not depend on the number of processes.

    ``global_batch`` unchanged when not sharded; else ``global_batch / num_processes``, which must divide."""
    sharding = current()
    n = 1 if sharding is None else sharding.state.num_processes
    if global_batch % n:
        raise ValueError(f"the global batch ({global_batch} pairs) is not divisible by the {n} processes: "
                         "choose a process count that divides it (the paper: 64 pairs on 4 GPUs)")
    return global_batch // n


def local_batches(order: torch.Tensor, per_device: int, num_processes: int, process_index: int
                  ) -> list[tuple[torch.Tensor, int, int]]:
    """This process's share of every global micro-batch of ``order``: ``(indices, n_real, n_global)``.

    Global micro-batch ``s`` is ``order[s·G:(s+1)·G]`` with ``G = per_device · num_processes`` (what one
    process with batch ``G`` would take); process ``r`` gets its ``r``-th contiguous slice of
    ``per_device`` pairs (accelerate's layout). A process whose slice of the last batch is empty gets the
    batch's first pair with ``n_real = 0`` (weight 0), so every process runs the same number of forward
    and backward passes (DDP's all-reduce must be entered by all). accelerate's own ``even_batches``
    would instead repeat pairs from the start of the epoch, which a single process never sees.
    """
    if per_device < 1 or num_processes < 1 or not 0 <= process_index < num_processes:
        raise ValueError(f"bad sharding: per_device={per_device}, num_processes={num_processes}, "
                         f"process_index={process_index}")
    width = per_device * num_processes
    out = []
    for start in range(0, len(order), width):
        batch = order[start:start + width]
        mine = batch[process_index * per_device:(process_index + 1) * per_device]
        out.append((mine, len(mine), len(batch)) if len(mine) else (batch[:1], 0, len(batch)))
    return out


@torch.no_grad()
def sharded_reference_logprobs(trainer, pairs) -> torch.Tensor:
    """``trainer.reference_logprobs(pairs)`` with its blocks of ``ref_batch_size`` pairs dealt round-robin to the
    processes and gathered: the same blocks, the same code path (the unwrapped model, so no DDP collective runs
    in a forward that other processes may not make), hence the single-process numbers, computed once."""
    acc = trainer.accelerator
    model = acc.unwrap_model(trainer.ref_model if trainer.ref_model is not None else trainer.model)
    model.eval()
    bs = trainer.config.ref_batch_size
    local = []
    with acc.autocast():
        for i in list(range(0, len(pairs), bs))[acc.process_index::acc.num_processes]:
            rows = pairs[i:i + bs]
            lp, _ = trainer._forward(model, rows, [r["chosen"] for r in rows] + [r["rejected"] for r in rows])
            local.append((i, lp.view(2, -1).cpu()))
    blocks = dict(gather_object(local))
    return torch.cat([blocks[i] for i in range(0, len(pairs), bs)], dim=1).to(acc.device)


# ------------------------------------------------------------------------------------------- collection
def _groups(indices: list[int], size: int) -> list[list[int]]:
    return [indices[j:j + size] for j in range(0, len(indices), size)]


def _collect_group(policy, documents, references, group, arms, *, selector, sources, gold, n_candidates,
                   pool_size, top_k, seed, sample, progress):
    """Alg. 3 steps 2-4 for one group of prompts (their arms already chosen): one outcome per prompt."""
    from tpo_core.empirical import _score, build_candidates, transfer_win
    from tpo_core.oracle import label_best_worst

    online = policy.sample([documents[i] for i in group], n_candidates,
                           generator=group_generator(seed, group[0], _ONLINE), **sample)
    online = dict(zip(group, online))
    cands, masks = {}, {}
    for arm in dict.fromkeys(arms):  # each arm in order of first use, as collect_iteration
        mine = [i for i, a in zip(group, arms) if a == arm]
        if arm == selector.null_arm:
            for i in mine:
                cands[i], masks[i] = build_candidates(online[i], None, None, top_k)
            continue
        gen = group_generator(seed, group[0], _POOL + selector.arms.index(arm))
        pools = policy.sample([documents[i] for i in mine], pool_size, generator=gen, **sample)
        rep = lambda xs: [xs[i] for i in mine for _ in range(pool_size)]  # noqa: E731
        scores = np.asarray(_score(sources[arm], rep(documents), [r for p in pools for r in p], rep(references),
                                   progress))
        for j, i in enumerate(mine):
            cands[i], masks[i] = build_candidates(online[i], pools[j], scores[j * pool_size:(j + 1) * pool_size],
                                                  top_k)
    rep = lambda xs: [xs[i] for i in group for _ in range(n_candidates)]  # noqa: E731
    g = np.asarray(_score(gold, rep(documents), [c for i in group for c in cands[i]], rep(references), progress))
    g = g.reshape(len(group), n_candidates)
    chosen, rejected, keep = label_best_worst(g)
    out = []
    for row, (i, arm) in enumerate(zip(group, arms)):
        pair = ({"prompt": documents[i], "chosen": cands[i][chosen[row]], "rejected": cands[i][rejected[row]]}
                if keep[row] else None)
        out.append({"prompt_idx": i, "arm": arm, "win": transfer_win(g[row], masks[i]),
                    "gold_best": float(g[row].max()), "gold_worst": float(g[row].min()),
                    "kept": bool(keep[row]), "pair": pair})
    return out


def collect_iteration_sharded(policy, documents, references, *, selector, sources: dict, gold,
                              n_candidates: int, pool_size: int, top_k: int, seed: int,
                              temperature: float = 1.0, max_new_tokens: int | None = None,
                              progress: bool = True, group_size: int = 1) -> tuple[list[dict], pd.DataFrame]:
    """:func:`tpo_core.empirical.collect_iteration` (Alg. 3 steps 1-5), prompts sharded over processes.

    Same arguments and returns. Chunks of ``selector.update_every`` prompts, as there; each chunk's arms are
    selected by every process (identical selectors), its groups of ``group_size`` prompts are dealt
    round-robin to the processes, each group is sampled with :func:`group_generator` streams and scored on
    its own, and the outcomes are gathered (``accelerate.utils.gather_object``) and replayed into the
    selector in prompt order on every process. Every process returns all pairs and records, identical to
    those of one process with the same ``group_size`` (but not to ``collect_iteration``'s, whose single
    random stream runs through the whole iteration).
    """
    from tpo_core.empirical import _check_inputs

    documents, references = _check_inputs(documents, references, selector, sources)
    Sharding(group_size)  # validates
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    state = _state()
    sample = dict(temperature=temperature, max_new_tokens=max_new_tokens)
    kw = dict(selector=selector, sources=sources, gold=gold, n_candidates=n_candidates, pool_size=pool_size,
              top_k=top_k, seed=int(seed), sample=sample, progress=progress and state.is_main_process)
    pairs, records = [], []
    chunk = max(1, int(getattr(selector, "update_every", 1)))
    bar = tqdm(total=len(documents), desc="prompts", disable=not (progress and state.is_main_process), leave=False)
    for start in range(0, len(documents), chunk):
        idx = list(range(start, min(start + chunk, len(documents))))
        arms = dict(zip(idx, [selector.select() for _ in idx]))  # same on every process
        local = []
        for group in _groups(idx, group_size)[state.process_index::state.num_processes]:
            local += _collect_group(policy, documents, references, group, [arms[i] for i in group], **kw)
        outcomes = gather_object(local) if state.num_processes > 1 else local
        outcomes = sorted(outcomes, key=lambda o: o["prompt_idx"])
        if [o["prompt_idx"] for o in outcomes] != idx:
            raise RuntimeError(f"gathered outcomes cover prompts {[o['prompt_idx'] for o in outcomes]}, "
                               f"expected {idx}: processes disagree on the chunk")
        for o in outcomes:  # pooled statistics: every process's pulls and wins, in prompt order
            if o["arm"] != arms[o["prompt_idx"]]:
                raise RuntimeError(f"prompt {o['prompt_idx']}: a process chose {o['arm']!r}, this one "
                                   f"{arms[o['prompt_idx']]!r} (selectors out of sync)")
            selector.update(o["arm"], o["win"])
            if o["pair"] is not None:
                pairs.append(o["pair"])
            records.append({k: o[k] for k in ("prompt_idx", "arm", "win", "gold_best", "gold_worst", "kept")})
        bar.update(len(idx))
    bar.close()
    return pairs, pd.DataFrame(records)


# ------------------------------------------------------------------------------------------- evaluation
def gold_on_test_sharded(policy, documents, references, *, gold, seed: int, temperature: float,
                         max_new_tokens: int | None, group_size: int = 1) -> np.ndarray:
    """Gold reward of one sampled response per test prompt, prompts sharded over processes.

    Groups of ``group_size`` prompts, dealt round-robin, each sampled with
    ``group_generator(seed, first index, _EVAL)`` and scored on its own; every process returns the whole
    array, identical for any number of processes. Two policies evaluated with the same ``seed`` share their
    random numbers, prompt by prompt (common random numbers, as ``tpo_core.study._gold_on_test``).
    """
    documents, references = list(documents), list(references)
    if not documents or len(documents) != len(references):
        raise ValueError("documents and references must be non-empty and of equal length")
    Sharding(group_size)
    state = _state()
    local = []
    for group in _groups(list(range(len(documents))), group_size)[state.process_index::state.num_processes]:
        gen = group_generator(seed, group[0], _EVAL)
        resp = [r[0] for r in policy.sample([documents[i] for i in group], 1, temperature=temperature,
                                            max_new_tokens=max_new_tokens, generator=gen)]
        scores = gold.score([documents[i] for i in group], resp, [references[i] for i in group])
        local += [(i, float(s)) for i, s in zip(group, np.asarray(scores, dtype=float))]
    out = dict(gather_object(local) if state.num_processes > 1 else local)
    if sorted(out) != list(range(len(documents))):
        raise RuntimeError("gathered evaluation does not cover every test prompt once")
    return np.array([out[i] for i in range(len(documents))], dtype=float)


# ------------------------------------------------------------------------------------------------ CLI
def main(argv=None) -> None:
    """``accelerate launch [--config_file F] -m tpo_core.distributed --preset paper --run tpo --seed 100``.

    Runs :func:`tpo_core.study.run` (and, with ``--evaluate``, :func:`tpo_core.study.evaluate_run`) for one
    run and seed, sharded over the launched processes. ``--model-path HUB_ID=FOLDER`` maps the preset's
    models to local folders (as ``load_study(model_paths=)``); ``--set field=value`` overrides preset fields
    (values parsed as Python literals)."""
    import argparse
    import ast

    from tpo_core import study as S

    ap = argparse.ArgumentParser(prog="python -m tpo_core.distributed", description=main.__doc__)
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--run", default="tpo", choices=sorted(S.RUNS))
    ap.add_argument("--seed", type=int, action="append", help="repeatable; default: the preset's seeds")
    ap.add_argument("--results-root", default="results")
    ap.add_argument("--group-size", type=int, default=1)
    ap.add_argument("--model-path", action="append", default=[], metavar="HUB_ID=FOLDER")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    ap.add_argument("--evaluate", action="store_true")
    args = ap.parse_args(argv)

    def pairs(items, what):
        out = {}
        for item in items:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise SystemExit(f"{what} expects KEY=VALUE, got {item!r}")
            out[key] = value
        return out

    overrides = {}
    for key, value in pairs(args.set, "--set").items():
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    with sharded(args.group_size):
        with Sharding().state.main_process_first():  # the main process trains and caches an SFT pi_0 first
            study = S.load_study(args.preset, results_root=args.results_root, sources="arms",
                                 model_paths=pairs(args.model_path, "--model-path"), **overrides)
        seeds = args.seed or list(study.preset.seeds)
        for seed in seeds:
            S.run(study, args.run, seed)
        if args.evaluate:
            S.evaluate_run(study, args.run, seeds)
    if Sharding().state.is_main_process:
        print(f"done: {args.run}, seeds {seeds}, under {Path(args.results_root) / study.preset.name}")


if __name__ == "__main__":
    main()
