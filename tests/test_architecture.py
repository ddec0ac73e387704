"""The package's module graph is one-way (import-linter's layers contract in pyproject.toml, imports inside
functions included) and no module imports another's private names."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tpo_core"


def test_import_linter_contracts_hold():
    from importlinter.cli import lint_imports  # pinned in requirements.txt: a missing install fails here

    assert lint_imports(config_filename=str(PACKAGE.parent / "pyproject.toml"), no_cache=True) == 0


def test_no_private_names_imported_across_modules():
    offences = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tpo_core"):
                offences += [f"{path.name}: from {node.module} import {a.name}" for a in node.names
                             if a.name.startswith("_") and a.name != "__version__"]
    assert offences == []


def test_the_contract_names_every_module():
    """A new module must be placed in a layer (else the contract would silently not check it)."""
    import tomllib

    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["importlinter"]
    layered = {m.strip() for c in config["contracts"] for layer in c["layers"] for m in layer.split("|")}
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert modules == layered


def test_every_import_inside_the_package_resolves():
    """Imports inside functions run only when the function does: check each ``from tpo_core.X import name``
    names something X defines, so a moved function breaks this test, not a user's notebook."""
    import importlib

    missing = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tpo_core"):
                module = importlib.import_module(node.module)
                missing += [f"{path.name}: from {node.module} import {a.name}" for a in node.names
                            if not hasattr(module, a.name) and not _is_submodule(node.module, a.name)]
    assert missing == []


def _is_submodule(package: str, name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(f"{package}.{name}") is not None if package == "tpo_core" else False
