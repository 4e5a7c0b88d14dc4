"""fastdit under diffusers' context parallelism (``model.enable_parallelism(config=ContextParallelConfig(...))``).

Under context parallelism every rank holds a slice of the sequence, and ranks only exchange data inside the
attention call. A processor that neither passes diffusers its ``_parallel_config`` nor communicates itself
would make each rank attend its own slice: a silently wrong result. fastdit's processors therefore carry
``_parallel_config`` like diffusers' own (``enable_parallelism`` sets it on them, ``apply`` after
``enable_parallelism`` reads it from the processor it replaces, ``remove`` hands it back) and send every
self-attention call of a context-parallel model here:

- **Ulysses** (``ulysses_degree > 1``, also ``ulysses_anything``): :mod:`fastdit.parallel.ulysses`.
- **Ring** (``ring_degree > 1``, also ``ring_anything``): :mod:`fastdit.parallel.ring`.
- Ring and Ulysses together, and processors whose diffusers counterpart calls SDPA itself (diffusers gives
  those models no context parallelism), raise an error that names the combination.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["parallel_config", "parallel_attention", "hand_back", "user_backend"]


def parallel_config(processor: Any) -> Any:
    """The diffusers ``ParallelConfig`` ``processor`` runs under when it splits the sequence over more than one
    rank (its own, else the one of the stock processor it replaced), ``None`` otherwise."""
    config = getattr(processor, "_parallel_config", None) or getattr(processor.original, "_parallel_config", None)
    cp = getattr(config, "context_parallel_config", None)
    if cp is None or (cp.ring_degree or 1) * (cp.ulysses_degree or 1) <= 1:
        return None
    return config


def user_backend(processor: Any) -> Any:
    """The diffusers attention backend the user set for dense attention (on ``processor``, or on the stock
    processor it replaced; ``None``: diffusers' active one)."""
    return processor._attention_backend or getattr(processor.original, "_attention_backend", None)


def parallel_attention(processor: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       attn_mask: torch.Tensor | None, text_tokens: int | None, text_position: str, dispatch: bool,
                       config: Any) -> torch.Tensor:
    """``processor``'s self-attention of this rank's shard ``q, k, v [B, H, S_local, D]`` under ``config``."""
    cp = config.context_parallel_config
    family = f"{type(processor).__name__} ({processor.model_name} layer {processor.layer})"
    if not dispatch:
        raise ValueError(f"fastdit: {family} runs under context parallelism, but diffusers' own processor for "
                         "this model calls SDPA directly and takes no part in it (each rank would attend only "
                         "its own tokens); run this model without enable_parallelism")
    if processor.engine.observer is not None:
        raise ValueError(f"fastdit: {family}: calibration measures every head over every query of a call in one "
                         "process; calibrate without context parallelism, then apply the result under it")
    if cp.ring_degree > 1 and cp.ulysses_degree > 1:
        raise ValueError(f"fastdit: {family}: ring_degree={cp.ring_degree} together with "
                         f"ulysses_degree={cp.ulysses_degree} (unified sequence parallelism) is not supported; "
                         "use ring or Ulysses alone")
    if cp.ulysses_degree > 1:
        from .ulysses import ulysses_attention

        return ulysses_attention(processor, q, k, v, attn_mask, text_tokens, text_position, config)
    from .ring import ring_attention

    return ring_attention(processor, q, k, v, attn_mask, text_tokens, text_position, config)


def hand_back(current: Any, original: Any) -> None:
    """Before ``remove`` re-installs ``original`` in place of fastdit's ``current`` processor: give it the
    parallel config and attention backend diffusers set on ``current`` while it was installed
    (``enable_parallelism`` after ``apply``), so the model is left as diffusers would have it."""
    for name in ("_parallel_config", "_attention_backend"):
        value = current.__dict__.get(name)
        if value is not None and hasattr(original, name):
            setattr(original, name, value)
