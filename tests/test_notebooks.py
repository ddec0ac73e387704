"""Every notebook runs end to end on tiny settings, and the book builds with warnings as errors."""

import json
import shutil

import jupytext
import pytest
import yaml

from tpo_core.commands import reproduce

ROOT = reproduce.ROOT


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """Run every registered notebook once in --quick mode into a temporary book."""
    tmp = tmp_path_factory.mktemp("reproduce")
    book = tmp / "book"
    shutil.copytree(ROOT / "book", book, ignore=shutil.ignore_patterns("_build", "executed"))
    manifests = {
        spec.name: reproduce.run_notebook(spec, quick=True, executed_dir=book / "executed",
                                          results_dir=tmp / "results")
        for spec in reproduce.NOTEBOOKS
    }
    return tmp, book, manifests


#: Chapters that draw no random numbers of their own (06 reads presets and results; 07 computes log-probabilities
#: and t-intervals of finished runs; the benchmark seeds its model inside tpo_core.commands.bench), so they have no seed
#: parameter.
NO_RANDOMNESS = {"06_differences", "07_mechanism", "A1_bench"}


@pytest.mark.parametrize("spec", reproduce.NOTEBOOKS, ids=lambda s: s.name)
def test_notebook_has_exactly_one_parameters_cell(spec):
    nb = jupytext.read(ROOT / "notebooks" / f"{spec.name}.md")
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert first_code is tagged[0]
    assert "results_dir" in tagged[0].source
    if spec.name not in NO_RANDOMNESS:
        assert "seed" in tagged[0].source


#: Chapters whose code cells only call, plot and glue: no branches that assemble prose, no files written.
NARRATING = ("02_baselines", "03_empirical_tpo", "04_table1", "07_mechanism", "09_ablations")
_WRITES = {"write_csv", "to_csv", "write_text", "write_bytes", "savefig", "to_json", "to_parquet", "mkdir"}


@pytest.mark.parametrize("name", NARRATING)
def test_narrating_chapters_branch_and_write_nothing(name):
    """The library decides and writes; these chapters' code cells hold no ``if``/``elif``/conditional
    expression and no call that writes a file (comprehension filters, which select, are allowed)."""
    import ast

    nb = jupytext.read(ROOT / "notebooks" / f"{name}.md")
    for cell in (c for c in nb.cells if c.cell_type == "code"):
        tree = ast.parse(cell.source)
        found = [type(n).__name__ for n in ast.walk(tree) if isinstance(n, (ast.If, ast.IfExp))]
        assert not found, (name, found, cell.source[:200])
        calls = {n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
                 for n in ast.walk(tree) if isinstance(n, ast.Call)}
        assert not calls & _WRITES, (name, calls & _WRITES)
        opened = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "open"]
        assert not opened, name


def test_notebooks_run_clean(quick_run):
    tmp, book, manifests = quick_run
    for name, manifest in manifests.items():
        assert manifest["status"] == "finished" and manifest["quick"] is True
        assert manifest["versions"]["numpy"]
        nb = json.loads((book / "executed" / f"{name}.ipynb").read_text())
        for cell in nb["cells"]:
            for out in cell.get("outputs", []):
                assert out["output_type"] != "error", (name, out)
                assert not (out["output_type"] == "stream" and out["name"] == "stderr"), (name, out["text"])
        assert (tmp / "results" / "manifests" / f"{name}.json").exists()
    assert (tmp / "results" / "theory" / "lemma31.csv").exists()


def test_finished_notebook_is_skipped_on_rerun(quick_run):
    tmp, book, _ = quick_run
    spec = reproduce.NOTEBOOKS[0]
    again = reproduce.run_notebook(spec, quick=True, executed_dir=book / "executed",
                                   results_dir=tmp / "results")
    assert again.get("skipped") is True


def test_book_builds_without_warnings(quick_run):
    _, book, _ = quick_run
    reproduce.build_book(book)  # -W: any warning raises SystemExit
    html = book / "_build" / "html"
    for spec in reproduce.NOTEBOOKS:
        page = html / "executed" / f"{spec.name}.html"
        assert page.exists(), page
        assert "<img" in page.read_text(), f"{spec.name} has no figure"
    assert (html / "intro.html").exists()


def test_built_book_renders_in_a_real_browser(quick_run):
    """Every chapter page of the quick book loads in headless Chromium with no network: no JS error, every
    figure resolves, no error output, math typeset by the book's own MathJax."""
    from tpo_core.commands import browser_check

    from helpers import chromium_or_skip_reason

    chromium, why = chromium_or_skip_reason()  # CI=true: a missing Chromium fails
    if chromium is None:
        pytest.skip(why)
    _, book, _ = quick_run
    html = book / "_build" / "html"
    if not (html / "intro.html").exists():
        reproduce.build_book(book)
    rows = browser_check.check_book(html, ignore_js_errors=())  # strict: book/_ext/dedup_scripts.py fixes thebe
    pages = {r["page"] for r in rows} if rows and "page" in rows[0] else set()
    assert len(rows) >= len(reproduce.NOTEBOOKS) + 1, pages
    bad = [(r.get("page"), r["problems"]) for r in rows if not r["ok"]]
    assert not bad, bad
    assert sum(r["images_ok"] for r in rows) >= len(reproduce.NOTEBOOKS)


def test_toc_lists_every_notebook():
    toc = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text())
    files = [c["file"] for c in toc["chapters"]]
    executed = sorted(f.split("/", 1)[1] for f in files if f.startswith("executed/"))
    assert executed == sorted(s.name for s in reproduce.NOTEBOOKS)


def test_unknown_notebook_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown notebook"):
        reproduce.main(["--only", "no_such_notebook", "--no-book"])


def test_environment_yml_mirrors_pip_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert "torch==2.13.0" in pip and "-r requirements.txt" in pip
