"""What made a cached result, and the one rule for reusing it: reuse only when that identity matches.

Every result the study caches (π_0, run checkpoints, evaluations, source measurements, executed
notebooks) records an *identity*: a JSON-able dict of the settings it depends on, the content hashes of
its inputs and the identity of the code that computed it (:func:`code_identity`). A later call computes
the identity it wants and compares (:func:`changed_fields`): equal -> reuse; different -> recompute, saying
which fields changed. Weight files carry their sha256 (:func:`record_checksums`) and are verified before
they are loaded (:func:`verify_checksums`), so a corrupt or truncated file is an error that names the file
and how to rebuild it, never a silently different number.

A leaf module: it imports nothing from ``tpo_core``, so every other module may use it.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["write_text", "write_csv", "CorruptFileError", "StaleResultError", "sha256_file", "sha256_json", "canonical", "code_text",
           "code_identity", "code_modules", "NOT_COMPUTING", "tpo_core_imports", "module_file",
           "changed_fields", "describe_changes", "write_atomic", "publish_dir", "record_checksums", "verify_checksums",
           "read_json", "verify_dir", "checkpoint_id", "CHECKSUMS", "result_key", "claim_keyed_dir"]

PACKAGE = Path(__file__).resolve().parents[1]
#: File in a weights folder listing ``relative path -> sha256`` of its weight files.
CHECKSUMS = "checksums.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


class CorruptFileError(RuntimeError):
    """A cached file is missing, truncated or differs from the sha256 recorded when it was written."""


class StaleResultError(RuntimeError):
    """A cached result was made from other settings or code than the ones asked for, and is not recomputed
    here (e.g. evaluating a run whose checkpoints were trained with another learning rate)."""


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """The hex sha256 of a file, read in ``chunk``-byte blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def canonical(obj):
    """``obj`` as plain JSON data: tuples -> lists, Paths -> str, dataclass-like objects refused."""
    if isinstance(obj, dict):
        return {str(k): canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return repr(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot put a {type(obj).__name__} into an identity: {obj!r}")


def sha256_json(obj) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys), the digest of an identity."""
    return hashlib.sha256(json.dumps(canonical(obj), sort_keys=True).encode()).hexdigest()


def tpo_core_imports(source: str) -> set[str]:
    """Names of the ``tpo_core`` modules that Python ``source`` imports anywhere (also inside functions), but for
    imports under ``if TYPE_CHECKING:``, which name types and run no code."""
    out = set()
    todo = [ast.parse(source)]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "tpo_core":  # the module and the sub-packages Python runs on the way to it
                out |= {m for m in (".".join(parts[1:i]) for i in range(2, len(parts) + 1)) if module_file(m)}
    return out


def module_file(module: str) -> Path | None:
    """The file of the ``tpo_core`` module ``module``, named relative to the package (``study.runs``; a
    sub-package is its ``__init__.py``), or None when there is none."""
    base = PACKAGE.joinpath(*module.split("."))
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


#: Modules that cannot change what a step computes, left out of every code identity (and not followed to what
#: they import): progress bars, display and formatting, logging of provenance itself, and the assembly of the
#: offline weight files (whose content is checked against fixed sha256 sums before anything loads them).
NOT_COMPUTING = frozenset({"plumbing.progress", "study.report", "plumbing.provenance", "world.wheel_parts"})


@functools.lru_cache(maxsize=None)
def _closure(module: str) -> tuple[str, ...]:
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m in seen or m in NOT_COMPUTING:
            continue
        path = module_file(m)
        if path is None:
            raise ValueError(f"tpo_core has no module {m!r}")
        seen.add(m)
        todo.extend(tpo_core_imports(path.read_text(encoding="utf-8")) - seen)
    return tuple(sorted(seen))


def code_text(source: str) -> str:
    """What a module computes, as text: its syntax tree without docstrings or other bare string statements (no
    comments, no layout, no line numbers), written by :func:`_tree_text` so that the text is the same under every
    Python minor version. Editing documentation leaves it unchanged."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        for name in ("body", "orelse", "finalbody"):
            stmts = getattr(node, name, None)
            if isinstance(stmts, list) and stmts and isinstance(stmts[0], ast.stmt):
                kept = [st for st in stmts if not (isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant)
                                                   and isinstance(st.value.value, str))]
                setattr(node, name, kept or [ast.Pass()])
    return _tree_text(tree)


def _tree_text(node) -> str:
    """A syntax tree as text, stable across Python versions: each node's class and its fields by name, leaving
    out the fields that are empty or None (newer Pythons add such fields, e.g. ``type_params`` in 3.12, and
    ``ast.dump`` prints them), the empty string parts of f-strings (3.12's parser adds some) and the positions."""
    if isinstance(node, ast.AST):
        fields = []
        for f in node._fields:
            v = getattr(node, f, None)
            if isinstance(node, ast.JoinedStr) and f == "values":  # 3.12 parses f"{x:{w}}" with a trailing ''
                v = [x for x in v if not (isinstance(x, ast.Constant) and x.value == "")]
            if v is None or v == []:
                continue
            fields.append(f"{f}={_tree_text(v)}")
        return f"{type(node).__name__}({', '.join(fields)})"
    if isinstance(node, list):
        return "[" + ", ".join(_tree_text(v) for v in node) + "]"
    return repr(node)


@functools.lru_cache(maxsize=256)
def _code_text_cached(source: str) -> str:
    return code_text(source)


def _module_text(module: str) -> str:
    return _code_text_cached(module_file(module).read_text(encoding="utf-8"))


def code_identity(*modules: str, source: str | None = None) -> str:
    """sha256 of the code (:func:`code_text`: docstrings, comments and layout left out) of the given
    ``tpo_core`` modules and of every ``tpo_core`` module they import, transitively (function-level imports
    included), but for the :data:`NOT_COMPUTING` modules (:func:`code_modules` lists what is in it). With
    ``source`` (e.g. a notebook's code), the modules that text imports are added. Change what any of those files
    computes and the identity changes; edit their documentation, or a progress bar, and it does not."""
    files = code_modules(*modules, source=source)
    h = hashlib.sha256()
    for m in files:
        text = _module_text(m)
        h.update(m.encode() + b"\0" + text.encode("utf-8") + b"\0")
    return h.hexdigest()


def code_modules(*modules: str, source: str | None = None) -> list[str]:
    """The modules whose code :func:`code_identity` covers for ``modules`` (and ``source``), sorted."""
    wanted = set(modules) | (tpo_core_imports(source) if source is not None else set())
    return sorted({m for w in wanted for m in _closure(w)})


def changed_fields(recorded, wanted, prefix: str = "") -> list[str]:
    """Dotted names of the entries where the identities ``recorded`` and ``wanted`` differ (sorted)."""
    recorded, wanted = canonical(recorded), canonical(wanted)
    if isinstance(recorded, dict) and isinstance(wanted, dict):
        out = []
        for k in sorted(set(recorded) | set(wanted)):
            out += changed_fields(recorded.get(k, "<absent>"), wanted.get(k, "<absent>"), f"{prefix}{k}.")
        return out
    return [] if recorded == wanted else [prefix.rstrip(".") or "<identity>"]


def describe_changes(recorded, wanted, limit: int = 6) -> str:
    """``"beta: 0.1 -> 5.0, learning_rate: ..."``: what changed between two identities, for a message."""
    def get(d, dotted):
        for part in dotted.split("."):
            if not isinstance(d, dict) or part not in d:
                return "<absent>"
            d = d[part]
        return d

    fields = changed_fields(recorded, wanted)
    shown = []
    for f in fields[:limit]:
        old, new = (json.dumps(canonical(get(x, f)))[:60] for x in (recorded, wanted))
        shown.append(f"{f}: {old} -> {new}")
    more = f" (+{len(fields) - limit} more)" if len(fields) > limit else ""
    return ", ".join(shown) + more


def result_key(identity) -> str:
    """The key of a result: the first 16 hex digits of the digest of its identity (:func:`sha256_json`); results
    made from different identities live in different folders named by their keys, side by side."""
    return sha256_json(identity)[:16]


def claim_keyed_dir(folder: str | Path, identity: dict) -> Path:
    """Make ``folder`` (a folder named by :func:`result_key` of ``identity``) hold ``identity.json``.

    A folder is never emptied: one whose ``identity.json`` records another identity (a corrupt file, or two
    identities with one key) is an error, not a reason to delete a finished result."""
    folder = Path(folder)
    path = folder / "identity.json"
    recorded = read_json(path)
    if recorded == canonical(identity):
        return folder
    if recorded is not None:
        raise StaleResultError(f"{path} records another identity than its key's ({describe_changes(recorded, identity)});"
                               f" the folder is left as it is: move it away to recompute")
    write_atomic(path, json.dumps(canonical(identity), indent=1, sort_keys=True) + "\n")
    return folder


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` atomically (a temporary file beside it, renamed into place); makes the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path

def write_text(text: str, path: str | Path, sharding=None) -> Path:
    """Write ``text`` to ``path`` atomically, unless the file already holds exactly it (a finished result is not
    rewritten). Sharded (``sharding``, :mod:`tpo_core.plumbing.sharding`) only the main process writes, then all
    wait."""
    from tpo_core.plumbing.sharding import on_main

    path = Path(path)
    on_main(sharding, _write_if_changed, path, text)
    return path


def write_csv(df, path: str | Path, sharding=None) -> Path:
    """Write the ``pandas.DataFrame`` ``df`` to ``path`` as CSV (no index) with :func:`write_text`."""
    return write_text(df.to_csv(index=False), path, sharding)


def _write_if_changed(path: Path, text: str) -> None:
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except (OSError, UnicodeDecodeError):
        pass
    write_atomic(path, text)


@contextlib.contextmanager
def publish_dir(target: str | Path, *, replace: bool = True, clear_leftovers: bool = False):
    """Build a folder out of sight and make it appear at ``target`` whole, or not at all.

    Yields an empty temporary sibling folder (``.<name>.tmp-*``, so a crash or SIGKILL never leaves a
    half-written ``target``). When the ``with`` block ends normally, the folder is renamed to ``target``:
    an existing ``target`` is replaced (``replace=True``) or kept, and the new folder discarded
    (``replace=False``: first writer wins, for processes that build the same content concurrently). When it
    raises, the temporary folder is removed and ``target`` is untouched. ``clear_leftovers=True`` first
    removes the temporary folders of earlier, killed builds of ``target`` (only where no other process may
    be building it).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if clear_leftovers:
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield work
        if target.exists() and replace:
            shutil.rmtree(target)
        try:
            os.replace(work, target)
        except OSError:
            if replace or not target.is_dir():
                raise  # not a concurrent writer that finished first
    finally:
        shutil.rmtree(work, ignore_errors=True)


def read_json(path: str | Path, default=None):
    """The JSON in ``path``, or ``default`` when it is missing or unreadable (a half-written legacy file)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def record_checksums(folder: str | Path) -> dict[str, str]:
    """Hash every weight file in ``folder`` (``*.safetensors``, ``*.bin``, ``*.pt``, recursively) and write
    ``folder/checksums.json``. Call it last, when the folder is complete. Returns ``relative path -> sha256``."""
    folder = Path(folder)
    sums = {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.suffix in _WEIGHT_SUFFIXES}
    if not sums:
        raise FileNotFoundError(f"{folder} holds no weight file to checksum")
    write_atomic(folder / CHECKSUMS, json.dumps(sums, indent=1, sort_keys=True) + "\n")
    return sums


def checkpoint_id(folder: str | Path) -> str | None:
    """Content id of a weights folder: the first 16 hex digits of the digest of its ``checksums.json``
    (:func:`record_checksums`), or None when it has none (not a finished checkpoint)."""
    sums = read_json(Path(folder) / CHECKSUMS)
    return sha256_json(sums)[:16] if isinstance(sums, dict) and sums else None


def verify_dir(root: str | Path, manifest: dict[str, str]) -> list[str]:
    """Check every ``relative path -> sha256`` of ``manifest`` under ``root``.

    Returns the problems, one line each (``"<path>: missing"`` or ``"<path>: sha256 <got>, expected
    <want>"``); an empty list means the folder is intact. Files not in the manifest are ignored.
    """
    root = Path(root)
    problems = []
    for rel, want in manifest.items():
        p = root / rel
        if not p.is_file():
            problems.append(f"{p}: missing")
            continue
        got = sha256_file(p)
        if got != want:
            problems.append(f"{p}: sha256 {got}, expected {want}")
    return problems


def verify_checksums(folder: str | Path, *, rebuild: str) -> dict[str, str]:
    """Check every file of ``folder/checksums.json`` against its recorded sha256 before anything loads it.

    Raises :class:`CorruptFileError` naming each missing, truncated or altered file, and ``rebuild`` (how to
    make the folder again). Returns the checksums (the folder's content identity).
    """
    folder = Path(folder)
    sums = read_json(folder / CHECKSUMS)
    if not isinstance(sums, dict) or not sums:
        raise CorruptFileError(f"{folder} has no readable {CHECKSUMS}: it is incomplete or was written by an older "
                               f"version of tpo_core, so its weights cannot be trusted. {rebuild}")
    problems = verify_dir(folder, sums)
    if problems:
        raise CorruptFileError("cached weights are missing, corrupt or truncated: they do not match the sha256 "
                               "recorded when they were written:\n  " + "\n  ".join(problems) + f"\n{rebuild}")
    return sums
