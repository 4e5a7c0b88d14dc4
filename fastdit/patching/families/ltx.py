"""LTX-Video (``LTXVideoTransformer3DModel``): video self-attention in ``transformer_blocks.N.attn1``.

The latent arrives already packed (``[B, S, C]``); the pipeline passes the token grid as the forward
arguments ``num_frames``, ``height`` and ``width``, which is where the grid is read. Text enters through
``attn2`` (cross-attention with a padding bias), which stays untouched. RoPE is applied on the full width
before the head split, as ``LTXVideoAttnProcessor`` does.
"""

from __future__ import annotations

from torch import Tensor
from torch.nn import Module

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, Rotary, SparseProcessorMixin, forward_input, qkv_projections


class LTXSparseProcessor(SparseProcessorMixin):
    """Replaces ``LTXVideoAttnProcessor`` on self-attention modules (``attn1``)."""

    def __call__(self, attn: Module, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, image_rotary_emb: Rotary | None = None) -> Tensor:
        if encoder_hidden_states is not None:  # only self-attention is ours
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        from diffusers.models.transformers.transformer_ltx import apply_rotary_emb

        batch_size, sequence_length, _ = hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        query, key, value = qkv_projections(attn, hidden_states)
        query, key = attn.norm_q(query), attn.norm_k(key)
        if image_rotary_emb is not None:
            query, key = apply_rotary_emb(query, image_rotary_emb), apply_rotary_emb(key, image_rotary_emb)
        query, key, value = (x.unflatten(2, (attn.heads, -1)) for x in (query, key, value))
        out = self.attend_bshd(query, key, value, attn_mask=attention_mask)
        out = out.flatten(2, 3).to(query.dtype)
        return attn.to_out[1](attn.to_out[0](out))


def _self_attention(model):
    for i, block in enumerate(model.transformer_blocks):
        yield i, block.attn1


def _grid(model, args, kwargs) -> TokenGrid | None:
    sizes = [forward_input(model, args, kwargs, name) for name in ("num_frames", "height", "width")]
    if any(not isinstance(s, int) or s < 1 for s in sizes):
        return None
    return TokenGrid(*sizes)


LTX = Family(
    name="ltx",
    model_classes=("LTXVideoTransformer3DModel",),
    self_attention=_self_attention,
    grid=_grid,
    processor=LTXSparseProcessor,
    stock_processors=("LTXVideoAttnProcessor",),
    grid_inputs=("num_frames", "height", "width"),
)
