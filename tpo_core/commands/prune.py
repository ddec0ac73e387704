"""List the study's results by key, and remove those that no current setting uses.

Every cached result lives in a folder named by the key of what made it (:mod:`tpo_core.study.runs`,
:mod:`tpo_core.study.table1`, :mod:`tpo_core.study.source_measurement`), so a changed setting writes beside the old results
instead of deleting them. This command shows what has piled up::

    python -m tpo_core.commands.prune --preset embedded                 # list: used or unused, with sizes
    python -m tpo_core.commands.prune --preset embedded --set seeds=[1] # as the study would run with that setting
    python -m tpo_core.commands.prune --preset embedded --delete        # list, then remove the unused ones
    python -m tpo_core.commands.prune --preset paper --group-size 10    # as an accelerate launch batches them

A folder is *used* when the preset's settings now (with ``--set``; one process, as ``nox -s reproduce`` runs,
or with ``--group-size`` as ``accelerate launch -m tpo_core.commands.distributed --group-size`` ran) would read it: the run folders of every run of :data:`tpo_core.study.runs.RUNS` under their current key, their
evaluations under the current evaluation settings, π_0's evaluation, iteration 1's shared batches, the current
source measurement and the mechanism's caches of current runs. Folders of an older layout (no key) are unused.
Where the current key of a run cannot be computed (the exploit baselines before notebook 01 has measured the
sources), its folders count as used: nothing is removed that this command cannot judge. The pilot's and the
tuning protocol's trees (``pilot/``, ``tuning/``) are left alone.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tpo_core.study.judging import eval_settings_key
from tpo_core.study.loading import Study, load_study
from tpo_core.plumbing.provenance import sha256_json
from tpo_core.plumbing.sharding import Sharding
from tpo_core.commands.cli import key_values, parse_settings
from tpo_core.study.runs import RUNS, first_online_dir, run_key

__all__ = ["Entry", "entries", "prune", "main"]


@dataclass(frozen=True)
class Entry:
    """One keyed result folder (or a file of an older layout)."""

    path: Path
    """The folder (or file), under ``results/<preset>/``."""
    kind: str
    """``runs``, ``eval``, ``shared``, ``sources``, ``mechanism`` or ``older layout``."""
    used: bool
    """Whether the current settings read it."""
    nbytes: int
    """Its size on disk."""


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _current_run_keys(study: Study) -> dict[str, str | None]:
    """Each run's key now, or None where it cannot be computed yet (no source measurement)."""
    keys = {}
    for name in RUNS:
        try:
            keys[name] = run_key(study, name)
        except (FileNotFoundError, ValueError):
            keys[name] = None
    return keys


def entries(study: Study) -> list[Entry]:
    """Every result folder under ``study.root`` that this module judges, used or not (sorted by path)."""
    root, out = study.root, []
    runs = _current_run_keys(study)
    ev = eval_settings_key(study)
    add = lambda p, kind, used: out.append(Entry(p, kind, bool(used), _size(p)))  # noqa: E731

    def run_key_used(run: str, key: str) -> bool:
        return run in runs and (runs[run] is None or runs[run] == key)

    for d in sorted((root / "runs").glob("*/*")):
        if d.is_dir():
            add(d, "older layout" if d.name.startswith("seed_") else "runs",
                not d.name.startswith("seed_") and run_key_used(d.parent.name, d.name))
    for d in sorted((root / "mechanism").glob("*/*")):
        if d.is_dir():
            add(d, "mechanism", run_key_used(d.parent.name, d.name))
        elif d.suffix == ".csv" and d.name.startswith("seed_"):
            add(d, "older layout", False)
    pi0 = sha256_json(study.pi0_identity)[:16]
    for d in sorted((root / "eval").glob("*/*")):
        if d.is_file():
            add(d, "older layout", False)
            continue
        for k in sorted(d.iterdir()):
            if k.is_dir():
                used = k.name == ev and (d.name == pi0 if d.parent.name == "pi_0" else run_key_used(d.parent.name, d.name))
                add(k, "eval", used)
    shared = first_online_dir(study).name
    for d in sorted((root / "shared").glob("*")):
        add(d, "older layout" if d.name.startswith("seed_") else "shared", d.name == shared)
    current = root / "sources.csv"
    measured = set(pd.read_csv(current).get("key", pd.Series(dtype=str)).astype(str)) if current.is_file() else set()
    for d in sorted((root / "sources").glob("*")):
        add(d, "sources", d.name in measured)
    return out


def prune(study: Study, *, delete: bool = False, echo=print) -> list[Entry]:
    """List :func:`entries` (``echo`` one line each, then a total), and with ``delete`` remove the unused ones.
    Returns the unused entries."""
    found = entries(study)
    for e in found:
        echo(f"{'used  ' if e.used else 'UNUSED'}  {e.nbytes / 2**20:9.1f} MB  {e.kind:<12}  {e.path.relative_to(study.root)}")
    unused = [e for e in found if not e.used]
    total = sum(e.nbytes for e in unused) / 2**20
    echo(f"{len(found)} result folders under {study.root}; {len(unused)} unused ({total:.1f} MB)"
         + ("" if delete or not unused else ": rerun with --delete to remove them"))
    if delete:
        for e in unused:
            shutil.rmtree(e.path) if e.path.is_dir() else e.path.unlink()
        if unused:
            echo(f"removed {len(unused)} ({total:.1f} MB)")
    return unused


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tpo_core.commands.prune", description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="embedded", help="the preset whose results to judge (default: embedded)")
    ap.add_argument("--results-dir", default="results", help="the results root (default: results)")
    ap.add_argument("--set", action="append", metavar="NAME=VALUE", dest="settings", default=[],
                    help="a preset field as the study runs it, e.g. --set 'seeds=[100, 200]'")
    ap.add_argument("--group-size", type=int, default=None,
                    help="judge the keys of results made by a multi-process launch with this --group-size "
                         "(their keys include the batching; default: one process, as nox -s reproduce)")
    ap.add_argument("--model-path", action="append", default=[], metavar="HUB_ID=FOLDER",
                    help="a local copy of a Hub model or dataset the preset names (the paper preset's data: its keys "
                         "hold the data's sha256)")
    ap.add_argument("--delete", action="store_true", help="remove the unused folders (after listing them)")
    a = ap.parse_args(argv)
    try:
        paths, settings = key_values(a.model_path), parse_settings(a.settings)
    except ValueError as err:
        ap.error(str(err))
    study = load_study(a.preset, results_root=a.results_dir, with_models=False, sources="none", model_paths=paths,
                       sharding=None if a.group_size is None else Sharding(a.group_size), **settings)
    prune(study, delete=a.delete)
    return 0


if __name__ == "__main__":
    sys.exit(main())
