"""Shared test set-up: offline only, deterministic, a clean skip for GPU tests without CUDA, and Triton's CPU
interpreter when there is no GPU."""

from __future__ import annotations

import os

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
