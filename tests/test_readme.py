"""The README's commands exist: every nox session it names is in noxfile.py, every ``-m tpo_core...`` module
imports, and every ``--flag`` of a ``tpo_core.commands`` command line is one its parser accepts."""

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


def _commands() -> list[str]:
    """The README's shell lines (code blocks and inline code), continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    lines = [ln.split("#")[0] for b in blocks for ln in b.replace("\\\n", " ").splitlines()]
    return [ln.strip() for ln in lines + re.findall(r"`([^`\n]*-m tpo_core[^`\n]*)`", README) if ln.strip()]


def test_every_nox_session_named_exists():
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    sessions = {f.name for f in tree.body if isinstance(f, ast.FunctionDef)
                and any("session" in ast.unparse(d) for d in f.decorator_list)}
    named = set(re.findall(r"nox -s ([a-z_]+)", README))
    assert named and named <= sessions, named - sessions


def test_every_module_named_imports():
    modules = set(re.findall(r"-m (tpo_core[\w.]*)", README))
    assert "tpo_core.commands.distributed" in modules
    for m in modules:
        assert importlib.util.find_spec(m) is not None, m


@pytest.mark.parametrize("module", ["tpo_core.commands.distributed", "tpo_core.commands.download"])
def test_every_flag_of_a_readme_command_is_accepted(module, capsys):
    lines = [c for c in _commands() if f"-m {module}" in c]
    assert lines, f"the README runs no {module}"
    with pytest.raises(SystemExit):
        importlib.import_module(module).main(["--help"])
    accepted = set(re.findall(r"--[a-z][a-z-]*", capsys.readouterr().out))
    for line in lines:
        flags = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", line.split(f"-m {module}", 1)[1]))
        assert flags <= accepted, (line, flags - accepted)
