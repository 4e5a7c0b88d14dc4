"""AnyFlow (``AnyFlowTransformer3DModel``): bidirectional flow-map video model on Wan's blocks; video
self-attention in ``blocks.N.attn1``. AnyFlow-FAR (``AnyFlowFARTransformer3DModel``): its chunk-wise
autoregressive sibling, same blocks.

The latent arrives frames first, ``[B, F, C, H, W]`` (per-frame latents, with a timestep per frame), and is
patchified by ``config.patch_size``; ``AnyFlowAttnProcessor`` calls ``dispatch_attention_fn``, so fastdit takes
the call there (the generic path). Text enters through ``attn2``, left untouched.

AnyFlow-FAR's ``AnyFlowCausalAttnProcessor`` accepts only the flex backend, so fastdit keeps it (the family's
``keeps_backend``) and takes its calls through the wrapped ``dispatch_attention_fn`` as side keys
(:class:`~fastdit.patching.families.base.SideKeys`). An autoregressive step (a ``kv_cache``, not a cache-writing
pass) runs one chunk: its queries, zero-padded to a multiple of 128 tokens, attend with no mask the keys
``[KV cache | the chunk | zero keys]`` (the cache's compressed tokens, on the coarser ``compressed_patch_size``
grid, then its full-resolution ones; as many zero keys as the queries' padding). fastdit runs the chunk over
itself sparse, on the chunk's grid, and the cache and zero keys dense, merged by their log-sum-exp. The
cache-writing and training passes attend chunk-causally over the whole sequence through the model's
``BlockMask``: fastdit reads no grid for them, and they run as the model sends them.
"""

from __future__ import annotations

import math

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, SideKeys, attention_in_blocks, forward_input, latent_grid


_self_attention = attention_in_blocks("attn1", "blocks")


def _grid(model, args, kwargs) -> TokenGrid | None:
    x = forward_input(model, args, kwargs, "hidden_states")
    return latent_grid(x, tuple(model.config.patch_size), frames_dim=1) if getattr(x, "ndim", 0) == 5 else None


ANYFLOW = Family(
    name="anyflow",
    model_classes=("AnyFlowTransformer3DModel",),
    self_attention=_self_attention,
    grid=_grid,
    processor=None,  # AnyFlowAttnProcessor dispatches: the generic path
    stock_processors=("AnyFlowAttnProcessor",),
    models="AnyFlow, bidirectional",
    sparsified="`blocks.N.attn1`",
    untouched="`attn2`",
    grid_rule="`hidden_states [B,F,C,H,W]` ÷ `config.patch_size`",
)


def _chunk_grid(model, args, kwargs) -> TokenGrid | None:
    """The grid of the chunk an autoregressive step denoises (``hidden_states`` holds that chunk only); ``None``
    for a cache-writing or training pass, whose attention is chunk-causal over the whole sequence."""
    flag = forward_input(model, args, kwargs, "kv_cache_flag")
    if forward_input(model, args, kwargs, "kv_cache") is None or not isinstance(flag, dict) \
            or flag.get("is_cache_step"):
        return None
    return _grid(model, args, kwargs)


def _cache_keys(grid: TokenGrid, queries: int, keys: int) -> SideKeys | None:
    """An autoregressive step's self-attention: the chunk's queries padded to a multiple of 128 tokens, over
    ``[KV cache | chunk | zero keys, as many as the queries' padding]`` (``AnyFlowCausalAttnProcessor``), every
    query over every key."""
    video = grid.video_tokens
    packed = math.ceil(video / 128) * 128
    cache = keys - packed
    if queries != packed or cache < 0:
        return None
    return SideKeys(video, rows=slice(0, video), keys=(slice(0, cache), slice(cache + video, keys)),
                    video_keys=cache)


ANYFLOW_FAR = Family(
    name="anyflow_far",
    model_classes=("AnyFlowFARTransformer3DModel",),
    self_attention=_self_attention,
    grid=_chunk_grid,
    processor=None,  # AnyFlowCausalAttnProcessor dispatches to flex: the generic path, its steps as side keys
    stock_processors=("AnyFlowCausalAttnProcessor",),
    side_keys=_cache_keys,
    keeps_backend=True,
    grid_inputs=("hidden_states", "kv_cache", "kv_cache_flag"),
    models="AnyFlow-FAR, chunk-wise autoregressive over a KV cache",
    sparsified="`blocks.N.attn1` in autoregressive steps (the chunk over itself; KV cache dense)",
    untouched="`attn2`; cache-writing and training passes (chunk-causal `BlockMask`)",
    grid_rule="the chunk's `hidden_states [B,F,C,H,W]` ÷ `config.patch_size`",
)
