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
