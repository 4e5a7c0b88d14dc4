"""Wan 2.1 / 2.2 (``WanTransformer3DModel``): video self-attention in ``blocks.N.attn1``.

Token order is frame-major ``(f, h, w)``; the grid is the latent ``[B, C, F, H, W]`` divided by
``config.patch_size``. Self-attention has no text (text enters through ``attn2``, cross-attention, which is
left untouched, as is the image context of image-to-video models, which also enters through ``attn2``).
Wan 2.2 A14B's two experts (``transformer`` and ``transformer_2``) are both pipeline components, so both are
patched. RoPE is applied inside the processor on interleaved pairs, exactly as ``WanAttnProcessor`` does.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import Module

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import (Family, Rotary, SparseProcessorMixin, forward_input, latent_grid,
                                            qkv_projections)


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's RoPE on interleaved (even, odd) pairs of ``x [B, S, H, D]``."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


class WanSparseProcessor(SparseProcessorMixin):
    """Replaces ``WanAttnProcessor`` on self-attention modules (``attn1``)."""

    def __call__(self, attn: Module, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, rotary_emb: Rotary | None = None) -> Tensor:
        if encoder_hidden_states is not None:  # only self-attention is ours
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        query, key, value = qkv_projections(attn, hidden_states, fused=True)
        query, key = attn.norm_q(query), attn.norm_k(key)
        query, key, value = (x.unflatten(2, (attn.heads, -1)) for x in (query, key, value))  # [B, S, H, D]
        if rotary_emb is not None:
            query, key = _apply_rope(query, *rotary_emb), _apply_rope(key, *rotary_emb)
        out = self.attend_bshd(query, key, value, attn_mask=attention_mask)
        out = out.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


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
    processor=WanSparseProcessor,
    stock_processors=("WanAttnProcessor", "WanAttnProcessor2_0"),
)
