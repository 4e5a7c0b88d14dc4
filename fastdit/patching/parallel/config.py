"""Which context-parallel config a fastdit processor runs under, and handing it (and the attention backend)
back to the stock processor on ``remove``."""

from __future__ import annotations

from typing import Any

__all__ = ["parallel_config", "hand_back"]


def parallel_config(processor: Any) -> Any:
    """The diffusers ``ParallelConfig`` ``processor`` runs under when it splits the sequence over more than one
    rank (its own, else the one of the stock processor it replaced), ``None`` otherwise."""
    config = getattr(processor, "_parallel_config", None) or getattr(processor.original, "_parallel_config", None)
    cp = getattr(config, "context_parallel_config", None)
    if cp is None or (cp.ring_degree or 1) * (cp.ulysses_degree or 1) <= 1:
        return None
    return config


def hand_back(current: Any, original: Any) -> None:
    """Before ``remove`` re-installs ``original`` in place of fastdit's ``current`` processor: give it the
    parallel config and attention backend diffusers set on ``current`` while it was installed
    (``enable_parallelism`` after ``apply``), so the model is left as diffusers would have it."""
    for name in ("_parallel_config", "_attention_backend"):
        value = current.__dict__.get(name)
        if value is not None and hasattr(original, name):
            setattr(original, name, value)
