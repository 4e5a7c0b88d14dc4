"""Every command and bench suite answers ``--help`` with status 0."""

from __future__ import annotations

import importlib.util

import pytest

from fastdit.cli import COMMANDS, main
from fastdit.cli.bench import SUITES

INSTALLED = [[c] for c in COMMANDS if importlib.util.find_spec(f"fastdit.cli.{c}")]
INSTALLED += [["bench", s] for s in SUITES if importlib.util.find_spec(f"fastdit.bench.{s}")]


@pytest.mark.parametrize("argv", [[], *INSTALLED], ids=lambda argv: " ".join(argv) or "fastdit")
def test_help_exits_zero(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    assert "usage: fastdit" in capsys.readouterr().out

