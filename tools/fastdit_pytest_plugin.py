"""pytest plugin: fastdit patches every diffusers model a test session constructs.

Loaded by ``tools/diffusers_suite.py`` with ``-p fastdit_pytest_plugin`` into diffusers' own test suites.
``FASTDIT_SUITE_MODE`` says what to apply: ``unpatched`` (nothing: the baseline), ``dense`` (``method="dense"``,
which must be exactly the stock processors) or ``sparse`` (a layout that drops blocks even at the suites'
tiny input sizes, from the first step and layer). Every model whose class (or a base) belongs to a fastdit
family is patched at the end of its ``__init__``, so models built directly, by ``from_config`` and by
``from_pretrained`` all are. ``FASTDIT_SUITE_STATS`` names a JSON file that receives, per test, how many
self-attention calls ran sparse and dense, which shows the sparse mode really ran sparse.
``FASTDIT_SUITE_CPU_COMPILE=1`` runs diffusers' ``torch.compile`` tests (``TorchCompileTesterMixin``), which
skip without an accelerator, on the CPU as well.
"""

from __future__ import annotations

import functools
import json
import os
import weakref
from typing import Any

# The installed diffusers, imported before a checkout's tests/conftest.py puts its src/ first on sys.path.
import diffusers

import fastdit
from fastdit.patching.families import families

MODE = os.environ.get("FASTDIT_SUITE_MODE", "unpatched")
OPTIONS: dict[str, dict[str, Any]] = {
    "dense": dict(method="dense"),
    # one-group surround keeps each 16-token block of the suites' small grids with its own group only
    "sparse": dict(method="grat", preset=None, block_size=16, dense_steps=0, dense_layers=0, mode="surround",
                   radius=0),
}
if MODE not in ("unpatched", *OPTIONS):
    raise ValueError(f"FASTDIT_SUITE_MODE={MODE!r}; expected unpatched, {', '.join(OPTIONS)}")

CPU_COMPILE = os.environ.get("FASTDIT_SUITE_CPU_COMPILE") == "1"
_ACCELERATOR_SKIP = "test requires a hardware accelerator"

_patched: "weakref.WeakSet[Any]" = weakref.WeakSet()
_calls: dict[str, dict[str, int]] = {}


def _patch_init(cls: type) -> None:
    """Apply fastdit at the end of ``cls.__init__`` (kept signature: diffusers reads it for configs)."""
    original = cls.__init__

    @functools.wraps(original)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if self not in _patched:
            fastdit.apply(self, **OPTIONS[MODE])
            _patched.add(self)

    cls.__init__ = __init__


def pytest_configure(config) -> None:
    if MODE == "unpatched":
        return
    for family in families().values():
        for name in family.model_classes:
            cls = getattr(diffusers, name, None)
            if isinstance(cls, type):
                _patch_init(cls)


def pytest_collection_modifyitems(config, items) -> None:
    """With ``CPU_COMPILE``, drop the accelerator requirement of the ``torch.compile`` test classes."""
    if not CPU_COMPILE:
        return
    for item in items:
        cls = getattr(item, "cls", None)
        if cls is None or "TorchCompileTesterMixin" not in {base.__name__ for base in cls.__mro__}:
            continue
        for node in item.listchain():
            node.own_markers[:] = [mark for mark in node.own_markers
                                   if mark.kwargs.get("reason") != _ACCELERATOR_SKIP]


def pytest_runtest_teardown(item) -> None:
    """Count this test's self-attention calls by what ran (sparse or dense), then forget the models."""
    counts = {"sparse": 0, "dense": 0}
    for model in list(_patched):
        if not fastdit.is_patched(model):
            continue
        for record in fastdit.stats(model).records:
            counts["dense" if record.dense else "sparse"] += record.calls
        fastdit.remove(model)
    _patched.clear()
    if any(counts.values()):
        _calls[item.nodeid] = counts


def pytest_sessionfinish(session) -> None:
    path = os.environ.get("FASTDIT_SUITE_STATS")
    if path:
        with open(path, "w") as f:
            json.dump(_calls, f)
