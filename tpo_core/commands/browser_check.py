"""Check a built book in a real headless Chromium: pages load, images resolve, math is typeset.

``python -m tpo_core.commands.browser_check book/_build/html`` loads every chapter page of the built book
(the pages named by ``book/_toc.yml`` when the HTML sits in ``<book>/_build/html``, else every
``.html`` file outside ``_*`` folders except ``genindex``/``search``/``index``), prints a table
and exits 1 if any page fails. A page fails when it does not load, throws a JavaScript
exception (but for the known upstream ones in KNOWN_JS_ERRORS), has an ``<img>`` that did not
resolve, shows an execution error output (a Jupyter traceback), has a TeX error, or has math that
MathJax did not typeset (``--allow-raw-math`` lets that pass).

Chromium is driven by Playwright's sync API (``playwright`` in requirements.txt; its wheel carries
the driver, and no Playwright browser is downloaded: the system Chromium is launched through
``executable_path``). Which Chromium: the ``chromium`` argument, else ``$CHROMIUM``, else
``/usr/bin/chromium``. Offline by default: every request that is not ``file:``/``data:``/``blob:``
is aborted and DNS is cut (``--online`` lifts both), so a book that needs a CDN to render shows up
here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

DEFAULT_CHROMIUM = "/usr/bin/chromium"
SKIPPED_PAGES = {"genindex.html", "search.html", "py-modindex.html"}

#: JS errors that every jupyter-book 1.0.4 page throws, for a reason outside this project: Sphinx
#: 7.4 emits an inline ``add_js_file(None, body=...)`` script twice when it is added after the
#: builder starts (``None`` vs ``''`` filenames defeat its de-duplication), and sphinx-thebe's
#: body declares ``const THEBE_JS_URL``, so the second copy is a SyntaxError. Harmless (the first
#: copy ran; thebe is off). Ignored by default and still reported (``ignored_js_errors``);
#: ``ignore_js_errors=()`` / ``--strict-js`` counts them. This project's book removes the duplicate
#: (``book/_ext/dedup_scripts.py``), so its own checks run strict.
KNOWN_JS_ERRORS = (r"^SyntaxError: Identifier 'THEBE_JS_URL' has already been declared\b",)

#: What the page reports, computed in the page after its load event (``__MATH_MS__`` is replaced).
_PAGE_PROBE = r"""
(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const deadline = Date.now() + __MATH_MS__;
  // Images: give any that are still loading (lazy ones too) until the deadline.
  const imgs = Array.from(document.images);
  for (const img of imgs) { if (img.loading === 'lazy') img.loading = 'eager'; }
  while (imgs.some(i => !i.complete) && Date.now() < deadline) await sleep(50);
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0))
                     .map(i => i.getAttribute('src') || '(no src)');
  // Math: Sphinx marks it with .math (\(..\) / \[..\]); MyST-NB/nbconvert may use script tags.
  const hasMath = !!document.querySelector('.math, script[type^="math/tex"]');
  let mathjax = 'absent';
  if (window.MathJax && window.MathJax.version) {
    mathjax = 'MathJax ' + window.MathJax.version;
    const startup = window.MathJax.startup;
    if (startup && startup.promise) {
      await Promise.race([startup.promise.catch(() => null), sleep(Math.max(0, deadline - Date.now()))]);
    }
  } else if (window.MathJax && window.MathJax.Hub) {
    mathjax = 'MathJax 2';   // MathJax 2 typesets into .MathJax spans, counted below
    await new Promise(r => { window.MathJax.Hub.Queue(r); setTimeout(r, Math.max(0, deadline - Date.now())); });
  }
  const mjx = document.querySelectorAll('mjx-container, .MathJax, .MathJax_Display').length;
  // TeX errors: MathJax 3 turns a parse error into <merror>, and an unknown macro (its
  // noundefined extension) into red text starting with a backslash; found in its internal tree,
  // else (MathJax 2, or no access) from the DOM.
  let mathErrors = Array.from(document.querySelectorAll('mjx-merror, .MathJax .merror'))
                        .map(e => e.getAttribute('data-mjx-error') || e.textContent.trim());
  try {
    const items = window.MathJax.startup.document.math;
    const found = [];
    for (const item of items) {
      item.root.walkTree(node => {
        if (node.isKind('merror')) {
          found.push(String(node.attributes.get('data-mjx-error') || item.math));
        } else if (node.isKind('mtext') && node.attributes.get('mathcolor') === 'red') {
          const text = node.childNodes.map(c => c.getText ? c.getText() : '').join('');
          if (text.startsWith('\\')) found.push('undefined control sequence ' + text);
        }
      });
    }
    mathErrors = found;
  } catch (e) { /* not MathJax 3, or its internals moved: keep the DOM's answer */ }
  // Execution errors: MyST-NB renders them as .output.traceback; nbconvert/nbsphinx/JupyterLab
  // use the others. Any output whose text holds a Python traceback counts too.
  const errSel = '.output.traceback, .output_error, .output_area.stderr .traceback, ' +
                 '[data-mime-type="application/vnd.jupyter.error"]';
  const outSel = '.cell_output, .output_area, .jp-OutputArea-output, div.output';
  const errCells = new Set();
  const cellOf = el => el.closest('.cell_output, .jp-OutputArea, .output_wrapper') || el;
  document.querySelectorAll(errSel).forEach(el => errCells.add(cellOf(el)));
  document.querySelectorAll(outSel).forEach(el => {
    if (/Traceback \(most recent call last\)|^\s*Traceback\b/m.test(el.textContent)) errCells.add(cellOf(el));
  });
  return {images: imgs.length, broken: broken, has_math: hasMath, mathjax: mathjax,
          mjx: mjx, math_errors: mathErrors, error_outputs: errCells.size, title: document.title,
          url: location.href};
})()
"""


class ChromiumNotFound(FileNotFoundError):
    """No Chromium executable where we looked."""


class BrowserError(RuntimeError):
    """Chromium did not start, or died."""


def find_chromium(chromium: str | os.PathLike | None = None) -> str:
    """The Chromium to run: ``chromium``, else ``$CHROMIUM``, else /usr/bin/chromium (or on PATH)."""
    wanted = str(chromium or os.environ.get("CHROMIUM") or DEFAULT_CHROMIUM)
    candidates = [wanted]
    if chromium is None and not os.environ.get("CHROMIUM"):
        candidates += ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]
    for cand in candidates:
        path = cand if os.sep in cand else shutil.which(cand)
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise ChromiumNotFound(
        f"Chromium not found (looked for {wanted!r}). Install it (Debian: apt-get install chromium) "
        f"or point $CHROMIUM / --chromium at a Chromium or Chrome executable.")


_LOCAL_SCHEMES = ("file:", "data:", "blob:")


def _offline_route(route) -> None:
    if route.request.url.startswith(_LOCAL_SCHEMES):
        route.continue_()
    else:
        route.abort("internetdisconnected")


def _describe_error(err) -> str:
    """``Name: message (file:line)`` for an uncaught exception (Playwright's ``pageerror``)."""
    text = (f"{err.name}: {err.message}" if err.name else err.message) or "exception"
    where = re.search(r"\bat (?:.*\()?(?:[^\s()]*/)?([^\s/()]+):(\d+):\d+\)?$", err.stack or "", re.M)
    return text.splitlines()[0] + (f" ({where[1]}:{where[2]})" if where else "")


def _check_page(context, url: str, timeout: float, settle: float = 0.3) -> dict:
    """Load ``url`` in a new tab, wait for its load event, run the probe, collect late exceptions."""
    from playwright.sync_api import Error, TimeoutError as Timeout

    page = context.new_page()  # a dialog (alert) is dismissed by Playwright, so it cannot block
    js_errors, failed = [], []
    page.on("pageerror", lambda err: js_errors.append(_describe_error(err)))
    page.on("requestfailed", lambda req: req.failure in (None, "net::ERR_ABORTED")  # canceled
            or failed.append(f"{req.url}: {req.failure}"))
    load_error, probe, started = None, {}, time.monotonic()
    try:
        try:
            page.goto(url, wait_until="load", timeout=timeout * 1000)
        except Timeout:
            load_error = f"no load event within {timeout:g} s"
        except Error as err:
            load_error = str(err).splitlines()[0]
        if load_error is None:
            math_ms = int(max(1.0, timeout - (time.monotonic() - started)) * 1000)
            try:
                probe = page.evaluate(_PAGE_PROBE.replace("__MATH_MS__", str(math_ms)))
            except Error as err:
                load_error = "page probe failed: " + str(err).splitlines()[0]
            page.wait_for_timeout(settle * 1000)  # late exceptions (timers, deferred scripts)
    finally:
        page.close()
    return {"load_error": load_error, "js_errors": js_errors, "failed_requests": failed, "probe": probe}


def _toc_files(entries) -> list[str]:
    out = []
    for entry in entries or []:
        if isinstance(entry, dict):
            if "file" in entry:
                out.append(entry["file"])
            for key in ("chapters", "sections", "parts"):
                out += _toc_files(entry.get(key))
    return out


def book_pages(html_dir: str | os.PathLike) -> list[str]:
    """Pages to check, relative to ``html_dir``, in book order.

    From ``<book>/_toc.yml`` when ``html_dir`` is ``<book>/_build/html`` and the toc is there
    (pages it names must exist, so a missing one is reported); else every ``.html`` file outside
    ``_*`` folders, leaving out genindex/search/py-modindex and the ``index.html`` redirect.
    """
    html_dir = Path(html_dir)
    toc_path = html_dir.parent.parent / "_toc.yml"
    if html_dir.name == "html" and html_dir.parent.name == "_build" and toc_path.is_file():
        import yaml

        toc = yaml.safe_load(toc_path.read_text()) or {}
        files = ([toc["root"]] if "root" in toc else []) + _toc_files([toc])
        pages = []
        for f in files:
            page = str(Path(f).with_suffix("")) + ".html"
            if page not in pages:
                pages.append(page)
        if pages:
            return pages
    pages = []
    for path in sorted(html_dir.rglob("*.html")):
        rel = path.relative_to(html_dir)
        if any(part.startswith("_") for part in rel.parts[:-1]) or rel.name in SKIPPED_PAGES:
            continue
        if rel.as_posix() == "index.html" and 'http-equiv="Refresh"' in path.read_text(errors="replace"):
            continue  # jupyter-book's redirect to the root page
        pages.append(rel.as_posix())
    return pages


def check_book(html_dir: str | os.PathLike, *, chromium: str | os.PathLike | None = None,
               timeout: float = 30.0, offline: bool = True, require_math: bool = True,
               ignore_js_errors: tuple[str, ...] | list[str] = KNOWN_JS_ERRORS,
               pages: list[str] | None = None) -> list[dict]:
    """Load each page of the built book in headless Chromium; one result dict per page.

    Keys: ``page`` (path relative to ``html_dir``), ``loaded`` (navigation succeeded, load event
    fired), ``load_error``, ``js_errors`` (uncaught exceptions, as text; those matching a regex
    of ``ignore_js_errors`` go to ``ignored_js_errors`` instead), ``images``,
    ``images_ok`` (``complete && naturalWidth > 0``), ``broken_images`` (their ``src``),
    ``error_outputs`` (cells showing a traceback), ``has_math``, ``math_typeset`` (None when the
    page has no math; else whether MathJax produced elements), ``math_elements``,
    ``math_errors`` (TeX errors MathJax rendered, e.g. an unknown macro), ``mathjax``
    (what loaded: ``"MathJax 3.2.2"``, ``"absent"``...), ``failed_requests`` (subresources that
    failed: informative), ``problems`` (why it fails) and ``ok``.

    ``timeout``: seconds per page (load, then images and math). ``offline`` aborts every request
    that is not ``file:``/``data:``/``blob:`` and cuts Chromium's DNS. ``require_math``: untypeset
    math makes a page fail. ``pages``: check these (relative to ``html_dir``) instead of
    :func:`book_pages`. Raises ChromiumNotFound, BrowserError (Chromium did not start, or died),
    FileNotFoundError (no dir).
    """
    html_dir = Path(html_dir).resolve()
    if not html_dir.is_dir():
        raise FileNotFoundError(f"{html_dir} is not a directory (build the book first)")
    exe = find_chromium(chromium)
    pages = list(pages) if pages is not None else book_pages(html_dir)
    if not pages:
        raise FileNotFoundError(f"no HTML pages found in {html_dir}")
    from playwright.sync_api import Error, sync_playwright

    args = ["--disable-gpu", *(["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost"] * offline)]
    results = []
    with sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(executable_path=exe, headless=True, args=args,
                                         timeout=max(timeout, 30) * 1000)
        except Error as err:
            raise BrowserError(f"could not start {exe}: {err}") from err
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 1600})
            context.set_default_timeout((timeout + 5) * 1000)
            if offline:
                context.route("**/*", _offline_route)
            for page in pages:
                results.append(_row(page, html_dir / page, context, browser, timeout,
                                    ignore_js_errors, require_math))
        finally:
            browser.close()
    return results


def _row(page: str, path: Path, context, browser, timeout: float, ignore_js_errors,
         require_math: bool) -> dict:
    from playwright.sync_api import Error

    row = {"page": page, "loaded": False, "load_error": None, "js_errors": [],
           "ignored_js_errors": [], "images": 0, "images_ok": 0, "broken_images": [],
           "error_outputs": 0,
           "has_math": False, "math_typeset": None, "math_elements": 0, "math_errors": [],
           "mathjax": "absent", "failed_requests": []}
    if not path.is_file():
        row["load_error"] = "page not built (file missing)"
    else:
        try:
            got = _check_page(context, path.as_uri(), timeout)
        except Error as err:
            got = {"load_error": str(err).splitlines()[0], "js_errors": [], "failed_requests": [],
                   "probe": {}}
        if not browser.is_connected():  # Chromium itself is gone: nothing more to check
            raise BrowserError(f"Chromium exited while checking {page}: {got['load_error']}")
        probe = got["probe"]
        ignored = [e for e in got["js_errors"] if any(re.search(p, e) for p in ignore_js_errors)]
        row.update(loaded=got["load_error"] is None, load_error=got["load_error"],
                   js_errors=[e for e in got["js_errors"] if e not in ignored],
                   ignored_js_errors=ignored, failed_requests=got["failed_requests"])
        if probe:
            row.update(images=probe["images"], images_ok=probe["images"] - len(probe["broken"]),
                       broken_images=probe["broken"], error_outputs=probe["error_outputs"],
                       has_math=probe["has_math"], math_elements=probe["mjx"],
                       math_errors=probe["math_errors"],
                       mathjax=probe["mathjax"])
            if probe["has_math"]:
                row["math_typeset"] = probe["mjx"] > 0
    row["problems"] = _problems(row, require_math)
    row["ok"] = not row["problems"]
    return row


def _problems(row: dict, require_math: bool) -> list[str]:
    out = []
    if not row["loaded"]:
        out.append(f"did not load: {row['load_error']}")
    out += [f"JS error: {e}" for e in row["js_errors"]]
    out += [f"image did not load: {src}" for src in row["broken_images"]]
    if row["error_outputs"]:
        out.append(f"{row['error_outputs']} execution error output(s)")
    if require_math and row["math_typeset"] is False:
        out.append(f"math not typeset ({row['mathjax']})")
    out += [f"math error: {e}" for e in row["math_errors"]]
    return out


def format_table(results: list[dict]) -> str:
    head = ("page", "load", "js err", "images", "err out", "math", "status")
    rows = []
    for r in results:
        math = "-" if r["math_typeset"] is None else (
            f"typeset ({r['math_elements']})" if r["math_typeset"] else f"RAW ({r['mathjax']})")
        rows.append((r["page"], "ok" if r["loaded"] else "FAIL", str(len(r["js_errors"])),
                     f"{r['images_ok']}/{r['images']}", str(r["error_outputs"]), math,
                     "ok" if r["ok"] else "FAIL"))
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for r in results:
        for p in r["problems"]:
            lines.append(f"{r['page']}: {p}")
    ignored = sorted({e.split(" (")[0] for r in results for e in r["ignored_js_errors"]})
    for e in ignored:
        n = sum(any(x.startswith(e) for x in r["ignored_js_errors"]) for r in results)
        lines.append(f"(ignored, known upstream, on {n} page(s): {e}; --strict-js counts it)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html_dir", nargs="?", default="book/_build/html")
    parser.add_argument("--chromium", help=f"Chromium executable (default $CHROMIUM or {DEFAULT_CHROMIUM})")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per page (default 30)")
    parser.add_argument("--online", action="store_true", help="let Chromium reach the network")
    parser.add_argument("--allow-raw-math", action="store_true",
                        help="do not fail pages whose math MathJax did not typeset")
    parser.add_argument("--strict-js", action="store_true",
                        help="count the known upstream JS errors (KNOWN_JS_ERRORS) too")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    try:
        results = check_book(args.html_dir, chromium=args.chromium, timeout=args.timeout,
                             offline=not args.online, require_math=not args.allow_raw_math,
                             ignore_js_errors=() if args.strict_js else KNOWN_JS_ERRORS)
    except (FileNotFoundError, BrowserError) as err:
        print(f"browser_check: {err}", file=sys.stderr)
        return 2
    print(json.dumps(results, indent=2) if args.json else format_table(results))
    failed = sum(not r["ok"] for r in results)
    print(f"\n{len(results) - failed}/{len(results)} pages ok", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
