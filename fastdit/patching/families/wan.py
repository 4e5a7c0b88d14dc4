"""Wan 2.1 / 2.2 (``WanTransformer3DModel``): video self-attention in ``blocks.N.attn1``.

Token order is frame-major ``(f, h, w)``; the grid is the latent ``[B, C, F, H, W]`` divided by
``config.patch_size``. Self-attention has no text (text enters through ``attn2``, cross-attention, which is
left untouched, as is the image context of image-to-video models, which also enters through ``attn2``).
Wan 2.2 A14B's two experts (``transformer`` and ``transformer_2``) are both pipeline components, so both are
patched. ``WanAttnProcessor`` calls ``dispatch_attention_fn``, so fastdit takes the call there (the generic
path): projections, norms and RoPE stay diffusers' own.
"""

from __future__ import annotations

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, forward_input, latent_grid


def _self_attention(model):
    for i, block in enumerate(model.blocks):
        yield i, block.attn1


def _grid(model, args, kwargs) -> TokenGrid | None:
    x = forward_input(model, args, kwargs, "hidden_states")
    return latent_grid(x, tuple(model.config.patch_size)) if getattr(x, "ndim", 0) == 5 else None


WAN = Family(
    name="wan",
    model_classes=("WanTransformer3DModel",),
    self_attention=_self_attention,
    grid=_grid,
    processor=None,  # WanAttnProcessor dispatches: the generic path
    stock_processors=("WanAttnProcessor", "WanAttnProcessor2_0"),
)
