"""Allegro (``AllegroTransformer3DModel``): full 3-D self-attention over the video, no text in it.

``transformer_blocks.N.attn1`` attends over every video token with Allegro's 3-D RoPE
(``image_rotary_emb``, from the pipeline); ``attn2`` is cross-attention to the prompt (untouched).
``AllegroAttnProcessor2_0`` is the legacy ``AttnProcessor2_0`` plus that RoPE on q and k, calling SDPA itself,
so :class:`AllegroSparseProcessor` is fastdit's ``AttnProcessor2_0`` replacement with the same rotation. The grid
is ``hidden_states [B, C, F, H, W]`` ÷ ``(patch_size_t, patch_size, patch_size)``, frame-major as the model
flattens it.
"""

from __future__ import annotations

import functools

from torch import Tensor
from torch.nn import Module

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.attn_processor import AttnSparseProcessor
from fastdit.patching.families.base import Family, attention_in_blocks, forward_input, latent_grid


class AllegroSparseProcessor(AttnSparseProcessor):
    """Replaces ``AllegroAttnProcessor2_0`` on ``attn1``: fastdit's ``AttnProcessor2_0`` with Allegro's RoPE."""

    def __call__(self, attn: Module, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, temb: Tensor | None = None,
                 image_rotary_emb: tuple | None = None) -> Tensor:
        from diffusers.models.embeddings import apply_rotary_emb_allegro

        if encoder_hidden_states is not None:  # only self-attention is ours
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, image_rotary_emb)
        rotate = None if image_rotary_emb is None else functools.partial(
            apply_rotary_emb_allegro, freqs_cis=image_rotary_emb[0], positions=image_rotary_emb[1])
        return self.self_attention(attn, hidden_states, attention_mask, temb, rotate)


def _grid(model: Module, args: tuple, kwargs: dict) -> TokenGrid | None:
    config = model.config
    patch = (config.patch_size_t, config.patch_size, config.patch_size)
    return latent_grid(forward_input(model, args, kwargs, "hidden_states"), patch)


ALLEGRO = Family(
    name="allegro",
    model_classes=("AllegroTransformer3DModel",),
    self_attention=attention_in_blocks("attn1", "transformer_blocks"),
    grid=_grid,
    processor=AllegroSparseProcessor,
    stock_processors=("AllegroAttnProcessor2_0",),
    models="Allegro",
    sparsified="`transformer_blocks.N.attn1` (video only, 3-D RoPE)",
    untouched="`attn2`",
    grid_rule="`hidden_states [B,C,F,H,W]` ÷ patch",
)
