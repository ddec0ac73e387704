"""Check a built book in a real headless Chromium: pages load, images resolve, math is typeset.

``python -m tpo_core.browser_check book/_build/html`` loads every chapter page of the built book
(the pages named by ``book/_toc.yml`` when the HTML sits in ``<book>/_build/html``, else every
``.html`` file outside ``_*`` folders except ``genindex``/``search``/``index``), prints a table
and exits 1 if any page fails. A page fails when it does not load, throws a JavaScript
exception (but for the known upstream ones in KNOWN_JS_ERRORS), has an ``<img>`` that did not
resolve, shows an execution error output (a Jupyter traceback), has a TeX error, or has math that
MathJax did not typeset (``--allow-raw-math`` lets that pass).

Chromium runs with its network cut off (``--online`` lifts that), so a book that needs a CDN to
render shows up here. It is driven over the DevTools protocol through ``--remote-debugging-pipe``
(stdlib only, no client library). Which Chromium: the ``chromium`` argument, else ``$CHROMIUM``,
else ``/usr/bin/chromium``.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
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
    """Chromium died, or did not answer in time."""


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


class _Browser:
    """One headless Chromium, spoken to over --remote-debugging-pipe (fd 3 in, fd 4 out)."""

    def __init__(self, chromium: str, *, offline: bool = True, timeout: float = 30.0):
        self.timeout = timeout
        self._next_id = 0
        self._events: list[dict] = []
        self._buf = b""
        self._profile = tempfile.mkdtemp(prefix="tpo-browser-check-")
        self._stderr = open(os.path.join(self._profile, "chromium-stderr.log"), "wb")
        args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
                "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-extensions",
                "--disable-default-apps", "--disable-dev-shm-usage", "--mute-audio",
                "--password-store=basic", "--use-mock-keychain", "--window-size=1280,1600",
                f"--user-data-dir={self._profile}", "about:blank"]
        if offline:
            args.insert(-1, "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost")
        to_r, self._to_w = os.pipe()
        self._from_r, from_w = os.pipe()

        def wire_fds():  # in the child: our pipe ends become fds 3 and 4 (moved up first, so
            hi_r = fcntl.fcntl(to_r, fcntl.F_DUPFD, 10)  # dup2 cannot clobber the other one)
            hi_w = fcntl.fcntl(from_w, fcntl.F_DUPFD, 10)
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)

        try:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=self._stderr, preexec_fn=wire_fds, close_fds=False)
        except OSError as err:
            self._cleanup()
            raise BrowserError(f"could not start {chromium}: {err}") from err
        finally:
            os.close(to_r)
            os.close(from_w)
        try:
            self.call("Browser.getVersion")
        except BaseException:
            self.close()
            raise

    # -- transport ----------------------------------------------------------------------------
    def _stderr_tail(self) -> str:
        try:
            self._stderr.flush()
            text = Path(self._stderr.name).read_text(errors="replace").strip().splitlines()
            return "\n".join(text[-15:])
        except OSError:
            return ""

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self._from_r], [], [], left)
            if not ready:
                raise TimeoutError
            chunk = os.read(self._from_r, 1 << 16)
            if not chunk:
                raise BrowserError("Chromium closed the DevTools pipe (it exited, code "
                                   f"{self.proc.poll()}). Its stderr ends:\n{self._stderr_tail()}")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        try:
            while data:
                data = data[os.write(self._to_w, data):]
        except BrokenPipeError as err:
            raise BrowserError(f"Chromium is gone. Its stderr ends:\n{self._stderr_tail()}") from err
        return self._next_id

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float | None = None) -> dict:
        """Send a command and wait for its answer; events that arrive meanwhile are kept."""
        msg_id = self.send(method, params, session)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            try:
                msg = self._read_message(deadline)
            except TimeoutError:
                raise BrowserError(f"no answer to {method} within the timeout") from None
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise BrowserError(f"{method} failed: {msg['error'].get('message')}")
                return msg.get("result", {})
            if "method" in msg:
                self._on_event(msg)

    def _on_event(self, msg: dict) -> None:
        if msg["method"] == "Page.javascriptDialogOpening":  # an alert() would block the page
            self.send("Page.handleJavaScriptDialog", {"accept": True}, msg.get("sessionId"))
        self._events.append(msg)

    def wait_event(self, method: str, session: str, timeout: float) -> dict | None:
        """The first event ``method`` from ``session`` (kept or new), or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for ev in self._events:
                if ev["method"] == method and ev.get("sessionId") == session:
                    return ev
            try:
                self._on_event_or_skip(self._read_message(deadline))
            except TimeoutError:
                return None

    def _on_event_or_skip(self, msg: dict) -> None:
        if "method" in msg:
            self._on_event(msg)

    def drain(self, seconds: float) -> None:
        """Collect the events that arrive in the next ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                self._on_event_or_skip(self._read_message(deadline))
            except TimeoutError:
                return

    def events(self, session: str, method: str) -> list[dict]:
        return [e for e in self._events if e.get("sessionId") == session and e["method"] == method]

    # -- pages --------------------------------------------------------------------------------
    def check_page(self, url: str, *, settle: float = 0.3) -> dict:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        try:
            for domain in ("Page", "Runtime", "Network"):
                self.call(f"{domain}.enable", session=session)
            started = time.monotonic()
            nav = self.call("Page.navigate", {"url": url}, session=session)
            load_error = nav.get("errorText") or None
            loaded_event = None
            if not load_error:
                loaded_event = self.wait_event("Page.loadEventFired", session, self.timeout)
                if loaded_event is None:
                    load_error = f"no load event within {self.timeout:g} s"
            probe = {}
            if loaded_event is not None:
                math_ms = int(max(1.0, self.timeout - (time.monotonic() - started)) * 1000)
                res = self.call("Runtime.evaluate",
                                {"expression": _PAGE_PROBE.replace("__MATH_MS__", str(math_ms)),
                                 "awaitPromise": True, "returnByValue": True},
                                session=session, timeout=self.timeout + 5)
                if "exceptionDetails" in res:
                    load_error = "page probe failed: " + _describe_exception(res["exceptionDetails"])
                else:
                    probe = res["result"]["value"]
                self.drain(settle)  # late exceptions (timers, deferred scripts)
            js_errors = [_describe_exception(e["params"]["exceptionDetails"])
                         for e in self.events(session, "Runtime.exceptionThrown")]
            failed_requests = []
            requests = {e["params"]["requestId"]: e["params"]["request"]["url"]
                        for e in self.events(session, "Network.requestWillBeSent")}
            for e in self.events(session, "Network.loadingFailed"):
                p = e["params"]
                if p.get("canceled"):
                    continue
                failed_requests.append(f"{requests.get(p['requestId'], '?')}: {p.get('errorText')}")
            return {"load_error": load_error, "js_errors": js_errors,
                    "failed_requests": failed_requests, "probe": probe}
        finally:
            self._events = [e for e in self._events if e.get("sessionId") != session]
            try:
                self.call("Target.closeTarget", {"targetId": target}, timeout=5)
            except BrowserError:
                pass

    # -- shutdown -----------------------------------------------------------------------------
    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("Browser.close")
                self.proc.wait(timeout=5)
            except (BrowserError, subprocess.TimeoutExpired, OSError):
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for fd in (self._to_w, self._from_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self._cleanup()

    def _cleanup(self) -> None:
        self._stderr.close()
        shutil.rmtree(self._profile, ignore_errors=True)


def _describe_exception(details: dict) -> str:
    exc = details.get("exception") or {}
    text = exc.get("description") or details.get("text") or "exception"
    text = text.splitlines()[0] if text else "exception"
    where = details.get("url") or ""
    if where:
        where = f" ({where.rsplit('/', 1)[-1]}:{details.get('lineNumber', 0) + 1})"
    return text + where


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

    ``timeout``: seconds per page (load, then images and math). ``offline`` cuts Chromium's DNS so
    nothing off this machine loads. ``require_math``: untypeset math makes a page fail.
    ``pages``: check these (relative to ``html_dir``) instead of :func:`book_pages`.
    Raises ChromiumNotFound, BrowserError (Chromium died or hung), FileNotFoundError (no dir).
    """
    html_dir = Path(html_dir).resolve()
    if not html_dir.is_dir():
        raise FileNotFoundError(f"{html_dir} is not a directory (build the book first)")
    exe = find_chromium(chromium)
    pages = list(pages) if pages is not None else book_pages(html_dir)
    if not pages:
        raise FileNotFoundError(f"no HTML pages found in {html_dir}")
    results = []
    browser = _Browser(exe, offline=offline, timeout=timeout)
    try:
        for page in pages:
            path = html_dir / page
            row = {"page": page, "loaded": False, "load_error": None, "js_errors": [],
                   "ignored_js_errors": [], "images": 0, "images_ok": 0, "broken_images": [],
                   "error_outputs": 0,
                   "has_math": False, "math_typeset": None, "math_elements": 0, "math_errors": [],
                   "mathjax": "absent", "failed_requests": []}
            if not path.is_file():
                row["load_error"] = "page not built (file missing)"
            else:
                try:
                    got = browser.check_page(path.as_uri())
                except BrowserError as err:
                    if browser.proc.poll() is not None:
                        raise  # Chromium itself is gone: nothing more to check
                    got = {"load_error": str(err), "js_errors": [], "failed_requests": [], "probe": {}}
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
            results.append(row)
    finally:
        browser.close()
    return results


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
