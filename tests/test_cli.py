"""lungreview.py: one command; every subcommand resolves lazily and answers --help."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

import lungreview
from core.settings import REPO_ROOT


def test_the_top_level_help_lists_every_subcommand_without_importing_them(capsys):
    before = set(sys.modules)
    assert lungreview.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in lungreview.COMMANDS)
    assert not {m for m in set(sys.modules) - before if m.split(".")[0] in ("models", "services", "db")}


def test_the_dispatcher_imports_no_layer_of_the_project():
    code = "import sys, lungreview; print(sorted(m for m in sys.modules if m.split('.')[0] in " \
           "('core', 'db', 'services', 'models', 'dashboard')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", sorted(lungreview.COMMANDS))
def test_every_subcommand_answers_help(name, capsys):
    function = lungreview.resolve(name)
    with pytest.raises(SystemExit) as done:
        function(["--help"])
    assert done.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_unknown_and_missing_subcommands_are_usage_errors(capsys, monkeypatch):
    with pytest.raises(SystemExit) as done:
        lungreview.main(["frobnicate"])
    assert done.value.code == 2 and "unknown subcommand 'frobnicate'" in capsys.readouterr().err
    monkeypatch.setitem(lungreview.COMMANDS, "ghost", ("core.no_such_module:main", "a tool of a later version"))
    assert lungreview.main(["ghost"]) == 2
    assert "'lungreview ghost' is not available in this build" in capsys.readouterr().err
    assert lungreview.main([]) == 2


def test_version_is_written_once(capsys):
    import core
    from core.domain import APP_VERSION

    assert lungreview.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"lungreview {core.__version__}" and core.__version__ == APP_VERSION
    pyproject = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'dynamic = ["version"]' in pyproject and not re.search(r'^version\s*=\s*"', pyproject, re.M)
