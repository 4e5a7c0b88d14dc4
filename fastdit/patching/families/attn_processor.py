"""fastdit's replacement for diffusers' legacy ``AttnProcessor2_0``, which calls SDPA itself.

The legacy ``Attention`` module of ``BasicTransformerBlock`` (UNets, PixArt, DiT, Latte, ``Transformer2DModel``)
runs ``AttnProcessor2_0``; Allegro's ``AllegroAttnProcessor2_0`` is the same with its 3-D RoPE applied to q and
k (its family passes that as ``rotate``). :class:`AttnSparseProcessor` is that processor with the SDPA call
going through the engine, for self-attention only: a call with ``encoder_hidden_states`` (cross-attention, or a
block that routes the prompt through a module fastdit patched) runs the stock processor. Families whose
self-attention runs over another grid than the model input's (a UNet level, one frame of a video) override
:meth:`~fastdit.patching.families.base.SparseProcessorMixin.call_grid`.
"""

from __future__ import annotations

from typing import Callable, Iterator

from torch import Tensor
from torch.nn import Module

from fastdit.patching.families.base import (SparseProcessorMixin, heads_first, heads_merged, qk_norm,
                                            qkv_projections)

__all__ = ["AttnSparseProcessor", "self_attention_in_blocks"]


class AttnSparseProcessor(SparseProcessorMixin):
    """Replaces ``AttnProcessor2_0`` on a self-attention module (``attn1``, or ``attn2`` of a block built with
    ``double_self_attention``)."""

    def __call__(self, attn: Module, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, temb: Tensor | None = None) -> Tensor:
        if encoder_hidden_states is not None:  # only self-attention is ours
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        return self.self_attention(attn, hidden_states, attention_mask, temb)

    def self_attention(self, attn: Module, hidden_states: Tensor, attention_mask: Tensor | None,
                       temb: Tensor | None, rotate: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """``AttnProcessor2_0`` without ``encoder_hidden_states``; ``rotate`` (RoPE) is applied to q and k after
        their norms, where Allegro's processor applies it."""
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query, key, value = (heads_first(x, attn.heads) for x in qkv_projections(attn, hidden_states))
        query, key = qk_norm(attn, query, key)
        if rotate is not None:
            query, key = rotate(query), rotate(key)

        out = self.attend(query, key, value, attn_mask=attention_mask)
        out = attn.to_out[1](attn.to_out[0](heads_merged(out).to(query.dtype)))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def self_attention_in_blocks(model: Module) -> Iterator[tuple[int, Module]]:
    """``(i, module)`` for the ``attn1``/``attn2`` of ``model.transformer_blocks[i]`` that are self-attention
    (``is_cross_attention`` false): ``attn1`` unless the block is built ``only_cross_attention``, ``attn2`` when
    it is built ``double_self_attention``."""
    for i, block in enumerate(model.transformer_blocks):
        for name in ("attn1", "attn2"):
            module = getattr(block, name, None)
            if module is not None and not module.is_cross_attention:
                yield i, module
