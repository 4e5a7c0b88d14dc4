"""A warning during a command is one line on stderr, without the file and source line Python's default adds
(which landed inside the running progress bar)."""

from __future__ import annotations

import warnings

import fastdit.cli.info
from fastdit.cli import main


def _warns(args) -> int:
    warnings.warn("fastdit: grid 2x4x4 is too small for any sparsity; running dense", UserWarning)
    return 0


def test_a_warning_is_one_line_without_source(capsys, monkeypatch):
    monkeypatch.setattr(fastdit.cli.info, "run", _warns)
    shown = warnings.showwarning
    assert main(["info"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "warning: fastdit: grid 2x4x4 is too small for any sparsity; running dense"]
    assert warnings.showwarning is shown  # an in-process caller's display is left as it was
