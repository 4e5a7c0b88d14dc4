"""Ctrl-C while the command line starts (torch takes seconds to import) is one line and status 130, never an
import traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

# `python -m fastdit ARGS`, with a Ctrl-C arriving the moment anything imports torch
INTERRUPTED_START = """
import builtins, runpy, sys

real_import = builtins.__import__

def import_interrupted(name, *args, **kwargs):
    if name == "torch" or name.startswith("torch."):
        raise KeyboardInterrupt
    return real_import(name, *args, **kwargs)

builtins.__import__ = import_interrupted
runpy.run_module("fastdit", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("args", [["info"], ["generate", "--prompt", "a red ball"], ["--help"]])
def test_ctrl_c_during_start_up_is_one_line(cli_env, tmp_path, args):
    result = subprocess.run([sys.executable, "-c", INTERRUPTED_START, *args], cwd=tmp_path, env=cli_env, text=True,
                            capture_output=True, timeout=120)
    assert result.returncode == 130, result.stderr
    assert result.stderr == "fastdit: interrupted\n" and result.stdout == ""
