"""Helpers the notebooks share for reporting computed numbers in the book."""

from __future__ import annotations


def glue(name: str, value) -> None:
    """``myst_nb.glue`` a computed number for ``{glue:text}`` roles in the text.

    NumPy scalars are converted to Python numbers first: myst-nb formats glued values from their
    ``repr``, and ``np.float64(0.5)`` would fail to format (a build warning, so a failed build).
    """
    from myst_nb import glue as _glue

    if hasattr(value, "item"):
        value = value.item()
    _glue(name, value, display=False)


def notebook_seconds(results_dir, name: str) -> float:
    """Wall seconds of notebook ``name``'s last finished run (its manifest in ``results_dir/manifests``,
    written by :mod:`tpo_core.commands.reproduce`), NaN when it has none."""
    import json
    from pathlib import Path

    path = Path(results_dir) / "manifests" / f"{name}.json"
    return float(json.loads(path.read_text())["seconds"]) if path.is_file() else float("nan")


#: The CPU flags that decide this study's speed and bf16 choices.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "avx512_vnni", "avx_vnni")


def cpu_flags() -> str:
    """The flags of :data:`CPU_FLAGS` that this machine has, space-separated (from ``/proc/cpuinfo``);
    every timing the book reports names them."""
    from pathlib import Path

    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    have = set(line.split(":", 1)[-1].split())
    return " ".join(f for f in CPU_FLAGS if f in have) or "none of " + ",".join(CPU_FLAGS)


def with_interval(value, low, high, *, digits: int = 1, unit: str = "", signed: bool = False,
                  compact: bool = False) -> str:
    """``"48.9% (95% CI 43.4 to 54.4)"``: a value with its interval, the one way the book writes intervals;
    ``"(no interval)"`` where the interval is NaN (too few seeds or no spread, never a certain value).
    ``compact``: ``"48.9 [43.4, 54.4]"``, for a table column whose header says what the brackets are."""
    import math

    fmt = f"{'+' if signed else ''}.{digits}f"
    finite = math.isfinite(low) and math.isfinite(high)
    if compact:
        return f"{value:{fmt}}{unit} [{low:{fmt}}, {high:{fmt}}]" if finite else f"{value:{fmt}}{unit} [no interval]"
    ci = f"95% CI {low:{fmt}} to {high:{fmt}}" if finite else "no interval"
    return f"{value:{fmt}}{unit} ({ci})"


def display_table(frame, columns, *, digits: int | dict = 1, names: dict | None = None):
    """The ``columns`` of ``frame`` as the book shows a table: no index, numbers rounded to ``digits`` places (or
    ``{column: places}``, 1 for the others), headers renamed by ``names`` (a pandas Styler)."""
    names = names or {}
    shown = frame[list(columns)].rename(columns=names)
    places = {names.get(c, c): d for c, d in digits.items()} if isinstance(digits, dict) else {}
    default = 1 if isinstance(digits, dict) else digits
    fmt = {c: f"{{:.{places.get(c, default)}f}}" for c in shown.columns
           if shown[c].dtype.kind == "f"}
    return shown.style.hide(axis="index").format(fmt, na_rep="–")


#: How the book names the runs in tables and figure titles (others by their run name).
METHOD_LABELS = {"tpo": "TPO"}

#: How the book says where our interval lies relative to the paper's value (:func:`tpo_core.study.evaluation.side_of`).
SIDE_PHRASES = {"below": "lies below", "above": "lies above", "contains": "contains",
                "no interval": "has no interval (too few seeds) to set beside"}


def label(method: str) -> str:
    """The book's name for run ``method`` (:data:`METHOD_LABELS`)."""
    return METHOD_LABELS.get(method, method)


def reading_table(t):
    """The columns of a Table 1 frame (:func:`tpo_core.study.table1.declared_table`) a reader compares, one interval per
    cell, as a DataFrame: ``role, cell, seeds, win rate % [95% CI], MDE (points), p (Holm in role), verdict,
    ties %`` (the full table is ``results/<preset>/table1.csv``)."""
    import pandas as pd

    return pd.DataFrame({
        "role": t.role.to_numpy(),
        "cell": [f"{label(m)} vs {b}, iteration {k}" for m, b, k in zip(t.method, t.baseline, t.iteration)],
        "seeds": t.n_seeds.to_numpy(),
        "win rate % [95% CI]": [with_interval(*r, compact=True) for r in zip(t.win_rate_mean, t.ci_low, t.ci_high)],
        "MDE (points)": t.mde.to_numpy(), "p (Holm in role)": t.p_holm.to_numpy(), "verdict": t.verdict.to_numpy(),
        "ties %": 100 * t.tie_rate.to_numpy()})
