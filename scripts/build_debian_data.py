#!/usr/bin/env python3
"""Rebuild the committed Debian-descriptions dataset, ``data/debian/descriptions.jsonl.gz``.

The task (used by the ``embedded`` preset): document = a package's long description, summary = its
one-line synopsis, an XSum-like extreme-summarisation task in the software domain.

Input, one of:

* default: Debian's index. ``apt-get update -o Acquire::Languages=en`` into a *private, temporary*
  lists directory (the system's apt state and config are not touched), then ``lz4 -dc`` of bookworm's
  ``main/i18n/Translation-en.lz4``. Its md5 must be ``SOURCE_MD5`` (Debian 12.11); a new point release
  changes the file and the build stops with an error.
* ``--from-translation PATH``: an already fetched ``Translation-en`` (plain or ``.lz4``); md5 checked.
* ``--from-jsonl PATH``: an already parsed ``.jsonl[.gz]`` with ``package, summary, document`` (e.g. the
  project's shared snapshot, which :func:`parse_translation` reproduces record for record).

Processing (:func:`process`), all deterministic:

1. Filter: non-empty synopsis, document of ``MIN_WORDS``..``MAX_WORDS`` whitespace words (54,191 of
   60,596 records). Synopses are whitespace-collapsed.
2. Group related packages with union-find over two keys: the normalised name stem
   (:func:`name_stem`) and the first paragraph's first 300 characters, case- and space-folded
   (:func:`para_key`; only when it has at least ``PARA_MIN_WORDS`` words, so that generic openers such
   as "Features:" do not chain unrelated packages). A group is named by its smallest stem.
3. Assign each whole group to ``sft`` / ``online`` / ``test`` (70 / 20 / 10 %) by the sha256 of its name.
4. Write records sorted by (group, package, summary, document) as compact JSON lines, gzip level 9 with
   mtime 0 and no file name, so equal content gives equal bytes (for a given zlib), and print the sha256
   (also written to ``SHA256SUMS`` beside the file). Copy it into ``tpo_core.world.data.DATA_SHA256``.

Usage: ``python scripts/build_debian_data.py [--from-jsonl P | --from-translation P] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE_MD5 = "b01cbbed65b70071f7c1e417122f9669"  # bookworm main/i18n/Translation-en, Debian 12.11
TRANSLATION_GLOB = "*_debian_dists_bookworm_main_i18n_Translation-en.lz4"
MIN_WORDS, MAX_WORDS = 20, 300
PARA_CHARS, PARA_MIN_WORDS = 300, 5
SPLITS = (("sft", 0.70), ("online", 0.20), ("test", 0.10))  # (name, share), cumulative in this order
FIELDS = ("package", "summary", "document", "group", "split")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "data" / "debian" / "descriptions.jsonl.gz"

# Prefixes naming a packaging ecosystem with many independent upstreams. Without stripping them the
# "stem" would be e.g. ``python3`` for 4,218 unrelated packages (the feasibility note's split put all of
# them on one side). Longest first; at most one is stripped.
ECOSYSTEM_PREFIXES = tuple(sorted((
    "python3-", "python-", "pypy3-", "pypy-", "ruby-", "node-", "libjs-", "php-", "elpa-", "lua-",
    "cl-", "ocaml-", "haskell-", "libghc-", "librust-", "r-cran-", "r-bioc-", "r-other-",
    "golang-", "golang-github-", "golang-gitlab-", "golang-gopkg-", "golang-golang-x-",
    "golang-google-", "golang-k8s-", "gir1.2-", "fonts-", "xfonts-", "qml-module-",
    "gnome-shell-extension-", "lib32", "lib64", "libx32", "libn32",  # the last four: multilib builds
), key=len, reverse=True))
_SONAME = re.compile(r"\d[\d.]*(?:v\d+|c2|t64|gf|ldbl)?$")


def name_stem(package: str) -> str:
    """Normalised stem of a package name; related binary packages share it.

    * Perl modules ``lib<a>-<b>[-...]-perl`` -> ``<a>-<b>``, the top two levels of the CPAN name
      (``libtest-simple-perl`` -> ``test-simple``), so that the 200 ``Test::*`` modules stay apart.
    * Otherwise: lower-case; strip one ecosystem prefix (``python3-``, ``golang-github-``, ``r-cran-``,
      ``qml-module-``, ``lib32`` ...); keep the first ``-``-separated token, which drops every ``-data``,
      ``-doc``, ``-dev``, ``-common``, ``-bin``, ``-utils``, ``-l10n-xx`` ... suffix; drop a Rust
      ``+feature``; strip a ``lib`` prefix, then trailing soname digits (``libssl3`` -> ``ssl``,
      ``libbinio1v5`` -> ``binio``, ``php8.2`` -> ``php``). A step that would leave fewer than 2
      characters is skipped (``g++-12`` -> ``g++``). ``0ad-data-common`` -> ``0ad``.
    """
    name = package.lower()
    if name.startswith("lib") and name.endswith("-perl") and name.count("-") >= 2:
        return "-".join(name[3:-5].split("-")[:2])
    for prefix in ECOSYSTEM_PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            name = name[len(prefix):]
            break
    stem = name.split("-")[0]
    for step in (lambda s: s.split("+")[0], lambda s: s[3:] if s.startswith("lib") else s,
                 lambda s: _SONAME.sub("", s)):
        if len(step(stem)) >= 2:
            stem = step(stem)
    return stem


def para_key(document: str) -> str | None:
    """Near-duplicate key: the first paragraph's first 300 characters, case- and space-folded.

    ``None`` when that text has fewer than ``PARA_MIN_WORDS`` words (too generic to relate packages).
    """
    text = " ".join(document.split("\n", 1)[0].lower().split())[:PARA_CHARS]
    return text if len(text.split()) >= PARA_MIN_WORDS else None


def parse_translation(text: str) -> list[dict]:
    """Parse a Debian ``Translation-en`` file into ``{package, summary, document}`` records.

    Blocks are separated by blank lines; ``Description-en:`` holds the synopsis and the following lines
    that start with a space form the body, where `` .`` is a paragraph break. Paragraphs are
    whitespace-collapsed and joined with ``\\n``. Empty bodies and repeated bodies (by md5, first kept)
    are dropped. Index order is kept.
    """
    records, seen = [], set()
    for block in text.split("\n\n"):
        package = summary = None
        paragraphs, current, in_body = [], [], False
        for line in block.split("\n"):
            if line.startswith("Package:"):
                package, in_body = line[len("Package:"):].strip(), False
            elif line.startswith("Description-en:"):
                summary, in_body = line[len("Description-en:"):].strip(), True
            elif in_body and line.startswith(" "):
                if line.strip() == ".":
                    paragraphs.append(current)
                    current = []
                else:
                    current.append(line)
            else:
                in_body = False
        paragraphs.append(current)
        document = "\n".join(p for p in (" ".join(" ".join(lines).split()) for lines in paragraphs) if p)
        digest = hashlib.md5(document.encode()).hexdigest()
        if package is None or summary is None or not document or digest in seen:
            continue
        seen.add(digest)
        records.append({"package": package, "summary": summary, "document": document})
    return records


def _check_md5(data: bytes, expected: str = SOURCE_MD5) -> None:
    got = hashlib.md5(data).hexdigest()
    if got != expected:
        raise ValueError(f"Translation-en md5 is {got}, expected {expected} (bookworm, Debian 12.11). "
                         "A different file, or a new Debian point release changed the index: "
                         "rebuilding would change the dataset; review the change and update SOURCE_MD5 "
                         "deliberately.")


def _lz4_decompress(path: str | Path) -> bytes:
    return subprocess.run(["lz4", "-dc", str(path)], check=True, capture_output=True).stdout


def fetch_translation() -> bytes:
    """``apt-get update`` (English descriptions only) into a private temporary lists directory and
    return the decompressed bookworm ``main`` Translation-en. Needs apt-get (tested as root), access
    to deb.debian.org and ``lz4``; the system's apt lists, cache and config are left untouched."""
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # apt's download sandbox user (_apt) must reach lists/partial
        lists, cache = Path(tmp, "lists"), Path(tmp, "cache")
        (lists / "partial").mkdir(parents=True)
        (cache / "archives" / "partial").mkdir(parents=True)
        subprocess.run(["apt-get", "update", "-qq", "-o", "Acquire::Languages=en",
                        "-o", f"Dir::State::Lists={lists}", "-o", f"Dir::Cache={cache}"], check=True)
        found = sorted(glob.glob(str(lists / TRANSLATION_GLOB)))
        if len(found) != 1:
            raise RuntimeError(f"expected one {TRANSLATION_GLOB} after apt-get update, found {found}; "
                               "is deb.debian.org bookworm main in the apt sources?")
        return _lz4_decompress(found[0])


def read_jsonl(path: str | Path) -> list[dict]:
    """Read ``package, summary, document`` records from a ``.jsonl`` or ``.jsonl.gz`` file."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [{k: r[k] for k in ("package", "summary", "document")} for r in rows]


def assign_groups(records: list[dict]) -> list[str]:
    """Group id of each record: union-find over name stems and first-paragraph keys."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    stems = [name_stem(r["package"]) for r in records]
    for stem, r in zip(stems, records):
        key = para_key(r["document"])
        a, b = find("s:" + stem), find("p:" + key if key else "s:" + stem)
        if a != b:
            parent[max(a, b)] = min(a, b)  # a fixed rule, so roots do not depend on input order
    name: dict[str, str] = {}  # root -> smallest stem in its component
    for stem in stems:
        root = find("s:" + stem)
        name[root] = min(name.get(root, stem), stem)
    return [name[find("s:" + s)] for s in stems]


def split_of(group: str) -> str:
    """Split of a whole group: the first 8 bytes of sha256(group) as a uniform number in [0, 1)."""
    u = int.from_bytes(hashlib.sha256(group.encode()).digest()[:8], "big") / 2.0**64
    cumulative = 0.0
    for split, share in SPLITS:
        cumulative += share
        if u < cumulative:
            return split
    return SPLITS[-1][0]


def process(records: list[dict]) -> list[dict]:
    """Filter, group and split records; return them sorted, with the fields ``FIELDS``.

    Summaries are whitespace-collapsed (a few synopses hold double spaces); documents already are.
    """
    kept = [{**r, "summary": " ".join(r["summary"].split())} for r in records]
    kept = [r for r in kept if r["summary"] and MIN_WORDS <= len(r["document"].split()) <= MAX_WORDS]
    if not kept:
        raise ValueError("no record passes the filters (non-empty summary, "
                         f"{MIN_WORDS}-{MAX_WORDS} words of document)")
    out = [{**r, "group": g, "split": split_of(g)} for r, g in zip(kept, assign_groups(kept))]
    out = [{k: r[k] for k in FIELDS} for r in out]
    return sorted(out, key=lambda r: (r["group"], r["package"], r["summary"], r["document"]))


def to_bytes(records: list[dict]) -> bytes:
    """Deterministic gzip of compact JSON lines (level 9, mtime 0, no file name in the header)."""
    text = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records)
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as f:
        f.write(text.encode("utf-8"))
    return buf.getvalue()


def summarise(records: list[dict]) -> str:
    """Records and groups per split, as text."""
    lines = []
    for split, _ in SPLITS:
        rows = [r for r in records if r["split"] == split]
        lines.append(f"{split:>6}: {len(rows):6d} records ({len(rows) / len(records):.1%}), "
                     f"{len({r['group'] for r in rows}):6d} groups")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--from-jsonl", type=Path, help="already parsed package/summary/document jsonl(.gz)")
    source.add_argument("--from-translation", type=Path, help="a fetched Translation-en (plain or .lz4)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.from_jsonl:
        records = read_jsonl(args.from_jsonl)
    else:
        if args.from_translation:
            path = args.from_translation
            raw = _lz4_decompress(path) if path.suffix == ".lz4" else path.read_bytes()
        else:
            raw = fetch_translation()
        _check_md5(raw)
        records = parse_translation(raw.decode("utf-8"))
    print(f"{len(records)} parsed records", file=sys.stderr)
    processed = process(records)
    data = to_bytes(processed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    (args.out.parent / "SHA256SUMS").write_text(f"{digest}  {args.out.name}\n")
    print(summarise(processed), file=sys.stderr)
    print(f"wrote {args.out} ({len(data) / 1e6:.2f} MB), sha256 {digest}")
    print("(tpo_core.world.data.DATA_SHA256 must equal it for the default file)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
