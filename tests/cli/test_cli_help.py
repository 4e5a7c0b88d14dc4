"""Every command and bench suite answers ``--help`` with status 0, citing no file an installed copy lacks."""

from __future__ import annotations

import importlib.util

import pytest

from fastdit.cli import COMMANDS, main
from fastdit.cli.bench import SUITES

INSTALLED = [[c] for c, (module, _) in COMMANDS.items() if importlib.util.find_spec(module)]
INSTALLED += [["bench", s] for s, (module, _) in SUITES.items() if importlib.util.find_spec(module)]


@pytest.mark.parametrize("argv", [[], *INSTALLED], ids=lambda argv: " ".join(argv) or "fastdit")
def test_help_exits_zero(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: fastdit" in out
    assert "DESIGN.md" not in out  # the design notes live in the repository, not in what users install

