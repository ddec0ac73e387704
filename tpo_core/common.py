"""Small pieces shared by the model modules: input checks, quiet model loading, per-prompt random streams, the
device models run on and the cache folder.

A leaf module (it imports nothing from ``tpo_core``), so that the sources, the simulated human, the policy
and the trainer can share it without importing each other.
"""

from __future__ import annotations

import contextlib
import numbers
import os
from pathlib import Path

__all__ = ["texts", "check_positive_ints", "check_inputs", "quiet_loading", "ONLINE", "EVAL", "POOL",
           "stream_generator", "prompt_streams", "default_device", "cache_root"]

#: stream ids of :func:`stream_generator`: a prompt's online responses, its evaluation samples, and the
#: Best-of-N pool of the arm at position ``j`` of the selector's arms (``POOL + j``); disjoint, so no two
#: uses share random numbers
ONLINE, EVAL, POOL = 0, 1, 2


def texts(x, what: str) -> list[str]:
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{what} must be a sequence of str, got a single {type(x).__name__}")
    try:
        out = list(x)
    except TypeError:
        raise TypeError(f"{what} must be a sequence of str, got {type(x).__name__}") from None
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"{what}[{i}] is {type(t).__name__}, expected str")
    return out


def check_positive_ints(**values) -> None:
    """Raise ``ValueError`` naming the first keyword whose value is not a positive integer (bools refused)."""
    for k, v in values.items():
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"{k} must be a positive integer, got {v!r}")


def check_inputs(prompts, responses, references) -> tuple[list[str], list[str], list[str]]:
    p, r, f = texts(prompts, "prompts"), texts(responses, "responses"), texts(references, "references")
    if not len(p) == len(r) == len(f):
        raise ValueError(f"prompts, responses and references must have equal lengths, got {len(p)}, {len(r)} "
                         f"and {len(f)}")
    return p, r, f


@contextlib.contextmanager
def quiet_loading(quiet: bool = True):
    """Hide transformers' "Loading weights" progress bars while loading a model (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    if quiet and was:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if quiet and was:
            hf_logging.enable_progress_bar()


def stream_generator(seed: int, index: int, stream: int):
    """A ``torch.Generator`` (CPU) that depends only on ``(seed, index, stream)``.

    Seeded with ``numpy.random.SeedSequence([seed, index, stream])``'s first 63-bit word: distinct, well-mixed
    streams for nearby integers. The study gives every prompt of an iteration its own stream
    (``seed = 1000 * run seed + iteration``, ``index`` = the prompt's position): common random numbers, so
    that two methods holding the same policy draw the same responses for a prompt, whatever else they do.
    """
    import numpy as np
    import torch

    words = [int(seed), int(index), int(stream)]
    if min(words) < 0:
        raise ValueError(f"seed, index and stream must be >= 0, got {words}")
    state = np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


def prompt_streams(seed: int, indices, stream: int) -> list:
    """One :func:`stream_generator` per prompt index, for ``Policy.sample(generator=...)``."""
    return [stream_generator(seed, i, stream) for i in indices]


def default_device() -> str:
    """Where this process runs its models: its accelerator (``accelerate``'s ``PartialState().device``, e.g.
    ``cuda:1`` for the second process of a launch) when CUDA is available, else ``"cpu"``."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    from accelerate import PartialState

    return str(PartialState().device)


def cache_root() -> Path:
    """``$TPO_CORE_CACHE`` if set, else ``~/.cache/tpo_core``: where assembled assets and π_0 are cached.

    Raises ``NotADirectoryError`` (naming the variable) when that path exists and is not a folder.
    """
    env = os.environ.get("TPO_CORE_CACHE")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "tpo_core"
    if root.exists() and not root.is_dir():
        where = "$TPO_CORE_CACHE" if env else "the default cache"
        raise NotADirectoryError(f"{where} ({root}) is a file, not a folder: point TPO_CORE_CACHE at a folder "
                                 "(it is created if missing), or unset it for ~/.cache/tpo_core")
    return root
