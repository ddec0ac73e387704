"""The package's module graph is one-way (import-linter's contracts in pyproject.toml, imports inside functions
included), the algorithm and the theory touch no file, and no module imports another's private names."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tpo_core"


def test_import_linter_contracts_hold():
    from importlinter.cli import lint_imports  # pinned in requirements.txt: a missing install fails here

    assert lint_imports(config_filename=str(PACKAGE.parent / "pyproject.toml"), no_cache=True) == 0


def test_no_private_names_imported_across_modules():
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tpo_core"):
                offences += [f"{path.name}: from {node.module} import {a.name}" for a in node.names
                             if a.name.startswith("_") and a.name != "__version__"]
    assert offences == []


def test_the_contract_names_every_module():
    """A new module must be placed in a layer (else the contract would silently not check it)."""
    import tomllib

    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["importlinter"]
    layered = {f"{container}.{m.strip()}" for c in config["contracts"] if c["type"] == "layers"
               for container in c["containers"] for layer in c["layers"] for m in layer.split("|")}
    modules = {".".join(("tpo_core", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
               for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py"}
    assert modules == layered


def test_every_import_inside_the_package_resolves():
    """Imports inside functions run only when the function does: check each ``from tpo_core.X import name``
    names something X defines, so a moved function breaks this test, not a user's notebook."""
    import importlib

    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tpo_core"):
                module = importlib.import_module(node.module)
                missing += [f"{path.name}: from {node.module} import {a.name}" for a in node.names
                            if not hasattr(module, a.name) and not _is_submodule(node.module, a.name)]
    assert missing == []


def _is_submodule(package: str, name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(f"{package}.{name}") is not None if package.count(".") <= 1 else False


#: What reads or writes a file: none of it may appear in the algorithm (tpo/) or the theory (theory/).
_DISK = {"open", "Path", "read_text", "write_text", "read_bytes", "write_bytes", "mkdir", "to_csv", "read_csv",
         "save_pretrained", "save", "load", "replace", "unlink", "rmtree", "glob", "rglob", "is_file", "is_dir",
         "exists", "savefig", "to_json", "read_json", "dump"}


def test_the_algorithm_and_the_theory_touch_no_file():
    """Alg. 3 in memory and the exact theory: no call in tpo/ or theory/ reads or writes a file (the study keeps
    every result: tpo_core.study.checkpoints, tpo_core.study.run_loop)."""
    offences = []
    for folder in ("tpo", "theory"):
        for path in sorted((PACKAGE / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                    offences += [f"{folder}/{path.name}: imports {n}" for n in names
                                 if n.split(".")[0] in ("os", "shutil", "pathlib", "tempfile", "pickle", "json")]
                if isinstance(node, ast.Call):
                    f = node.func
                    name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                    if name in _DISK:
                        offences.append(f"{folder}/{path.name}:{node.lineno}: {name}(...)")
    assert offences == []
