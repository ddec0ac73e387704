"""Small pieces shared by the model modules: input checks, quiet model loading, the device models run
on and the cache folder.

A leaf module (it imports nothing from ``tpo_core``), so that the sources, the simulated human, the policy
and the trainer can share it without importing each other.
"""

from __future__ import annotations

import contextlib
import numbers
import os
from pathlib import Path

__all__ = ["texts", "check_positive_ints", "check_inputs", "quiet_loading", "default_device", "cache_root"]

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
