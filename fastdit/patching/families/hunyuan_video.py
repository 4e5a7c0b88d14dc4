"""HunyuanVideo (``HunyuanVideoTransformer3DModel``): joint attention, ``[video ; text]``.

Double-stream blocks (``transformer_blocks.N.attn``) project the text with ``add_q/k/v_proj`` and append it
after the video; single-stream blocks (``single_transformer_blocks.N.attn``) receive video and text as two
tensors and concatenate them. Either way the processor sees the text length, and the model's key mask
(``[B, 1, 1, S]`` bool, padded prompt tokens ``False``) goes to the engine, which keeps those keys masked
when it runs sparse. RoPE covers the video part only. The text token refiner
(``context_embedder.token_refiner``) is text-only self-attention and is left alone. Layers are numbered
double blocks first, then single blocks.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import Module

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import (Family, Rotary, SparseProcessorMixin, added_projections, forward_input,
                                            latent_grid, qk_norm, qkv_projections, split_text)


class HunyuanVideoSparseProcessor(SparseProcessorMixin):
    """Replaces ``HunyuanVideoAttnProcessor2_0`` in the double- and single-stream blocks."""

    def __call__(self, attn: Module, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, image_rotary_emb: Rotary | None = None,
                 ) -> tuple[Tensor, Tensor | None]:
        from diffusers.models.embeddings import apply_rotary_emb

        text = 0 if encoder_hidden_states is None else encoder_hidden_states.shape[1]
        single_stream = attn.add_q_proj is None and text > 0
        if single_stream:
            hidden_states = torch.cat([hidden_states, encoder_hidden_states], dim=1)
        query, key, value = (x.unflatten(2, (attn.heads, -1)) for x in qkv_projections(attn, hidden_states))
        query, key = qk_norm(attn, query, key)
        if image_rotary_emb is not None:
            if single_stream:
                query = torch.cat([apply_rotary_emb(query[:, :-text], image_rotary_emb, sequence_dim=1),
                                   query[:, -text:]], dim=1)
                key = torch.cat([apply_rotary_emb(key[:, :-text], image_rotary_emb, sequence_dim=1),
                                 key[:, -text:]], dim=1)
            else:
                query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
                key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        if attn.add_q_proj is not None and text > 0:
            text_q, text_k, text_v = (x.unflatten(2, (attn.heads, -1))
                                      for x in added_projections(attn, encoder_hidden_states))
            text_q, text_k = qk_norm(attn, text_q, text_k, added=True)
            query, key, value = (torch.cat(pair, dim=1) for pair in
                                 ((query, text_q), (key, text_k), (value, text_v)))

        out = self.attend_bshd(query, key, value, attn_mask=attention_mask, text_tokens=text,
                               text_position="after")
        out = out.flatten(2, 3).to(query.dtype)
        if text == 0:
            return out, encoder_hidden_states
        out, text_out = split_text(out, text, "after")
        if getattr(attn, "to_out", None) is not None:
            out = attn.to_out[1](attn.to_out[0](out))
        if getattr(attn, "to_add_out", None) is not None:
            text_out = attn.to_add_out(text_out)
        return out, text_out


def _self_attention(model):
    blocks = [*model.transformer_blocks, *model.single_transformer_blocks]
    for i, block in enumerate(blocks):
        yield i, block.attn


def _grid(model, args, kwargs) -> TokenGrid | None:
    config = model.config
    patch = (config.patch_size_t, config.patch_size, config.patch_size)
    return latent_grid(forward_input(model, args, kwargs, "hidden_states"), patch)


HUNYUAN_VIDEO = Family(
    name="hunyuan_video",
    model_classes=("HunyuanVideoTransformer3DModel",),
    self_attention=_self_attention,
    grid=_grid,
    processor=HunyuanVideoSparseProcessor,
    stock_processors=("HunyuanVideoAttnProcessor2_0",),
)
