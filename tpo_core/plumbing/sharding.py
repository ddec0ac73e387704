"""Which process does what in a run launched on several processes (``accelerate launch``).

The authors ran the paper's XSum study on 4 GPUs with accelerate: each worker generated and annotated its
share of an iteration's prompts, the bandit's statistics were pooled across workers every 50 prompts per
worker, and DPO trained on the gathered pairs. This module holds the small, model-free pieces of that
loop on accelerate's own machinery (``PartialState``, ``gather_object``, ``wait_for_everyone``), used by
the collection (:func:`tpo_core.tpo.empirical.collect_iteration`), the trainer and the study; the command line
is :mod:`tpo_core.commands.distributed`.

* A :class:`Sharding` is passed to what shards (``load_study(sharding=)`` keeps it in the study; any number of
  processes, one included: the exact reference of a multi-process run); :func:`resolve` gives ``Sharding()`` to a
  process of a multi-process launch that was passed none.
* :func:`deal` and :func:`gather` split prompt indices into groups dealt round-robin over the processes and gather the
  results on all of them; :func:`on_main` runs a write once, on the main process, then waits.
* :func:`per_device_batch` and :func:`local_batches` keep the training batch *global*: independent of the
  number of processes.

A leaf module (it imports nothing from ``tpo_core``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

__all__ = ["Sharding", "resolve", "process_state", "on_main", "deal", "gather", "per_device_batch",
           "local_batches"]


@dataclass(frozen=True)
class Sharding:
    """How prompts are split across the processes of an ``accelerate`` launch."""

    group_size: int = 1
    """Consecutive prompts (within a bandit chunk) sampled and scored in one set of model calls; groups are
    dealt to processes round-robin. Random numbers are per prompt whatever the group; larger groups batch
    generation better on GPUs (the README uses 10: 5 groups per worker and chunk)."""

    def __post_init__(self):
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int) or self.group_size < 1:
            raise ValueError(f"group_size must be a positive integer, got {self.group_size!r}")

    @property
    def state(self):
        """accelerate's ``PartialState`` (process index, number of processes, barrier)."""
        return process_state()


def process_state():
    """``PartialState``, on the CPU where there is no CUDA device, as ``PreferenceTrainer``'s ``Accelerator``
    (so that a launch on CPUs -- ``accelerate launch --multi_gpu`` on a machine without CUDA, torchrun, or
    ``debug_launcher`` -- is seen as multi-process with gloo; ``accelerate launch --cpu`` starts one process)."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def _launched() -> bool:
    """True in a process of a multi-process launch (``accelerate launch``, torchrun, ``debug_launcher``)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return True
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def resolve(sharding: Sharding | None) -> Sharding | None:
    """The sharding a step runs with: ``sharding`` as passed, or ``Sharding()`` when none is passed in a
    multi-process launch (a launched process never works as if it were alone), else ``None`` (one process,
    whole chunks per model call)."""
    if sharding is not None and not isinstance(sharding, Sharding):
        raise TypeError(f"sharding must be a Sharding or None, got {type(sharding).__name__}")
    return sharding if sharding is not None else (Sharding() if _launched() else None)


def on_main(sharding: Sharding | None, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` once: directly when not sharded, else on the main process followed by a
    barrier (so no process reads a file before it is whole, and none is written twice)."""
    sharding = resolve(sharding)
    if sharding is None:
        return fn(*args, **kwargs)
    state = sharding.state
    out = fn(*args, **kwargs) if state.is_main_process else None
    state.wait_for_everyone()
    return out


def deal(sharding: Sharding | None, indices: list) -> list[list]:
    """This process's groups of ``indices`` (each group runs in one set of model calls): all of them as one
    group when not sharded, else consecutive groups of the sharding's ``group_size``, dealt round-robin."""
    sharding, indices = resolve(sharding), list(indices)
    if sharding is None:
        return [indices] if indices else []
    size, state = sharding.group_size, process_state()
    groups = [indices[j:j + size] for j in range(0, len(indices), size)]
    return groups[state.process_index::state.num_processes]


def gather(sharding: Sharding | None, local: list) -> list:
    """The concatenation of every process's ``local`` list, on every process (``local`` itself when one
    process runs): ``accelerate.utils.gather_object``."""
    if resolve(sharding) is None or process_state().num_processes == 1:
        return list(local)
    from accelerate.utils import gather_object

    return gather_object(local)


def per_device_batch(sharding: Sharding | None, global_batch: int) -> int:
    """Pairs per device for a ``global_batch`` that does not depend on the number of processes.

    ``global_batch`` unchanged when not sharded; else ``global_batch / num_processes``, which must divide."""
    sharding = resolve(sharding)
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
