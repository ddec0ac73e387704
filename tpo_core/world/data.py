"""Data for the ``embedded`` language-model preset: Debian package descriptions.

An XSum-like extreme-summarisation task in the software domain: the **document** is a package's long
description (20-300 words, paragraphs separated by ``\\n``), the **summary** (reference) is its one-line
synopsis. Source: Debian 12.11 (bookworm) ``main/i18n/Translation-en`` (md5
``b01cbbed65b70071f7c1e417122f9669``), 60,596 unique descriptions, 54,191 after the length filter.

The project carries its own processed copy, ``data/debian/descriptions.jsonl.gz`` (fields ``package,
summary, document, group, split``), rebuilt byte for byte (same zlib) by
``scripts/build_debian_data.py`` from Debian's index. Related packages (``0ad``, ``0ad-data``,
``0ad-data-common``; ``python3-foo`` and ``foo-doc``; packages whose descriptions open with the same
paragraph) share a ``group`` (20,630 groups), and a whole group lies in one split, so no name stem or
opening paragraph crosses splits. (About 3 % of test documents still share half their word 5-grams
with some sft document: forks such as oce/occt, templated texts such as PHP modules.)

* ``sft``     38,252 records, 14,486 groups (70.6 %): supervised fine-tuning of the initial policy;
* ``online``  11,139 records,  4,112 groups (20.6 %): prompts for the online RLHF iterations;
* ``test``     4,800 records,  2,032 groups ( 8.9 %): held-out evaluation.

Every load checks the file's sha256 (:data:`DATA_SHA256`) before parsing, so a corrupt or different
file fails before any compute. Debian metadata is under each package's DFSG-free licence.
"""

from __future__ import annotations

import gzip
import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["DATA_SHA256", "DEFAULT_PATH", "SPLITS", "RESERVED_PROMPTS", "load_debian", "sample_prompts",
           "reserve_and_test", "lead_baseline", "to_hf_dataset"]

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "data" / "debian" / "descriptions.jsonl.gz"
DATA_SHA256 = "57438e3a8949220198764c3b23e0cf1c1e32891715c9b80e0d6a8177863e3521"
SPLITS = ("sft", "online", "test")
COLUMNS = ("package", "document", "summary", "group")


_PARSED: dict[str, pd.DataFrame] = {}  # sha256 of the file's bytes -> parsed frame


def _read(path: Path, expected: str | None) -> pd.DataFrame:
    """The whole file as a DataFrame; the checksum is checked on every call, parsing is cached by it."""
    if not path.is_file():
        raise FileNotFoundError(f"Debian data file not found: {path}. It is committed with the "
                                "repository; rebuild it with `python scripts/build_debian_data.py`.")
    data = path.read_bytes()
    got = hashlib.sha256(data).hexdigest()
    if expected is not None and got != expected:
        raise ValueError(f"checksum mismatch for {path}: expected sha256 {expected}, got {got}. The file "
                         "is corrupt or was rebuilt from a different index; restore it from git, or "
                         "rebuild it with scripts/build_debian_data.py and update DATA_SHA256 deliberately.")
    if got not in _PARSED:
        frame = pd.read_json(io.BytesIO(gzip.decompress(data)), lines=True, dtype=False)
        missing = set(COLUMNS + ("split",)) - set(frame.columns)
        if missing:
            raise ValueError(f"{path} lacks the fields {sorted(missing)}")
        if len(_PARSED) >= 4:
            _PARSED.clear()
        _PARSED[got] = frame
    return _PARSED[got]


def load_debian(split: str, *, path: str | Path | None = None, verify: bool | str = True) -> pd.DataFrame:
    """One split of the Debian descriptions, as a DataFrame with columns ``package, document, summary,
    group`` (rows in the file's order: sorted by group, then package).

    ``split`` is ``"sft"``, ``"online"`` or ``"test"``. ``path`` defaults to :data:`DEFAULT_PATH`.
    ``verify=True`` checks the file's sha256 against :data:`DATA_SHA256` before parsing; a hex string
    checks against that digest instead (for a rebuilt file elsewhere); ``False`` skips the check.

    Raises ``ValueError`` for an unknown split, a checksum mismatch or an empty split, and
    ``FileNotFoundError`` for a missing file. The result is a fresh copy; callers may modify it.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if verify is True:
        expected = DATA_SHA256
    elif verify is False or verify is None:
        expected = None
    elif isinstance(verify, str) and len(verify) == 64:
        expected = verify.lower()
    else:
        raise ValueError(f"verify must be True, False or a 64-character sha256 hex digest, got {verify!r}")
    path = Path(path if path is not None else DEFAULT_PATH)
    frame = _read(path, expected)
    rows = frame.loc[frame["split"] == split, list(COLUMNS)].reset_index(drop=True)
    if rows.empty:
        raise ValueError(f"split {split!r} is empty in {path}: no record has split == {split!r}")
    return rows


def sample_prompts(df: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """``n`` distinct rows of ``df`` drawn uniformly without replacement with ``rng`` (index reset).

    Raises ``ValueError`` unless ``1 <= n <= len(df)``, and ``TypeError`` unless ``rng`` is a
    ``numpy.random.Generator``.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= len(df):
        raise ValueError(f"n must be an integer in [1, {len(df)}] (sampling without replacement "
                         f"from {len(df)} rows), got {n!r}")
    return df.iloc[rng.choice(len(df), size=int(n), replace=False)].reset_index(drop=True)


#: Prompts of the test split set aside for the tuning protocol and the pilot (at most half the split).
RESERVED_PROMPTS = 500


def reserve_and_test(test: pd.DataFrame, n_test: int, *, n_reserved: int = RESERVED_PROMPTS,
                     seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(reserve, test_prompts)``: the test split cut, by one fixed shuffle, into prompts set aside for tuning
    and the pilot and the reported test prompts, so that no ``n_test`` ever reaches into the reserve.

    One permutation (``numpy.random.default_rng(seed)``) orders the split's groups (rows, where there is no
    ``group`` column); the reserve takes whole groups from its start until it holds ``min(n_reserved,
    len(test) // 2)`` rows or more, in shuffled row order, so any first ``k`` of it is a random draw. The test
    prompts are the other rows, in shuffled order, without any document of the reserve, the first ``n_test`` of
    them (all, if fewer remain): a larger ``n_test`` only appends prompts. Index reset on both.
    """
    if isinstance(n_test, bool) or not isinstance(n_test, (int, np.integer)) or n_test < 1:
        raise ValueError(f"n_test must be a positive integer, got {n_test!r}")
    if len(test) < 2:
        raise ValueError(f"the test split needs 2 rows or more for a reserve and test prompts, got {len(test)}")
    rng = np.random.default_rng(seed)
    units = test["group"].to_numpy() if "group" in test.columns else np.arange(len(test))
    uniq = pd.unique(units)
    order = uniq[rng.permutation(len(uniq))]
    sizes = pd.Series(units).value_counts().reindex(order).to_numpy()
    k = int(np.searchsorted(np.cumsum(sizes), min(int(n_reserved), len(test) // 2))) + 1
    in_reserve = np.isin(units, order[:k])
    reserve = test[in_reserve]
    reserve = reserve.iloc[rng.permutation(len(reserve))].reset_index(drop=True)
    rest = test[~in_reserve & ~test.document.isin(set(reserve.document)).to_numpy()]
    rest = rest.iloc[rng.permutation(len(rest))].reset_index(drop=True)
    if rest.empty:
        raise ValueError(f"no test prompts remain beside the reserve: its whole groups hold all {len(test)} rows")
    return reserve, rest.iloc[:int(n_test)].reset_index(drop=True)


def lead_baseline(document: str, n_words: int = 8) -> str:
    """The lead-``n_words`` baseline: the document's first ``n_words`` whitespace-separated words.

    With ``n_words=8`` it scores ROUGE-L F1 0.27 on the test split (the trained miniature policies of
    the feasibility study stayed below it).
    """
    if isinstance(n_words, bool) or not isinstance(n_words, (int, np.integer)) or n_words < 1:
        raise ValueError(f"n_words must be a positive integer, got {n_words!r}")
    return " ".join(document.split()[:n_words])


def to_hf_dataset(df: pd.DataFrame):
    """``df`` as a ``datasets.Dataset`` (index dropped); imports ``datasets`` lazily."""
    import datasets

    return datasets.Dataset.from_pandas(df.reset_index(drop=True), preserve_index=False)
