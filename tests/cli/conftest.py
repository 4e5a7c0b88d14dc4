"""Run ``python -m fastdit`` as a user would: a subprocess, offline, in a scratch folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture
def small() -> list[str]:
    """The bundled model at a size that runs in seconds and still runs sparse: 5 frames of 64x64 are a 2x8x8
    token grid (patch 1x1x1), 8 blocks of 16 tokens; no dense warm-up step, so the method runs every step."""
    return ["--frames", "5", "--height", "64", "--width", "64", "--steps", "2", "--block-size", "16",
            "--dense-steps", "0"]


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory) -> dict[str, str]:
    """Offline, with an empty Hugging Face cache, whatever the machine has; one compute thread per process,
    since several run at once and OpenMP threads that wait on each other on a busy machine spin for seconds."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path_factory.mktemp("hf-home")),
            "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


@pytest.fixture
def fastdit_cli(tmp_path: Path, cli_env: dict[str, str]):
    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "fastdit", *args], cwd=tmp_path, env=cli_env, text=True,
                              capture_output=True, timeout=timeout)

    return run
