"""Drop duplicate <script> entries from every page (a Sphinx 7.4 quirk, worked around here).

Sphinx 7.4 emits an inline script added after the builder starts twice (its de-duplication compares the
filename ``None`` with ``''``). sphinx-thebe's inline script declares ``const THEBE_JS_URL``, so the second
copy throws ``SyntaxError: Identifier 'THEBE_JS_URL' has already been declared`` on every page. This hook
keeps the first of identical entries (same file, same attributes and body).
"""


def _dedup(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for js in scripts:
        key = (str(getattr(js, "filename", js) or ""), tuple(sorted(getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(js)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", _dedup, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
