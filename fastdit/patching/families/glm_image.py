"""GLM-Image (``GlmImageTransformer2DModel``): CogView4-style joint attention, ``[text ; image]``, in
``transformer_blocks.N.attn1``.

``GlmImageAttnProcessor`` joins the glyph text before the image, applies RoPE to the image part and calls
``dispatch_attention_fn``: fastdit takes the call there (the generic path), with the text first; its length is
``encoder_hidden_states``'. The image grid is ``hidden_states [B, C, H, W]`` after the ``patch_size`` patchify.
A call that reads the KV cache of its condition images (image editing) has more keys than queries and runs on
the user's backend; the call that writes that cache is an ordinary self-attention over the condition image.
"""

from __future__ import annotations

import torch

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, attention_in_blocks, forward_input, latent_grid


def _grid(model, args, kwargs) -> TokenGrid | None:
    p = model.config.patch_size
    grid = latent_grid(forward_input(model, args, kwargs, "hidden_states"), (1, p, p))
    text = forward_input(model, args, kwargs, "encoder_hidden_states")
    if grid is None or not isinstance(text, torch.Tensor):
        return None
    return TokenGrid(1, grid.h, grid.w, text_tokens=text.shape[1], text_position="before")


GLM_IMAGE = Family(
    name="glm_image",
    model_classes=("GlmImageTransformer2DModel",),
    self_attention=attention_in_blocks("attn1", "transformer_blocks"),
    grid=_grid,
    processor=None,  # GlmImageAttnProcessor dispatches: the generic path
    stock_processors=("GlmImageAttnProcessor",),
    grid_inputs=("hidden_states", "encoder_hidden_states"),
    text_position="before",
    models="GLM-Image; calls that read the condition images' KV cache run dense",
    sparsified="`transformer_blocks.N.attn1` (joint, text first)",
    grid_rule="`hidden_states [B,C,H,W]` ÷ `config.patch_size`; text length from `encoder_hidden_states`",
)
