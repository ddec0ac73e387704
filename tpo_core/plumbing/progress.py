"""Progress of the study's long steps, shown in the notebook and in the terminal of ``reproduce``.

:class:`Progress` is a ``tqdm`` bar (shown where the code runs, e.g. in the notebook) that also reports its
state when the environment variable ``TPO_CORE_PROGRESS`` names a file: the stack of the bars open in this
process (outermost first), each ``{desc, n, total, unit, elapsed}``, written atomically after every update.
``python -m tpo_core.commands.reproduce`` sets it for each notebook's kernel and shows that stack live under
papermill's cell bar (:func:`watch`), with the time left of each level, so a 40-minute notebook shows
"runs 12/40, prompts 32/64" rather than one silent cell.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from tqdm import tqdm

from tpo_core.plumbing.provenance import write_atomic

__all__ = ["ENV", "Progress", "track", "read_state", "watch"]

#: the environment variable naming the file that mirrors the open bars
ENV = "TPO_CORE_PROGRESS"

_STACK: list["Progress"] = []


class Progress:
    """A progress bar over ``total`` units called ``desc``; ``update(k)``, ``close()``, or use ``with``.

    ``disable`` hides the tqdm bar only: the report to ``$TPO_CORE_PROGRESS`` (when set) is always made,
    so the terminal of ``reproduce`` shows steps whose notebook bars are switched off."""

    def __init__(self, total: int | None, desc: str, *, disable: bool = False, unit: str = "it", leave: bool = False):
        self.desc, self.total, self.n, self.unit = str(desc), (None if total is None else int(total)), 0, str(unit)
        self.started = time.monotonic()
        self.bar = tqdm(total=total, desc=desc, disable=disable, unit=unit, leave=leave)
        _STACK.append(self)
        _report()

    def update(self, k: int = 1) -> None:
        self.n += int(k)
        self.bar.update(k)
        _report()

    def close(self) -> None:
        self.bar.close()
        if self in _STACK:
            _STACK.remove(self)
        _report()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def state(self) -> dict:
        return {"desc": self.desc, "n": self.n, "total": self.total, "unit": self.unit,
                "elapsed": round(time.monotonic() - self.started, 3)}


def track(iterable, desc: str, *, total: int | None = None, disable: bool = False, unit: str = "it"):
    """Iterate over ``iterable`` with a :class:`Progress` bar (an item counts once the loop body is done)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    with Progress(total, desc, disable=disable, unit=unit) as bar:
        for item in iterable:
            yield item
            bar.update(1)


def _report() -> None:
    """Write the open bars to ``$TPO_CORE_PROGRESS`` (atomically), if it is set."""
    target = os.environ.get(ENV)
    if not target:
        return
    try:
        write_atomic(target, json.dumps([b.state() for b in _STACK]))
    except OSError:  # progress is best effort: never fail a computation over it
        pass


def read_state(path: str | Path) -> list[dict]:
    """The bars reported in ``path`` (outermost first); ``[]`` when there is none yet or it is unreadable."""
    try:
        state = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return []
    return state if isinstance(state, list) else []


def watch(path: str | Path, *, interval: float = 1.0, position: int = 1):
    """Show the bars reported in ``path`` as terminal bars (from line ``position``) until the returned
    ``stop()`` is called: a background thread that polls the file every ``interval`` seconds."""
    done = threading.Event()
    bars: list[tqdm] = []

    def loop():
        while not done.wait(interval):
            state = read_state(path)
            while len(bars) > len(state):
                bars.pop().close()
            for level, s in enumerate(state):
                desc, fresh = f"  {s.get('desc')}", level == len(bars)
                if fresh:  # smoothing 0: the rate (and time left) is the average since the step began
                    bars.append(tqdm(total=s.get("total"), desc=desc, position=position + level, leave=False,
                                     smoothing=0, unit=str(s.get("unit", "it"))))
                bar = bars[level]
                if bar.desc != desc or bar.total != s.get("total") or s.get("n", 0) < bar.n:
                    bar.reset(total=s.get("total"))
                    bar.set_description_str(desc, refresh=False)
                    fresh = True
                if fresh:  # the step's clock, not the watcher's
                    bar.start_t = bar._time() - float(s.get("elapsed", 0.0))
                bar.update(max(0, int(s.get("n", 0)) - bar.n))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()

    def stop():
        done.set()
        thread.join()
        for bar in bars:
            bar.close()

    return stop
