"""A run's checkpoints on disk: the policy after each iteration of Alg. 3, in ``out_dir/iter_k``.

The algorithm (:mod:`tpo_core.tpo.trainer`) trains in memory; this module is where its result is kept. A
checkpoint (weights, tokenizer, the iteration's :class:`~tpo_core.tpo.trainer.PreferenceConfig` and per-step logs)
is written to a temporary folder and renamed into place, so it exists whole or not at all; its weights'
sha256 (``checksums.json``) is verified before every load.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from tpo_core.plumbing.common import quiet_loading
from tpo_core.plumbing.provenance import publish_dir, record_checksums, verify_checksums

__all__ = ["load_checkpoint", "load_into", "latest_checkpoint", "save_checkpoint", "train_or_load", "resume"]


def load_checkpoint(model, path, *, rebuild: str | None = None) -> None:
    """Load the weights of the checkpoint folder ``path`` into ``model`` (in its dtype), after checking them
    against the folder's ``checksums.json``: :class:`tpo_core.plumbing.provenance.CorruptFileError`, with ``rebuild``
    (how to make it again) in the message, when they differ."""
    verify_checksums(path, rebuild=rebuild or f"Delete {path} (and the later iterations beside it) to retrain it.")
    with quiet_loading():
        saved = type(model).from_pretrained(path, dtype=next(model.parameters()).dtype)
    model.load_state_dict(saved.state_dict())


def load_into(trainer, path) -> None:
    """:func:`load_checkpoint` into the model a preference trainer optimises (unwrapped from DDP)."""
    load_checkpoint(trainer.accelerator.unwrap_model(trainer.model), path)


def latest_checkpoint(out_dir) -> tuple[int, Path] | None:
    """``(k, out_dir/iter_k)`` for the highest finished iteration k, or None. Temporary dirs are ignored."""
    found = [(int(p.name[5:]), p) for p in Path(out_dir).glob("iter_*") if p.is_dir() and p.name[5:].isdigit()]
    return max(found) if found else None


def save_checkpoint(trainer, final, logs: pd.DataFrame, iteration: int, n_pairs: int) -> None:
    """Write ``trainer``'s model (a :class:`~tpo_core.tpo.trainer.PreferenceTrainer`) as the checkpoint ``final``:
    by the main process of a launch, whole or not at all (a killed save's leftovers are removed first)."""
    acc = trainer.accelerator
    acc.wait_for_everyone()
    if acc.is_main_process:
        with publish_dir(Path(final), clear_leftovers=True) as tmp:
            with quiet_loading():
                acc.unwrap_model(trainer.model).save_pretrained(tmp)
            if trainer.tokenizer is not None:
                trainer.tokenizer.save_pretrained(tmp)
            meta = {"iteration": iteration, "n_pairs": n_pairs, "config": asdict(trainer.config)}
            (tmp / "preference_config.json").write_text(json.dumps(meta, indent=2))
            logs.to_csv(tmp / "logs.csv", index=False)
            record_checksums(tmp)
    acc.wait_for_everyone()


def train_or_load(trainer, pairs, out_dir, iteration: int) -> pd.DataFrame:
    """Iteration ``iteration`` of ``trainer`` on ``pairs``, kept in ``out_dir/iter_{iteration}``.

    A finished iteration is not redone: its weights are loaded into the trainer's model and its logs returned.
    Otherwise :meth:`~tpo_core.tpo.trainer.PreferenceTrainer.train_iteration` trains (nothing is written when it
    fails) and the checkpoint is saved (:func:`save_checkpoint`). Returns the per-step logs.
    """
    final = Path(out_dir) / f"iter_{iteration}"
    if final.is_dir():
        load_into(trainer, final)
        return pd.read_csv(final / "logs.csv")
    logs = trainer.train_iteration(pairs, iteration)
    save_checkpoint(trainer, final, logs, iteration, len(pairs))
    return logs


def resume(trainer, out_dir) -> int | None:
    """Load the last finished iteration in ``out_dir`` into ``trainer``'s model; return its number (None, and the
    model untouched, when there is none)."""
    last = latest_checkpoint(out_dir) if Path(out_dir).is_dir() else None
    if last is None:
        return None
    load_into(trainer, last[1])
    return last[0]
