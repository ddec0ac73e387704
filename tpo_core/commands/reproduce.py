"""Run the study's notebooks with papermill, in order, then build the Jupyter book.

``python -m tpo_core.commands.reproduce`` is what ``nox -s reproduce`` calls. Each notebook is a MyST text
notebook in ``notebooks/``; it is converted with jupytext, executed by papermill with its
parameters, and written atomically to ``book/executed/<name>.ipynb``. A manifest per run
(parameters, seed, versions, git commit, wall time) goes to ``results/manifests/<name>.json``.

Resumable: a notebook whose source, parameters and library code (every ``tpo_core`` module it imports,
transitively: :func:`tpo_core.plumbing.provenance.code_identity`) match the manifest of a finished run is skipped,
so a killed ``reproduce`` picks up where it stopped, and an edit to the library reruns the notebooks that
use it. ``--force`` reruns everything. A parameter the notebook does not declare is an error, not a
silently ignored value. A notebook that fails leaves no partial output in the book; its executed copy
is kept in ``results/failed/<name>.ipynb`` for debugging.
``--quick`` runs every notebook on tiny settings (for CI and smoke tests).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import ast
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from tpo_core.commands.cli import parse_settings

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class NotebookSpec:
    """One chapter of the book."""

    name: str
    """File stem in ``notebooks/`` (and in ``book/executed/``)."""
    quick: dict = field(default_factory=dict)
    """Parameter overrides for ``--quick`` runs: tiny sizes, seconds not minutes."""
    params: dict = field(default_factory=dict)
    """Parameter overrides for full runs (defaults live in the notebook's ``parameters`` cell)."""
    reads: tuple = ()
    """Notebooks whose results this one reads: their run keys are part of its key, so it reruns after them."""
    extended: bool = False
    """Part of the extended study (the work that chose the design or goes beyond it): run only with
    ``--extended`` (or by ``--only``), and in the book only when run by the same command."""


#: The notebooks, in the order they run (later ones may read earlier ones' results).
NOTEBOOKS: list[NotebookSpec] = [
    NotebookSpec(
        "00_theory",
        quick={"n_instances": 40, "n_states": 3, "n_actions": 4, "n_sources": 2,
               "betas": [0.5, 2.0], "counter_betas": [0.05, 1.0]},
    ),
    NotebookSpec(
        "05_theory_tpo",
        quick={"n_seeds": 2, "T": 300, "W_grid": [0, 1, 2], "n_responses_grid": [5, 10],
               "long_factor": 2},
    ),
    NotebookSpec("01_source_rms", quick={"preset": "smoke", "n_prompts": 4, "n_quality": 8}),
    NotebookSpec("08_pilot", quick={"preset": "smoke", "settings": {"preset": {}, "prompts_4": {"prompts_per_iteration": 4}},
                                    "seeds": [9101, 9102], "n_prompts": 4},
                 reads=("00_theory", "05_theory_tpo", "01_source_rms"), extended=True),
    NotebookSpec("02_baselines", quick={"preset": "smoke"}, reads=("01_source_rms",)),
    NotebookSpec("03_empirical_tpo", quick={"preset": "smoke"}, reads=("01_source_rms", "02_baselines")),
    NotebookSpec("04_table1", quick={"preset": "smoke", "n_boot": 200},
                 reads=("01_source_rms", "02_baselines", "03_empirical_tpo")),
    NotebookSpec("07_mechanism", quick={"preset": "smoke"},
                 reads=("01_source_rms", "02_baselines", "03_empirical_tpo", "04_table1")),
    NotebookSpec("09_ablations", quick={"preset": "smoke", "ablation_seeds": 2, "n_boot": 200},
                 reads=("01_source_rms", "03_empirical_tpo"), extended=True),
    NotebookSpec("10_ipo", quick={"preset": "smoke", "ipo_seeds": 2, "n_boot": 200},
                 reads=("01_source_rms", "02_baselines", "03_empirical_tpo"), extended=True),
    NotebookSpec("06_differences", quick={"preset": "smoke"}, reads=("01_source_rms", "04_table1")),
    NotebookSpec("A1_bench", quick={"bench_args": ["--tiny", "--rounds", "1", "--steps", "1"], "reuse": False,
                                    "loop_args": ["--preset", "smoke", "--rounds", "1", "--methods", "no-transfer"]},
                 reads=("01_source_rms",), extended=True),
]

#: Packages whose versions every manifest records.
_VERSIONED = ["numpy", "scipy", "pandas", "matplotlib", "seaborn", "papermill", "jupytext",
              "torch", "transformers", "trl", "accelerate", "jupyter-book"]


def declared_parameters(notebook) -> set[str]:
    """Names assigned in the notebook's ``parameters`` cell (a jupytext/nbformat notebook object)."""
    cells = [c for c in notebook.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"a notebook needs exactly one cell tagged 'parameters', found {len(cells)}")
    names = set()
    for node in ast.parse(cells[0].source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, (ast.AnnAssign, ast.AugAssign)) else []
        for t in targets:
            names |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


def _code_of(notebook) -> str:
    """The notebook's code cells, IPython magics and shell lines dropped (for finding its imports)."""
    lines = []
    for c in notebook.cells:
        if c.cell_type == "code":
            lines += [ln for ln in c.source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    return "\n".join(lines)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _git_commit(root: Path) -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "tpo_core", "notebooks"],
                               cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in _VERSIONED:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _spec(name: str) -> NotebookSpec:
    for spec in NOTEBOOKS:
        if spec.name == name:
            return spec
    raise ValueError(f"unknown notebook {name!r}; known: {[s.name for s in NOTEBOOKS]}")


def run_notebook(spec: NotebookSpec, *, quick: bool = False, force: bool = False,
                 root: Path = ROOT, executed_dir: Path | None = None,
                 results_dir: Path | None = None, progress: bool = False, settings: dict | None = None) -> dict:
    """Execute one notebook (unless a matching finished run exists) and return its manifest.

    ``settings``: parameter values applied when the notebook's ``parameters`` cell declares them (others are
    ignored here; :func:`main` refuses a setting that no notebook declares). They come after ``--quick``'s.
    ``progress`` shows papermill's cell progress bar (cells done, elapsed, estimated time left) on stderr."""
    import jupytext
    import papermill

    executed_dir = Path(executed_dir or root / "book" / "executed")
    results_dir = Path(results_dir or root / "results")
    source_path = root / "notebooks" / f"{spec.name}.md"
    if not source_path.exists():
        raise FileNotFoundError(f"notebook source {source_path} does not exist")
    from tpo_core.plumbing.progress import ENV, watch
    from tpo_core.plumbing.provenance import code_identity, module_file, read_json, write_atomic

    source = source_path.read_text()
    notebook = jupytext.read(source_path)
    shown_dir = os.path.relpath(results_dir, root) if results_dir.is_relative_to(root) else str(results_dir)
    declared = declared_parameters(notebook)
    params = {**(spec.quick if quick else spec.params),
              **{k: v for k, v in (settings or {}).items() if k in declared}, "results_dir": shown_dir}
    unknown = set(params) - declared
    if unknown:
        raise ValueError(f"{spec.name}: unknown parameter(s) {sorted(unknown)}; the notebook's parameters cell "
                         f"declares {sorted(declared)}")
    code = _code_of(notebook)
    dotted = re.findall(r"tpo_core\.([\w.]*\w)", code)  # e.g. study.pipeline.run: its prefixes that are modules
    named = {m for d in dotted for m in (".".join(d.split(".")[:i]) for i in range(1, d.count(".") + 2)) if module_file(m)}
    library = code_identity(*named, source=code)  # imported modules, and those run as `-m tpo_core.X`
    upstream = {n: read_json(results_dir / "manifests" / f"{n}.json", {}).get("key") for n in spec.reads}
    key = _sha256(source + json.dumps(params, sort_keys=True) + library + json.dumps(upstream, sort_keys=True))
    out_path = executed_dir / f"{spec.name}.ipynb"
    manifest_path = results_dir / "manifests" / f"{spec.name}.json"

    if not force and out_path.exists() and manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("key") == key and manifest.get("status") == "finished":
            print(f"[reproduce] {spec.name}: up to date, skipped (--force reruns it)", flush=True)
            manifest["skipped"] = True
            return manifest

    executed_dir.mkdir(parents=True, exist_ok=True)
    print(f"[reproduce] {spec.name}: running with {params}", flush=True)
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        src_nb = Path(tmp) / f"{spec.name}.ipynb"
        jupytext.write(notebook, src_nb)
        tmp_out = executed_dir / f".{spec.name}.running.ipynb"
        report = Path(tmp) / "progress.json"  # the kernel's open bars (tpo_core.plumbing.progress), shown live here
        stop = watch(report) if progress else (lambda: None)
        old_env = os.environ.get(ENV)
        os.environ[ENV] = str(report)  # the kernel inherits this process's environment
        try:
            papermill.execute_notebook(str(src_nb), str(tmp_out), parameters=params,
                                       kernel_name="python3", cwd=str(root), progress_bar=progress)
        except BaseException:
            if tmp_out.exists():  # keep the failed execution for debugging, out of the book
                failed = results_dir / "failed" / f"{spec.name}.ipynb"
                failed.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp_out, failed)
                print(f"[reproduce] {spec.name}: failed; its executed copy is {failed}", flush=True)
            raise
        finally:
            stop()
            if old_env is None:
                os.environ.pop(ENV, None)
            else:
                os.environ[ENV] = old_env
        os.replace(tmp_out, out_path)
    (results_dir / "failed" / f"{spec.name}.ipynb").unlink(missing_ok=True)
    seconds = time.time() - started
    manifest = {
        "notebook": spec.name,
        "status": "finished",
        "quick": quick,
        "parameters": params,
        "seed": params.get("seed", "notebook default"),
        "key": key,
        "library_code": library,
        "git_commit": _git_commit(root),
        "versions": _versions(),
        "platform": platform.platform(),
        "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 2),
    }
    write_atomic(manifest_path, json.dumps(manifest, indent=2) + "\n")
    print(f"[reproduce] {spec.name}: done in {seconds:.1f} s", flush=True)
    return manifest


def _hidden(chapters) -> list[str]:
    """The extended notebooks a build that ran ``chapters`` leaves out of the book (none when ``chapters`` is None)."""
    return [s.name for s in NOTEBOOKS if s.extended and chapters is not None and s.name not in chapters]


def book_toc(book_dir: Path, chapters=None) -> Path:
    """The book's table of contents for one build: ``book_dir/_toc.yml`` without the chapters of extended
    notebooks (:attr:`NotebookSpec.extended`) that are not in ``chapters`` (names of the notebooks this build
    ran; ``None``: every chapter), written to ``book_dir/_build/_toc.yml``. An extended chapter left from an
    earlier build is never shown as if this build had made it."""
    import yaml

    book_dir = Path(book_dir)
    toc = yaml.safe_load((book_dir / "_toc.yml").read_text())
    hidden = {f"executed/{name}" for name in _hidden(chapters)}
    toc["chapters"] = [c for c in toc["chapters"] if c.get("file") not in hidden]
    out = book_dir / "_build" / "_toc.yml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(toc, sort_keys=False))
    return out


def build_book(book_dir: Path = ROOT / "book", chapters=None) -> None:
    """Build the HTML book; any Sphinx warning (including stderr in a notebook) fails the build. ``chapters``:
    the notebooks this build ran, which decide the extended chapters shown (:func:`book_toc`)."""
    toc = book_toc(book_dir, chapters)
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", "-W", "-n", "--keep-going",
           "--toc", str(toc), str(book_dir)]
    try:
        subprocess.run(cmd, check=True)
    except subprocess.CalledProcessError as err:
        raise SystemExit(f"jupyter-book build failed (exit {err.returncode}); see the warnings above")
    # Sphinx builds incrementally: a page an earlier build made for a chapter this build hides stays in the
    # output folder unless removed, so it is removed (the toc already leaves it out)
    html = Path(book_dir) / "_build" / "html"
    for name in _hidden(chapters):
        for stale in (html / "executed" / f"{name}.html", html / "_sources" / "executed" / f"{name}.ipynb"):
            stale.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings for every notebook")
    parser.add_argument("--force", action="store_true", help="rerun notebooks even if up to date")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these notebooks")
    parser.add_argument("--extended", action="store_true",
                        help="also the extended study: the pilot, the ablations, the IPO experiment and the benchmark")
    parser.add_argument("--no-book", action="store_true", help="skip the jupyter-book build")
    parser.add_argument("--no-progress", action="store_true", help="no per-notebook cell progress bar")
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="where results and manifests go (default: results/)")
    parser.add_argument("--executed-dir", type=Path, default=None,
                        help="where executed notebooks go (default: book/executed/; another needs --no-book)")
    parser.add_argument("--set", action="append", metavar="NAME=VALUE", dest="settings",
                        help="a parameter for every notebook that declares it, e.g. --set 'seeds=[100, 200, 300]' "
                             "(repeatable; the value is a Python literal or a plain string)")
    args = parser.parse_args(argv)
    if args.executed_dir is not None and not args.no_book:
        parser.error("--executed-dir needs --no-book: the book is built from book/executed/")
    specs = [_spec(n) for n in args.only] if args.only else [s for s in NOTEBOOKS if args.extended or not s.extended]
    try:
        settings = parse_settings(args.settings)
    except ValueError as err:
        parser.error(str(err))
    if "results_dir" in settings:
        parser.error("--set results_dir=...: use --results-dir")
    if settings:
        import jupytext

        declared = set().union(*(declared_parameters(jupytext.read(ROOT / "notebooks" / f"{s.name}.md"))
                                 for s in specs))
        unused = sorted(set(settings) - declared)
        if unused:
            parser.error(f"no notebook run here declares {unused}")
    total = time.time()
    timings = []
    for spec in specs:
        manifest = run_notebook(spec, quick=args.quick, force=args.force, executed_dir=args.executed_dir,
                                results_dir=args.results_dir, progress=not args.no_progress, settings=settings)
        timings.append((spec.name, "skipped" if manifest.get("skipped") else f"{manifest['seconds']:.1f} s"))
    if not args.no_book:
        t0 = time.time()
        build_book(chapters={s.name for s in specs})
        timings.append(("jupyter-book build", f"{time.time() - t0:.1f} s"))
    print("\n[reproduce] where the time went:")
    for name, t in timings:
        print(f"  {name:<22} {t}")
    print(f"  {'total':<22} {time.time() - total:.1f} s")
    if not args.no_book:
        print(f"[reproduce] book: {ROOT / 'book' / '_build' / 'html' / 'index.html'}")


if __name__ == "__main__":
    main()
