"""tpo_core.commands.browser_check in a real headless Chromium, on a tiny hand-made site with known faults."""

import importlib.util
import struct
import zlib
from pathlib import Path

import pytest

from tpo_core.commands import browser_check

from helpers import chromium_or_skip_reason  # noqa: E402  (tests/helpers.py)

CHROMIUM, _WHY = chromium_or_skip_reason()  # on CI (CI=true) a missing Chromium fails here instead
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason=_WHY or "")


def _png(width=2, height=2) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def _page(body, head=""):
    return f"<!doctype html><html><head><title>t</title>{head}</head><body>{body}</body></html>"


# A stand-in for MathJax 3: what the checker looks at (version, startup.promise, mjx-container).
FAKE_MATHJAX = """<script>
window.MathJax = {version: "3-test", startup: {promise: new Promise(done =>
  document.addEventListener("DOMContentLoaded", () => {
    for (const m of document.querySelectorAll(".math")) {
      const c = document.createElement("mjx-container"); c.textContent = "x"; m.replaceChildren(c);
    }
    done();
  }))}};
</script>"""

PAGES = {
    "good.html": _page('<p>fine</p><img src="_images/ok.png" alt="ok">'),
    "broken_image.html": _page('<img src="_images/ok.png"><img src="_images/missing.png">'),
    "js_error.html": _page('<p>x</p><script>throw new Error("boom from the test page")</script>'),
    "error_output.html": _page(
        '<div class="cell docutils container"><div class="cell_output docutils container">'
        '<div class="output traceback highlight-ipythontb notranslate"><div class="highlight"><pre>'
        "Traceback (most recent call last):\n  File \"x.py\", line 1\nZeroDivisionError: division by zero"
        "</pre></div></div></div></div>"),
    "raw_math.html": _page(r'<p><span class="math notranslate nohighlight">\(x^2\)</span></p>'),
    "typeset_math.html": _page(r'<p><span class="math notranslate nohighlight">\(x^2\)</span></p>',
                               head=FAKE_MATHJAX),
    "math_error.html": _page('<p class="math">x</p><mjx-container><mjx-merror data-mjx-error='
                             '"Undefined control sequence \\foo">\\foo</mjx-merror></mjx-container>',
                             head='<script>window.MathJax = {version: "3-test"}</script>'),
    "thebe_twice.html": _page("<script>const THEBE_JS_URL = 1</script>"
                              "<script>const THEBE_JS_URL = 1</script>"),
}
BROKEN = {"broken_image.html", "js_error.html", "error_output.html", "raw_math.html",
          "math_error.html"}

# The real MathJax 3 that the book ships (requirements.txt: sphinx-mathjax-offline), when installed.
_SMO = importlib.util.find_spec("sphinx-mathjax-offline")
REAL_MATHJAX = Path(_SMO.origin).parent / "static" / "mathjax" / "tex-chtml.js" if _SMO else None
if REAL_MATHJAX is not None and not REAL_MATHJAX.is_file():
    REAL_MATHJAX = None
if REAL_MATHJAX is not None:
    _real = f'<script>window.MathJax = {{}}</script><script defer src="{REAL_MATHJAX.as_uri()}"></script>'
    PAGES["real_mathjax.html"] = _page(
        r'<p><span class="math">\(\frac{1}{2} \le \mathbb{E}[x]\)</span></p>'
        r'<div class="math">\[\begin{aligned} a &= b \\ c &= d \end{aligned}\]</div>', head=_real)
    PAGES["real_mathjax_tex_errors.html"] = _page(
        r'<p><span class="math">\(\nosuchmacro x\)</span> <span class="math">\(\frac{x}\)</span></p>',
        head=_real)
    BROKEN.add("real_mathjax_tex_errors.html")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    (root / "_images").mkdir()
    (root / "_images" / "ok.png").write_bytes(_png())
    for name, html in PAGES.items():
        (root / name).write_text(html)
    (root / "genindex.html").write_text(_page('<img src="nope.png">'))  # never checked
    (root / "_static").mkdir()
    (root / "_static" / "skip.html").write_text(_page("<script>throw 1</script>"))  # never checked
    return root


@pytest.fixture(scope="module")
def results(site):
    return {r["page"]: r for r in browser_check.check_book(site, chromium=CHROMIUM, timeout=15)}


@needs_chromium
def test_checks_every_page_but_index_pages_and_underscore_folders(results):
    assert set(results) == set(PAGES)


@needs_chromium
def test_flags_exactly_the_broken_pages(results):
    assert {p for p, r in results.items() if not r["ok"]} == BROKEN
    for page in set(PAGES) - BROKEN:
        assert results[page]["problems"] == [], (page, results[page])
        assert results[page]["loaded"] and not results[page]["js_errors"]


@needs_chromium
def test_image_counts(results):
    good, broken = results["good.html"], results["broken_image.html"]
    assert (good["images"], good["images_ok"]) == (1, 1)
    assert (broken["images"], broken["images_ok"]) == (2, 1)
    assert broken["broken_images"] == ["_images/missing.png"]
    assert broken["js_errors"] == [] and broken["error_outputs"] == 0


@needs_chromium
def test_js_exception_is_reported(results):
    r = results["js_error.html"]
    assert r["loaded"] and len(r["js_errors"]) == 1
    assert "boom from the test page" in r["js_errors"][0]
    assert r["images"] == 0 and r["error_outputs"] == 0


@needs_chromium
def test_execution_error_output_is_reported(results):
    r = results["error_output.html"]
    assert r["error_outputs"] == 1 and r["js_errors"] == []
    assert results["good.html"]["error_outputs"] == 0


@needs_chromium
def test_math_typeset_or_not(results):
    assert results["good.html"]["has_math"] is False and results["good.html"]["math_typeset"] is None
    raw, done = results["raw_math.html"], results["typeset_math.html"]
    assert raw["has_math"] and raw["math_typeset"] is False and raw["mathjax"] == "absent"
    assert done["has_math"] and done["math_typeset"] is True and done["math_elements"] == 1
    assert done["mathjax"] == "MathJax 3-test" and done["math_errors"] == []
    bad = results["math_error.html"]
    assert bad["math_typeset"] is True and bad["math_errors"] == [r"Undefined control sequence \foo"]


@needs_chromium
@pytest.mark.skipif(REAL_MATHJAX is None, reason="sphinx-mathjax-offline (requirements.txt) not installed")
def test_real_mathjax_typesets_offline_and_tex_errors_are_reported(results):
    good, bad = results["real_mathjax.html"], results["real_mathjax_tex_errors.html"]
    assert good["ok"] and good["math_typeset"] and good["math_elements"] == 2, good
    assert good["mathjax"].startswith("MathJax 3.") and good["failed_requests"] == []
    assert bad["math_typeset"] is True
    assert bad["math_errors"] == ["undefined control sequence \\nosuchmacro", "Missing argument for \\frac"]


@needs_chromium
def test_known_upstream_js_error_is_ignored_but_reported(results):
    r = results["thebe_twice.html"]
    assert r["ok"] and r["js_errors"] == []
    assert len(r["ignored_js_errors"]) == 1 and "THEBE_JS_URL" in r["ignored_js_errors"][0]


@needs_chromium
def test_cli_table_and_exit_codes(site, capsys):
    assert browser_check.main([str(site), "--timeout", "15"]) == 1
    out = capsys.readouterr().out
    assert "broken_image.html" in out and "image did not load: _images/missing.png" in out
    assert "boom from the test page" in out and "math not typeset" in out
    # --allow-raw-math and --strict-js move raw_math.html and thebe_twice.html across; a page
    # that is not there fails to load.
    res = browser_check.check_book(site, chromium=CHROMIUM, timeout=15, require_math=False,
                                   ignore_js_errors=(), pages=["raw_math.html", "thebe_twice.html",
                                                               "no_such.html"])
    ok = {r["page"]: r["ok"] for r in res}
    assert ok == {"raw_math.html": True, "thebe_twice.html": False, "no_such.html": False}
    assert res[2]["load_error"] == "page not built (file missing)"


def test_missing_chromium_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CHROMIUM", str(tmp_path / "no-chromium-here"))
    with pytest.raises(browser_check.ChromiumNotFound, match="CHROMIUM"):
        browser_check.check_book(tmp_path)
    (tmp_path / "a.html").write_text(_page("x"))
    assert browser_check.main([str(tmp_path)]) == 2


def test_pages_come_from_the_toc_of_a_built_book(tmp_path):
    book = tmp_path / "book"
    html = book / "_build" / "html"
    (html / "executed").mkdir(parents=True)
    (book / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n"
                                   "  - file: executed/00_theory\n  - file: rerun.md\n"
                                   "    sections:\n      - file: extra\n")
    assert browser_check.book_pages(html) == ["intro.html", "executed/00_theory.html",
                                              "rerun.html", "extra.html"]
    (book / "_toc.yml").unlink()
    (html / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=intro.html" />')
    for name in ("intro.html", "genindex.html", "search.html", "executed/00_theory.html"):
        (html / name).write_text(_page("x"))
    assert browser_check.book_pages(html) == ["executed/00_theory.html", "intro.html"]
