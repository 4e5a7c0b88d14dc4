"""The web demo as its tests drive it: started as a server on a free port, and called with a full request."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

STARTUP_S = 180  # loading the bundled model and building the page on a busy 2-core CI runner


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(port: int, env: dict[str, str], *args: str, log: Path | None = None) -> subprocess.Popen:
    """``python -m fastdit.app`` on ``port`` (``args``: more of its arguments), returned once it listens; fails
    the test with the app's output if it exits first, or if it does not listen within ``STARTUP_S``. Its output
    goes to ``log`` when given (read while it runs), else to a pipe."""
    out = subprocess.PIPE if log is None else log.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "fastdit.app", "--port", str(port), *args],
                            env={**env, "PYTHONUNBUFFERED": "1"}, stdout=out, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + STARTUP_S
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the app exited early:\n{proc.stdout.read() if log is None else log.read_text()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.5)
    proc.kill()
    pytest.fail(f"the app did not start listening within {STARTUP_S} s")


FRAMES_INPUT = 11  # where the frame count sits among the /generate endpoint's inputs


def demo_request(seed: int | str, method: str = "grat", frames: int = 9, size: int = 128, steps: int = 3) -> list:
    """The ``/generate`` endpoint's inputs, in the order of the page's controls (the seed is the text field's)."""
    # prompt, negative, method, decay, thresholds, vmoba threshold, grat mode, grat radius, svg2 top-p, sol tau,
    # entropy, frames, height, width, steps, seed, image (image-to-video models only)
    return ["a red ball", "", method, 0.2, "0.4,0.5,0.6,0.8", 0.25, "crisscross", 1, 0.9, 1.0, False, frames, size,
            size, steps, str(seed), None]
