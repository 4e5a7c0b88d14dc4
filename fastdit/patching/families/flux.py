"""Flux.1 (``FluxTransformer2DModel``): joint attention, ``[text ; image]``, RoPE over the whole sequence.

Double-stream blocks (``transformer_blocks.N.attn``) get the text as ``encoder_hidden_states``; single-stream
blocks (``single_transformer_blocks.N.attn``) get text and image already concatenated and can't tell the text
length, so the pre-hook reads it from ``txt_ids`` and stores it in the grid's ``text_tokens``. The image grid
comes from ``img_ids`` (``(0, row, col)`` per packed 2×2 latent patch, raster order). An ``attention_mask``
passed through ``joint_attention_kwargs`` reaches the engine like any other key mask. Layers are numbered
double blocks first, then single blocks.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import Module

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import (Family, Rotary, SparseProcessorMixin, added_projections, forward_input,
                                            qkv_projections, split_text)


class FluxSparseProcessor(SparseProcessorMixin):
    """Replaces ``FluxAttnProcessor`` in the double- and single-stream blocks."""

    def __call__(self, attn: Module, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, image_rotary_emb: Rotary | None = None,
                 ) -> Tensor | tuple[Tensor, Tensor]:
        from diffusers.models.embeddings import apply_rotary_emb

        heads = lambda x: x.unflatten(-1, (-1, attn.head_dim))  # noqa: E731
        query, key, value = (heads(x) for x in qkv_projections(attn, hidden_states, fused=True))
        query, key = attn.norm_q(query), attn.norm_k(key)
        joint = attn.added_kv_proj_dim is not None and encoder_hidden_states is not None
        if joint:
            text_q, text_k, text_v = (heads(x) for x in added_projections(attn, encoder_hidden_states, fused=True))
            text_q, text_k = attn.norm_added_q(text_q), attn.norm_added_k(text_k)
            query, key, value = (torch.cat(pair, dim=1) for pair in
                                 ((text_q, query), (text_k, key), (text_v, value)))
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)

        # a single-stream block gets text and image joined: the text length comes from the pre-hook (txt_ids)
        text = encoder_hidden_states.shape[1] if encoder_hidden_states is not None else None
        out = self.attend_bshd(query, key, value, attn_mask=attention_mask, text_tokens=text,
                               text_position="before")
        out = out.flatten(2, 3).to(query.dtype)
        if encoder_hidden_states is None:
            return out
        out, text_out = split_text(out, encoder_hidden_states.shape[1], "before")
        out = attn.to_out[1](attn.to_out[0](out.contiguous()))
        return out, attn.to_add_out(text_out.contiguous())


def _self_attention(model):
    blocks = [*model.transformer_blocks, *model.single_transformer_blocks]
    for i, block in enumerate(blocks):
        yield i, block.attn


def _ids(x) -> torch.Tensor | None:
    if not isinstance(x, torch.Tensor):
        return None
    return x[0] if x.ndim == 3 else x  # 3-D ids are deprecated by diffusers but still accepted


def _grid(model, args, kwargs) -> TokenGrid | None:
    img_ids = _ids(forward_input(model, args, kwargs, "img_ids"))
    txt_ids = _ids(forward_input(model, args, kwargs, "txt_ids"))
    if img_ids is None or img_ids.numel() == 0:
        return None
    rows, cols = (int(img_ids[:, axis].max()) + 1 for axis in (1, 2))
    return TokenGrid(1, rows, cols, text_tokens=0 if txt_ids is None else txt_ids.shape[0], text_position="before")


FLUX = Family(
    name="flux",
    model_classes=("FluxTransformer2DModel",),
    self_attention=_self_attention,
    grid=_grid,
    processor=FluxSparseProcessor,
    stock_processors=("FluxAttnProcessor", "FluxAttnProcessor2_0"),
    grid_inputs=("img_ids", "txt_ids"),
)
