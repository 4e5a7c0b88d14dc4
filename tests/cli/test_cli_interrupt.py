"""Ctrl-C while the command line starts (torch takes seconds to import) is one line and status 130, never an
import traceback; SIGTERM or Ctrl-C while a video is written leaves neither it nor its temporary file."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

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


# `fastdit slow-write OUT`: a command that writes a video of random frames, which takes ffmpeg seconds to encode
SLOW_WRITE = """
import sys, types
import numpy as np
import fastdit.cli as cli

def run(args):
    from fastdit.runs.media import write_video
    write_video(np.random.default_rng(0).integers(0, 256, (200, 256, 256, 3), dtype=np.uint8), args.out, 16)

command = types.ModuleType("slow_write")
command.add_arguments = lambda parser: parser.add_argument("out")
command.run = run
sys.modules["slow_write"] = command
cli.COMMANDS["slow-write"] = ("slow_write", "write a slow video")
sys.exit(cli.main(["slow-write", sys.argv[1]]))
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_the_video_is_written_leaves_no_file(cli_env, tmp_path, signum):
    process = subprocess.Popen([sys.executable, "-c", SLOW_WRITE, str(tmp_path / "video.mp4")], cwd=tmp_path,
                               env=cli_env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".video-*.mp4")):  # the moment ffmpeg has created the temporary file
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.005)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + signum and stderr == "fastdit slow-write: interrupted\n"
    assert list(tmp_path.iterdir()) == []
