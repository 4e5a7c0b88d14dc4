"""Shared test set-up: offline only, deterministic, a clean skip for GPU tests without CUDA, and Triton's CPU
interpreter when there is no GPU."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
from typing import Callable

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Without a GPU, Triton kernels can only run in Triton's CPU interpreter, and Triton reads TRITON_INTERPRET as
# it defines each jit function, triton.language's own on its first import (which torch._dynamo triggers), so
# it is set before any test can import triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none present)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """Toy-sized models are all per-op overhead: on a busy two-core machine one torch thread runs them many
    times faster than two threads waking each other (use with ``pytest.mark.usefixtures``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def full_disk(tmp_path):
    """A folder on a 64 KiB tmpfs: a write there runs out of space (ENOSPC) as on a full disk. Mounting needs
    root with CAP_SYS_ADMIN, which CI runners and most containers lack: there this skips, and
    ``file_size_limit`` tests the same failure unprivileged."""
    folder = tmp_path / "full"
    folder.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount") or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("can't mount a size-limited tmpfs here (needs root with CAP_SYS_ADMIN)")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def file_size_limit() -> Callable[[int], Callable[[], None]]:
    """``preexec_fn`` for a subprocess whose files (its children's too) may not grow past ``limit`` bytes: a
    write beyond fails with EFBIG, as on a disk that fills up mid-write, without privileges. Python ignores the
    SIGXFSZ that comes with it; ffmpeg, whose signals ``subprocess`` restores, is stopped by it."""
    def limit(size: int) -> Callable[[], None]:
        return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit
