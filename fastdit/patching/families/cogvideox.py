"""CogVideoX 1.0 and 1.5 (``CogVideoXTransformer3DModel``), and the models with its blocks and processor:
ConsisID (``ConsisIDTransformer3DModel``) and the image model CogView3-Plus (``CogView3PlusTransformer2DModel``,
``hidden_states [B, C, H, W]``, one frame); joint attention, ``[text ; video]``.

The text (``max_text_seq_length`` tokens, not masked) comes first; the processor returns
``(video, text)``. The latent is ``[B, F, C, H, W]`` (frames before channels) and 1.5 also patchifies time
(``patch_size_t = 2``), so the grid is ``(F / patch_size_t, H / patch_size, W / patch_size)`` in
frame-major order. RoPE, when the model uses it, covers the video part only.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import Module

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import (Family, Rotary, SparseProcessorMixin, attention_in_blocks, forward_input,
                                            heads_first, heads_merged, latent_grid, qk_norm, qkv_projections)


class CogVideoXSparseProcessor(SparseProcessorMixin):
    """Replaces ``CogVideoXAttnProcessor2_0`` on ``transformer_blocks.N.attn1``."""

    def __call__(self, attn: Module, hidden_states: Tensor, encoder_hidden_states: Tensor,
                 attention_mask: Tensor | None = None, image_rotary_emb: Rotary | None = None) -> tuple[Tensor, Tensor]:
        from diffusers.models.embeddings import apply_rotary_emb

        text = encoder_hidden_states.size(1)
        hidden_states = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        batch_size, sequence_length, _ = hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        query, key, value = (heads_first(x, attn.heads) for x in qkv_projections(attn, hidden_states))
        query, key = qk_norm(attn, query, key)
        if image_rotary_emb is not None:
            query[:, :, text:] = apply_rotary_emb(query[:, :, text:], image_rotary_emb)
            if not attn.is_cross_attention:
                key[:, :, text:] = apply_rotary_emb(key[:, :, text:], image_rotary_emb)

        out = self.attend(query, key, value, attn_mask=attention_mask, text_tokens=text, text_position="before")
        out = attn.to_out[1](attn.to_out[0](heads_merged(out)))
        text_out, out = out.split([text, out.size(1) - text], dim=1)
        return out, text_out


_self_attention = attention_in_blocks("attn1", "transformer_blocks")


def _grid(model, args, kwargs) -> TokenGrid | None:
    config = model.config
    patch = (getattr(config, "patch_size_t", None) or 1, config.patch_size, config.patch_size)
    return latent_grid(forward_input(model, args, kwargs, "hidden_states"), patch, frames_dim=1)


def _family(name: str, model_class: str, models: str,
            grid_rule: str = "`hidden_states [B,F,C,H,W]` ÷ patch") -> Family:
    return Family(name=name, model_classes=(model_class,), self_attention=_self_attention, grid=_grid,
                  processor=CogVideoXSparseProcessor, stock_processors=("CogVideoXAttnProcessor2_0",), models=models,
                  sparsified="`transformer_blocks.N.attn1` (joint, text first)", grid_rule=grid_rule)


COGVIDEOX = _family("cogvideox", "CogVideoXTransformer3DModel", "CogVideoX 1.0; 1.5 with `patch_size_t=2`")
CONSISID = _family("consisid", "ConsisIDTransformer3DModel", "ConsisID, CogVideoX blocks")
COGVIEW3PLUS = _family("cogview3plus", "CogView3PlusTransformer2DModel", "CogView3-Plus, CogVideoX blocks",
                       grid_rule="`hidden_states [B,C,H,W]` ÷ patch")
