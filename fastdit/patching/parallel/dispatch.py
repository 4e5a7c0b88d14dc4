"""fastdit under diffusers' context parallelism (``model.enable_parallelism(config=ContextParallelConfig(...))``).

Under context parallelism every rank holds a slice of the sequence, and ranks only exchange data inside the
attention call. A processor that neither passes diffusers its ``_parallel_config`` nor communicates itself
would make each rank attend its own slice: a silently wrong result. fastdit's processors therefore carry
``_parallel_config`` like diffusers' own (``enable_parallelism`` sets it on them, ``apply`` after
``enable_parallelism`` reads it from the processor it replaces, ``remove`` hands it back) and send every
self-attention call of a context-parallel model here:

- **Ulysses** (``ulysses_degree > 1``, also ``ulysses_anything``): :mod:`fastdit.patching.parallel.ulysses`.
- **Ring** (``ring_degree > 1``, also ``ring_anything``): :mod:`fastdit.patching.parallel.ring`.
- Ring and Ulysses together, and processors whose diffusers counterpart calls SDPA itself (diffusers gives
  those models no context parallelism), raise an error that names the combination.
"""

from __future__ import annotations

from typing import Any

import torch

from fastdit.patching.parallel.ring import ring_attention
from fastdit.patching.parallel.ulysses import ulysses_attention

__all__ = ["parallel_attention"]


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
    grid = getattr(processor, "grid", None)
    if text_position == "around" and grid is not None and grid.text_before == grid.text_tokens:
        text_position = "before"  # a family that may put tokens after the video (references) has none this call
    if text_position == "around":
        raise ValueError(f"fastdit: {family}: this model puts non-video tokens on both sides of the video, which "
                         "fastdit's context parallelism doesn't map yet; run it without enable_parallelism")
    if cp.ring_degree > 1 and cp.ulysses_degree > 1:
        raise ValueError(f"fastdit: {family}: ring_degree={cp.ring_degree} together with "
                         f"ulysses_degree={cp.ulysses_degree} (unified sequence parallelism) is not supported; "
                         "use ring or Ulysses alone")
    if cp.ulysses_degree > 1:
        return ulysses_attention(processor, q, k, v, attn_mask, text_tokens, text_position, config)
    return ring_attention(processor, q, k, v, attn_mask, text_tokens, text_position, config)
