"""Stable Diffusion 3 / 3.5 (``SD3Transformer2DModel``): joint attention, ``[image ; text]``.

``transformer_blocks.N.attn`` is the MM-DiT joint attention (text appended after the image, no mask); the
"dual attention" blocks of SD3.5 add ``attn2``, an image-only self-attention, which is sparsified too (same
layer index as its block). The grid is the latent ``[B, C, H, W]`` divided by ``config.patch_size``; the
model has no RoPE (absolute positions are added at patchify).
"""

from __future__ import annotations

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, forward_input, latent_grid
from fastdit.patching.families.joint import JointSparseProcessor


class SD3SparseProcessor(JointSparseProcessor):
    """Replaces ``JointAttnProcessor2_0`` on ``attn`` (joint, text after the image) and ``attn2`` (image only)."""


def _self_attention(model):
    for i, block in enumerate(model.transformer_blocks):
        yield i, block.attn
        if getattr(block, "attn2", None) is not None:
            yield i, block.attn2


def _grid(model, args, kwargs) -> TokenGrid | None:
    p = model.config.patch_size
    x = forward_input(model, args, kwargs, "hidden_states")
    return latent_grid(x, (1, p, p)) if getattr(x, "ndim", 0) == 4 else None


def _train_tokens(model) -> int:
    """Image tokens at the training resolution: ``config.sample_size`` is the latent side it was trained at."""
    side = model.config.sample_size // model.config.patch_size
    return side * side


SD3 = Family(
    name="sd3",
    model_classes=("SD3Transformer2DModel",),
    self_attention=_self_attention,
    grid=_grid,
    processor=SD3SparseProcessor,
    stock_processors=("JointAttnProcessor2_0",),
    train_tokens=_train_tokens,
    models="SD3, SD3.5 incl. dual-attention `attn2`",
    sparsified="`transformer_blocks.N.attn` (joint, text after) and `attn2`",
    grid_rule="`hidden_states [B,C,H,W]` ÷ patch",
)
