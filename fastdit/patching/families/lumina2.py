"""Lumina-Image 2.0 (``Lumina2Transformer2DModel``): an image-only noise refiner, then joint ``[text ; image]``.

``noise_refiner.N.attn`` attends over the image alone; ``layers.N.attn`` over each sample's valid prompt tokens,
then its image, then padding up to the batch's longest (the model drops padded prompt tokens, so the image starts
at a different offset per sample, and a key mask ``[B, S]`` hides the tail). This processor therefore runs a
padded batch one sample at a time on its valid prefix, text first, and zero-fills the tail, whose outputs the
model never reads; the text length is the call's tokens minus the grid's. The text-only ``context_refiner``
keeps its processor. ``Lumina2AttnProcessor2_0`` calls SDPA itself (grouped-query: key/value heads are
repeated). The grid is the latent ``[B, C, H, W]`` ÷ ``patch_size``. Layers are numbered noise refiner first.
"""

from __future__ import annotations

from torch import Tensor
from torch.nn import Module

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import (Family, SparseProcessorMixin, attention_in_blocks, forward_input,
                                            heads_merged, latent_grid, qk_norm)
from fastdit.patching.families.joint import text_outside_grid


class Lumina2SparseProcessor(SparseProcessorMixin):
    """Replaces ``Lumina2AttnProcessor2_0`` on ``noise_refiner.N.attn`` and ``layers.N.attn``."""

    def __call__(self, attn: Module, hidden_states: Tensor, encoder_hidden_states: Tensor,
                 attention_mask: Tensor | None = None, image_rotary_emb: Tensor | None = None) -> Tensor:
        from diffusers.models.embeddings import apply_rotary_emb

        query = attn.to_q(hidden_states)
        head_dim = query.shape[-1] // attn.heads
        query, key, value = (x.unflatten(2, (-1, head_dim)) for x in
                             (query, attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)))
        dtype = query.dtype
        query, key = qk_norm(attn, query, key)
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, use_real=False)
            key = apply_rotary_emb(key, image_rotary_emb, use_real=False)
        query, key = query.to(dtype), key.to(dtype)
        repeats = attn.heads // key.shape[2]
        query, key, value = (x.transpose(1, 2) for x in
                             (query, key.repeat_interleave(repeats, dim=2), value.repeat_interleave(repeats, dim=2)))
        if attention_mask is None:
            text = text_outside_grid(self, query.shape[2])
            out = self.attend(query, key, value, text_tokens=text, text_position="before")
        else:
            out = query.new_zeros(query.shape)
            for i, valid in enumerate(attention_mask.sum(dim=1).tolist()):
                q, k, v = (x[i:i + 1, :, :valid] for x in (query, key, value))
                text = text_outside_grid(self, valid)
                out[i:i + 1, :, :valid] = self.attend(q, k, v, text_tokens=text, text_position="before")
        out = heads_merged(out).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


def _grid(model, args, kwargs) -> TokenGrid | None:
    p = model.config.patch_size
    x = forward_input(model, args, kwargs, "hidden_states")
    return latent_grid(x, (1, p, p)) if getattr(x, "ndim", 0) == 4 else None


LUMINA2 = Family(
    name="lumina2",
    model_classes=("Lumina2Transformer2DModel",),
    self_attention=attention_in_blocks("attn", "noise_refiner", "layers"),
    grid=_grid,
    processor=Lumina2SparseProcessor,
    stock_processors=("Lumina2AttnProcessor2_0",),
    models="Lumina-Image 2.0",
    sparsified="`noise_refiner.N.attn` (image only) and `layers.N.attn` (joint, each sample's valid text first)",
    untouched="`context_refiner` (text only)",
    grid_rule="`hidden_states [B,C,H,W]` ÷ patch; text: the call's tokens minus the grid's",
)
