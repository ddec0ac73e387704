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
