"""Stable Diffusion 3 / 3.5 (``SD3Transformer2DModel``): joint attention, ``[image ; text]``.

``transformer_blocks.N.attn`` is the MM-DiT joint attention (text appended after the image, no mask); the
"dual attention" blocks of SD3.5 add ``attn2``, an image-only self-attention, which is sparsified too (same
layer index as its block). The grid is the latent ``[B, C, H, W]`` divided by ``config.patch_size``; the
model has no RoPE (absolute positions are added at patchify).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import Module

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import (Family, SparseProcessorMixin, added_projections, forward_input, heads_first,
                                            heads_merged, latent_grid, qk_norm, qkv_projections, split_text)


class SD3SparseProcessor(SparseProcessorMixin):
    """Replaces ``JointAttnProcessor2_0`` on ``attn`` (joint) and ``attn2`` (image only)."""

    def __call__(self, attn: Module, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
        query, key, value = (heads_first(x, attn.heads) for x in qkv_projections(attn, hidden_states))
        query, key = qk_norm(attn, query, key)
        text = 0
        if encoder_hidden_states is not None:
            text_q, text_k, text_v = (heads_first(x, attn.heads)
                                      for x in added_projections(attn, encoder_hidden_states))
            text_q, text_k = qk_norm(attn, text_q, text_k, added=True)
            query, key, value = (torch.cat(pair, dim=2) for pair in
                                 ((query, text_q), (key, text_k), (value, text_v)))
            text = encoder_hidden_states.shape[1]
        out = self.attend(query, key, value, text_tokens=text, text_position="after")
        out = heads_merged(out).to(query.dtype)
        if encoder_hidden_states is not None:
            out, text_out = split_text(out, text, "after")
            if not attn.context_pre_only:
                text_out = attn.to_add_out(text_out)
        out = attn.to_out[1](attn.to_out[0](out))
        return out if encoder_hidden_states is None else (out, text_out)


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
